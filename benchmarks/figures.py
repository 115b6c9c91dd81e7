"""The benchmarks' plots: matplotlib without a display, a figure written and closed, the dress
every plot's axes share, and the colour of each variant.

matplotlib is imported only when a plot is drawn: the reports render their tables without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI: Final = 110

VARIANT_COLORS: Final = {
    "A": "#d62728",
    "B": "#ff7f0e",
    "C": "#1f77b4",
    "D": "#2ca02c",
    "E": "#9467bd",
}
"""One colour per density variant, the same in every plot (plain livekit warm, OpenRTC cool)."""


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend, which draws to files and needs no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def figure(
    path: Path, *, size: tuple[float, float], rows: int = 1, sharex: bool = False
) -> Iterator[tuple[Figure, Any]]:
    """A figure of `rows` axes stacked (the axes alone for one row), written to `path` when
    the block ends without an error, closed either way."""
    plt = pyplot()
    fig, axes = plt.subplots(rows, 1, figsize=size, dpi=DPI, sharex=sharex)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def dress(
    ax: Axes,
    *,
    ylabel: str,
    xlabel: str | None = None,
    title: str | None = None,
    grid: Literal["major", "minor", "both"] = "major",
) -> None:
    """The labels, and a faint grid on the `grid` ticks ("major", "minor" or "both")."""
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.grid(True, which=grid, alpha=0.3)


def threshold(
    ax: Axes,
    y: float,
    *,
    color: str = "grey",
    linestyle: str = "--",
    label: str = "",
    label_x: float | None = None,
) -> None:
    """A horizontal line at `y` (a target, a limit), with `label` written just above it at
    `label_x` when both are given."""
    ax.axhline(y, color=color, linestyle=linestyle, linewidth=1)
    if label and label_x is not None:
        ax.annotate(
            label,
            (label_x, y),
            textcoords="offset points",
            xytext=(2, 4),
            fontsize=8,
            color=color,
        )
