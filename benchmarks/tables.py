"""The benchmarks' tables: figures as text, nearest-rank percentiles, and rows laid out as a
Markdown or a terminal table.

A report builds each row as a list of strings, one per column, and hands the rows to
:func:`markdown` (for a page) or :func:`terminal` (for stdout). A figure that was not
measured stays ``None`` until it is formatted, and shows as the report's `missing` mark.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Final

DASH: Final = "—"
"""What a figure that was not measured shows as, unless the report picks another mark."""


# -- figures as text --------------------------------------------------------------------------


def number(value: float | None, spec: str = "{:.1f}", missing: str = DASH) -> str:
    """`value` formatted with `spec` (a :meth:`str.format` pattern), or `missing` for None."""
    return missing if value is None else spec.format(value)


def duration(seconds: float | None, missing: str = DASH) -> str:
    """Seconds at a precision a reader compares: "1.4 ms", "52 ms", "4321 ms", "12.3 s"."""
    if seconds is None:
        return missing
    ms = seconds * 1000
    if ms >= 10000:
        return f"{seconds:.1f} s"
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def mib(value: float | None, missing: str = DASH) -> str:
    """MiB with three significant figures or so: "0.42 MiB", "21.6 MiB"."""
    if value is None:
        return missing
    return f"{value:.1f} MiB" if abs(value) >= 10 else f"{value:.2f} MiB"


def ratio(value: float | None, reference: float | None, missing: str = DASH) -> str:
    """`value` against `reference`: "12×", "0.45×", "1/30", "0" (`missing` without both)."""
    if value is None or reference is None or reference <= 0:
        return missing
    times = value / reference
    if times >= 10:
        return f"{times:.0f}×"
    if times >= 0.1:
        return f"{times:.2f}×"
    return f"1/{1 / times:.0f}" if times > 0 else "0"


# -- percentiles ------------------------------------------------------------------------------


def percentiles(
    values: Iterable[float], quantiles: Sequence[int] = (50, 99), digits: int | None = None
) -> dict[str, float | None]:
    """``n``, the nearest-rank percentiles ``p50``, ``p99``, ... and ``max`` of `values`, in
    their unit, rounded to `digits` when given; the percentiles are None without values.

    Nearest rank: every figure is one of the values, never an interpolation between two.
    """
    ordered = sorted(values)

    def at(index: int) -> float | None:
        if not ordered:
            return None
        return ordered[index] if digits is None else round(ordered[index], digits)

    summary: dict[str, float | None] = {"n": len(ordered)}
    for q in quantiles:
        if not 0 < q <= 100:
            raise ValueError(f"percentile {q}: use a whole number from 1 to 100")
        summary[f"p{q}"] = at(max(0, math.ceil(q / 100 * len(ordered)) - 1))
    summary["max"] = at(-1)
    return summary


# -- tables -----------------------------------------------------------------------------------


def _aligned(align: str, columns: int) -> str:
    """`align` ("<" left, ">" right, one a column) filled out to `columns` with "<"."""
    if len(align) > columns or set(align) - {"<", ">"}:
        raise ValueError(f"alignment {align!r}: use at most {columns} of '<' and '>'")
    return align.ljust(columns, "<")


def _checked(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[Sequence[str]]:
    checked = list(rows)
    for row in checked:
        if len(row) != len(headers):
            raise ValueError(f"a row of {len(row)} cells under {len(headers)} headers: {row!r}")
    return checked


def markdown(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> list[str]:
    """The lines of a Markdown table: `headers`, then `rows` (each a cell per header).

    `align` has a "<" (left) or ">" (right) per column; columns it leaves out are left
    aligned. A "|" inside a cell is escaped.
    """
    body = _checked(headers, rows)
    rule = ("---:" if a == ">" else "---" for a in _aligned(align, len(headers)))
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return lines


def terminal(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> list[str]:
    """The lines of a table for a terminal: `headers` over a rule, then `rows`, each column as
    wide as its widest text, two spaces apart; `align` as for :func:`markdown`."""
    body = _checked(headers, rows)
    widths = [max([len(h), *(len(row[i]) for row in body)]) for i, h in enumerate(headers)]
    aligns = _aligned(align, len(headers))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            f"{cell:{a}{w}}" for cell, a, w in zip(cells, aligns, widths, strict=True)
        ).rstrip()

    return [line(headers), "  ".join("-" * w for w in widths), *(line(row) for row in body)]
