"""Turning benchmark runs into figures: per-variant summaries, the Markdown page, the plots."""

from __future__ import annotations

import datetime
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from .figures import VARIANT_COLORS, dress, figure, threshold
from .sampling import PSS_FLOOR_MB
from .tables import DASH, duration, markdown, mib, number, ratio, terminal
from .variants import VARIANTS

ADDED_PSS: Final = "added_pss_per_session_mb"
UNRESOLVED: Final = "< resolution"
"""Shown instead of an added PSS per session within the PSS resolution (the JSON keeps it)."""

METRICS: Final = (
    "added_pss_per_session_mb",
    "idle_pss_mb",
    "start_p50_s",
    "start_p95_s",
    "start_p99_s",
    "first_reply_p50_s",
    "first_reply_p95_s",
    "turn_p50_s",
    "turn_p95_s",
    "turn_p99_s",
    "lag_p99_s",
    "lag_all_live_p99_s",
    "cpu_per_turn_s",
    "process_init_p50_s",
    "wall_s",
    "worker_ready_s",
    "turns_per_s",
    "supervisor_idle_pss_mb",
    "supervisor_live_pss_mb",
    # voice mode (benchmarks.voice_report)
    "heard_p50_s",
    "heard_p95_s",
    "heard_p99_s",
    "heard_max_s",
    "heard_detected_p95_s",
    "turns_waited_out",
    "cpu_per_call_s",
    "vad_inference_per_call_s",
    "frames_late",
    "frames_dropped",
)

WORKER_METRICS: Final = (
    "calls",
    "turn_p95_s",
    "lag_p99_s",
    "lag_all_live_p99_s",
    "idle_pss_mb",
    "live_pss_mb",
    "added_pss_per_session_mb",
)
"""Per worker of a supervised variant (E): medians over its good runs."""

ANALYSIS: Final = Path(__file__).with_name("analysis.md")
"""Hand-written reading of the current results, included in the page under "Analysis"."""

HEADLINE_PREFERRED_N: Final = 100


@attrs.frozen(kw_only=True)
class Spread:
    median: float
    low: float
    high: float
    count: int


@attrs.frozen(kw_only=True)
class WorkerCell:
    """One worker of a supervised variant at one N, over the repeats (medians)."""

    index: int
    figures: dict[str, float]

    def get(self, metric: str) -> float | None:
        return self.figures.get(metric)


@attrs.frozen(kw_only=True)
class Cell:
    """One variant at one N, over its repeats."""

    variant: str
    label: str
    name: str
    """The letter and a short name, as tables show it: "A livekit process"."""
    calls: int
    config: str
    statuses: tuple[str, ...]
    notes: tuple[str, ...]
    runs: int
    good_runs: int
    failures: int
    max_live: int
    figures: dict[str, Spread]
    partial: tuple[str, ...] = ()
    """What the runs that did not finish got done, in words."""
    redispatches: int = 0
    """Offers made again after the worker answered "not available" (it reported itself full)."""
    pss_resolution_mb: float | None = None
    """The largest resolution of the added PSS per session over the good runs, in MiB."""
    workers: tuple[WorkerCell, ...] = ()
    """A supervised variant's workers (E); its loop-lag figures are the worst worker's."""

    @property
    def ok(self) -> bool:
        return self.good_runs > 0

    @property
    def pss_unresolved(self) -> bool:
        """Whether the added PSS per session is below the resolution (:func:`below_resolution`)."""
        return below_resolution(self.get(ADDED_PSS), self.pss_resolution_mb)

    def shown(self, metric: str) -> float | None:
        """The median of `metric`, or None where the table shows no figure for it."""
        if metric == ADDED_PSS and self.pss_unresolved:
            return None
        return self.get(metric)

    def get(self, metric: str) -> float | None:
        spread = self.figures.get(metric)
        return spread.median if spread is not None else None


NESTED_METRICS: Final = {
    "lag_p99_s": ("loop_lag", "p99_s"),
    "lag_all_live_p99_s": ("loop_lag_all_live", "p99_s"),
    "process_init_p50_s": ("process_init", "p50_s"),
    "supervisor_idle_pss_mb": ("supervisor", "idle_pss_mb"),
    "supervisor_live_pss_mb": ("supervisor", "live_pss_mb"),
}
"""Figures that sit inside a part of a run's result: (part, key)."""


def _metric(run: dict[str, Any], name: str) -> float | None:
    if name in NESTED_METRICS:
        part, key = NESTED_METRICS[name]
        value = (run.get(part) or {}).get(key)
    else:
        value = run.get(name)
    return float(value) if isinstance(value, int | float) else None


def _worker_cells(good: Sequence[dict[str, Any]]) -> tuple[WorkerCell, ...]:
    """A supervised variant's workers, by index: the median of each figure over `good`."""
    values: dict[int, dict[str, list[float]]] = {}
    for run in good:
        for worker in run.get("workers") or ():
            figures = values.setdefault(int(worker["worker"]), {})
            for name in WORKER_METRICS:
                value = _metric(worker, name)
                if value is not None:
                    figures.setdefault(name, []).append(value)
    return tuple(
        WorkerCell(
            index=index,
            figures={name: statistics.median(found) for name, found in figures.items()},
        )
        for index, figures in sorted(values.items())
    )


def added_pss_resolution(run: dict[str, Any]) -> float | None:
    """The resolution of one run's added PSS per session, in MiB (None without live sessions).

    Runs recorded before the idle samples were kept have only the fixed floor.
    """
    recorded = run.get("added_pss_resolution_mb")
    if isinstance(recorded, int | float):
        return float(recorded)
    live = run.get("max_live_sessions")
    if not isinstance(live, int) or live < 1:
        return None
    total = run.get("pss_resolution_mb")
    return (float(total) if isinstance(total, int | float) else PSS_FLOOR_MB) / live


def below_resolution(value: float | None, resolution: float | None) -> bool:
    """Whether an added PSS per session is too small to tell from the sampler's noise.

    At or below zero counts too: sessions do not free memory the idle worker held, so such
    a figure means the baseline moved by more than the sessions added.
    """
    if value is None:
        return False
    return value <= 0 or (resolution is not None and value < resolution)


def variant_title(key: str, run: dict[str, Any] | None = None) -> str:
    """The letter and the variant's short name ("A livekit process")."""
    name = (run or {}).get("name")
    if not name:
        variant = VARIANTS.get(key)
        name = variant.name if variant is not None else (run or {}).get("label", "")
    return f"{key} {name}" if name else key


def summarize(runs: Sequence[dict[str, Any]]) -> list[Cell]:
    """One cell per (variant, N), in the order the runs were made; medians over good runs."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["variant"], run["calls"]), []).append(run)
    cells = []
    for (variant, calls), group in groups.items():
        good = [r for r in group if r["status"] == "ok"]
        partial = tuple(_partial(r) for r in group if r["status"] not in ("ok", "skipped"))
        figures = {}
        for name in METRICS:
            values = [v for r in good if (v := _metric(r, name)) is not None]
            if values:
                figures[name] = Spread(
                    median=statistics.median(values),
                    low=min(values),
                    high=max(values),
                    count=len(values),
                )
        resolutions = [v for r in good if (v := added_pss_resolution(r)) is not None]
        cells.append(
            Cell(
                variant=variant,
                label=group[0]["label"],
                name=variant_title(variant, group[0]),
                calls=calls,
                config=group[0].get("config", ""),
                statuses=tuple(r["status"] for r in group),
                notes=tuple(dict.fromkeys(r["note"] for r in group if r.get("note"))),
                runs=len([r for r in group if r["status"] != "skipped"]),
                good_runs=len(good),
                failures=sum(int(r.get("failures", 0)) for r in group),
                max_live=min((int(r.get("max_live_sessions", 0)) for r in good), default=0),
                figures=figures,
                partial=partial,
                redispatches=sum(int(r.get("redispatches", 0)) for r in good),
                pss_resolution_mb=max(resolutions, default=None),
                workers=_worker_cells(good),
            )
        )
    return cells


def _partial(run: dict[str, Any]) -> str:
    """A run that stopped early: how far it got (its figures cover only the calls that ran)."""
    parts = [f"{run.get('completed', 0)} of {run['calls']} calls completed"]
    if run.get("start_p50_s") is not None:
        parts.append(f"start latency p50 of the calls that started {duration(run['start_p50_s'])}")
    if run.get("max_live_sessions"):
        parts.append(f"at most {run['max_live_sessions']} sessions live at once")
    lag = (run.get("loop_lag") or {}).get("p99_s")
    if lag is not None:
        parts.append(f"loop lag p99 {duration(lag)}")
    return f"{run['status']} ({run.get('note', '')}): " + ", ".join(parts)


class Table:
    """Lookups over the cells: by variant and N."""

    def __init__(self, cells: Sequence[Cell]) -> None:
        self.cells = list(cells)
        self._by_key = {(c.variant, c.calls): c for c in cells}
        self.variants = list(dict.fromkeys(c.variant for c in cells))
        self.sizes = sorted({c.calls for c in cells})

    def label(self, variant: str) -> str:
        return next((c.label for c in self.cells if c.variant == variant), variant)

    def cell(self, variant: str, calls: int) -> Cell | None:
        return self._by_key.get((variant, calls))

    def at(self, calls: int) -> list[Cell]:
        """The cells at N = `calls`, in the variants' order."""
        return [cell for v in self.variants if (cell := self.cell(v, calls)) is not None]

    def value(self, variant: str, calls: int, metric: str) -> float | None:
        cell = self.cell(variant, calls)
        return cell.get(metric) if cell is not None and cell.ok else None

    def shown(self, variant: str, calls: int, metric: str) -> float | None:
        """The figure as the tables show it: None also where it is below the resolution."""
        cell = self.cell(variant, calls)
        return cell.shown(metric) if cell is not None and cell.ok else None

    def compare_size(self, metric: str, preferred: int | None = None) -> int | None:
        """The N at which a headline sets C beside A on `metric`: `preferred` when both have
        the figure there, else the largest N where both do, else the largest where C does."""
        with_c = [n for n in self.sizes if self.value("C", n, metric) is not None]
        both = [n for n in with_c if self.value("A", n, metric) is not None]
        if preferred in both:
            return preferred
        if both:
            return max(both)
        return max(with_c) if with_c else None


# -- formatting ----------------------------------------------------------------------------


def _cpu(value: float | None) -> str:
    return number(None if value is None else value * 1000, "{:.0f} ms")


def with_spread(cell: Cell, metric: str, fmt: Callable[[float | None], str]) -> str:
    """The median, with the min–max over the repeats when there were several."""
    spread = cell.figures.get(metric)
    if spread is None:
        return DASH
    if spread.count < 2:
        return fmt(spread.median)
    low, high = fmt(spread.low), fmt(spread.high)
    unit = low.rpartition(" ")[2]
    if high.endswith(" " + unit):
        low, high = low.removesuffix(" " + unit), high.removesuffix(" " + unit)
    return f"{fmt(spread.median)} ({low}–{high})"


def added_pss(cell: Cell, *, spread: bool = True) -> str:
    """The added PSS per session; "< resolution (r)" where the run could not resolve it."""
    if cell.pss_unresolved:
        if cell.pss_resolution_mb is None:
            return UNRESOLVED
        return f"{UNRESOLVED} ({mib(cell.pss_resolution_mb)})"
    if spread:
        return with_spread(cell, ADDED_PSS, mib)
    return mib(cell.get(ADDED_PSS))


def cell_status(cell: Cell) -> str:
    if cell.runs == 0:
        return "skipped"
    bad = [s for s in cell.statuses if s not in ("ok", "skipped")]
    if not bad:
        return f"ok ×{cell.good_runs}"
    return f"{cell.good_runs}/{cell.runs} ok; " + ", ".join(dict.fromkeys(bad))


def median_of(metric: str, fmt: Callable[[float | None], str] = duration) -> Callable[[Cell], str]:
    """A column's text for a cell: the median of `metric` over its good runs, as `fmt` puts it."""
    return lambda cell: fmt(cell.get(metric))


def spread_of(metric: str, fmt: Callable[[float | None], str] = duration) -> Callable[[Cell], str]:
    """A column's text for a cell: :func:`with_spread` of `metric`."""
    return lambda cell: with_spread(cell, metric, fmt)


def failed_calls(cell: Cell) -> str:
    """A column's text for a cell: how many of its calls failed."""
    return str(cell.failures)


# -- console ---------------------------------------------------------------------------------

Column = tuple[str, Callable[[Cell], str]]
"""A table's column: its heading, and its text for a cell."""


def console_rows(table: Table, status_width: int, columns: Sequence[Column]) -> list[str]:
    """The terminal's table: a row per variant and N, its name, N and status (cut to
    `status_width`), then `columns`."""
    rows = [
        [cell.name, str(calls), cell_status(cell)[:status_width], *(t(cell) for _, t in columns)]
        for calls in table.sizes
        for cell in table.at(calls)
    ]
    headers = ["variant", "N", "status", *(heading for heading, _ in columns)]
    return terminal(headers, rows, "<><" + ">" * len(columns))


def console_added(cell: Cell) -> str:
    return UNRESOLVED if cell.pss_unresolved else mib(cell.get(ADDED_PSS))


TEXT_CONSOLE_COLUMNS: Final[tuple[Column, ...]] = (
    ("+PSS/session", console_added),
    ("start p50", median_of("start_p50_s")),
    ("start p99", median_of("start_p99_s")),
    ("turn p95", median_of("turn_p95_s")),
    ("lag p99", median_of("lag_p99_s")),
    ("all live", median_of("lag_all_live_p99_s")),
    ("CPU/turn", median_of("cpu_per_turn_s", _cpu)),
    ("fail", failed_calls),
)


def render_console(data: dict[str, Any]) -> str:
    table = Table(summarize(data["runs"]))
    lines = console_rows(table, 17, TEXT_CONSOLE_COLUMNS)
    unresolved = [c for c in table.cells if c.ok and c.pss_unresolved]
    unresolved.sort(key=lambda c: (c.calls, table.variants.index(c.variant)))
    if unresolved:
        lines += ["", f"{UNRESOLVED}: the added PSS per session is within the PSS sampler's noise:"]
        lines += [
            f"  {c.name} N={c.calls}: measured {mib(c.get(ADDED_PSS))}, resolution "
            f"{mib(c.pss_resolution_mb)}"
            for c in unresolved
        ]
    throughput = _throughput_lines(table)
    if throughput:
        lines += ["", "completed turns per second (burst pace: first dispatch to last reply):"]
        lines += [f"  {line}" for line in throughput]
    for cell in table.cells:
        if cell.workers and cell.ok:
            lines += ["", *_worker_lines(cell)]
    noisy = noisy_runs(data["runs"])
    if noisy:
        lines += ["", noisy]
    if data.get("complete") is False:
        lines += ["", interrupted(data)]
    return "\n".join(lines)


def _throughput_lines(table: Table) -> list[str]:
    """Per N: each variant's completed turns per second, and E's against C and A."""
    lines = []
    for calls in table.sizes:
        rates = {v: r for v in table.variants if (r := table.value(v, calls, "turns_per_s"))}
        if not rates:
            continue
        parts = [f"{v} {_rate(rate)}" for v, rate in rates.items()]
        ratios = []
        if "E" in rates:
            ratios = [
                f"E/{ref} {ratio(rates['E'], rates[ref])}" for ref in ("C", "A") if ref in rates
            ]
        lines.append(f"N={calls}: " + ", ".join(parts + ratios))
    return lines


def _worker_texts(worker: WorkerCell) -> tuple[str, ...]:
    """One worker's figures as text: calls, turn p95, lag p99 (whole run, all live), PSS
    idle and live, added PSS per session."""
    calls = worker.get("calls")
    return (
        number(calls, "{:.0f}"),
        duration(worker.get("turn_p95_s")),
        duration(worker.get("lag_p99_s")),
        duration(worker.get("lag_all_live_p99_s")),
        mib(worker.get("idle_pss_mb")),
        mib(worker.get("live_pss_mb")),
        _signed_mib(worker.get("added_pss_per_session_mb")),
    )


def _worker_lines(cell: Cell) -> list[str]:
    """A supervised variant at one N: the supervisor's PSS, then each worker's figures."""
    lines = [
        f"{cell.name} N={cell.calls}, per worker (its loop-lag columns above are the worst "
        f"worker's): supervisor PSS {mib(cell.get('supervisor_idle_pss_mb'))} idle, "
        f"{mib(cell.get('supervisor_live_pss_mb'))} with all calls live"
    ]
    for worker in cell.workers:
        calls, turn, lag, all_live, idle, live, added = _worker_texts(worker)
        lines.append(
            f"  worker {worker.index}: {calls} calls, turn p95 {turn}, lag p99 {lag} "
            f"(all live {all_live}), PSS {idle} idle, {live} live ({added} per session)"
        )
    return lines


def _rate(value: float | None) -> str:
    return number(value, "{:.1f}/s" if value is not None and value < 100 else "{:.0f}/s")


def _signed_mib(value: float | None) -> str:
    return number(value, "{:+.2f} MiB")


NOISY_PSS_MB: Final = 1.0
"""An idle tree whose PSS moves more than this within its 2 s of samples is on a busy machine."""


def noisy_runs(runs: Sequence[dict[str, Any]]) -> str:
    """A warning when idle workers' PSS moved by more than a quiet machine's would."""
    spreads = [
        max(samples) - min(samples) for run in runs if (samples := run.get("idle_pss_samples_mb"))
    ]
    noisy = [spread for spread in spreads if spread > NOISY_PSS_MB]
    if not noisy:
        return ""
    return (
        f"note: in {len(noisy)} of {len(spreads)} run(s) the idle worker's PSS moved by up to "
        f"{max(noisy):.1f} MiB within 2 s: other processes on this machine are probably "
        "mapping the same libraries. Added PSS figures near their resolution are unreliable; "
        "measure memory on a quiet machine."
    )


def interrupted(data: dict[str, Any]) -> str:
    finished = len([r for r in data["runs"] if r.get("status") != "skipped"])
    return (
        f"The sweep did not finish: these are its {finished} finished run(s), written as "
        "each ended; the sizes and repeats it was started with were not all run."
    )


# -- plots -----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Plot:
    name: str
    metric: str
    title: str
    ylabel: str
    scale: float
    log_y: bool
    target: float | None = None
    """A target line to draw, in the plot's units."""
    target_label: str = ""


PLOTS: Final = (
    Plot(
        name="density-memory.png",
        metric="added_pss_per_session_mb",
        title="Added PSS per live session",
        ylabel="MiB per session (log)",
        scale=1.0,
        log_y=True,
        target=1.0,
        target_label="target for C: < 1 MB",
    ),
    Plot(
        name="density-start-latency.png",
        metric="start_p50_s",
        title="Start latency p50 (dispatch → session started)",
        ylabel="seconds (log)",
        scale=1.0,
        log_y=True,
    ),
    Plot(
        name="density-turn-latency.png",
        metric="turn_p95_s",
        title="Turn latency p95 (caller line → reply done)",
        ylabel="seconds (log)",
        scale=1.0,
        log_y=True,
    ),
    Plot(
        name="density-loop-lag.png",
        metric="lag_all_live_p99_s",
        title="Worker event-loop lag p99 while all N calls are live",
        ylabel="milliseconds (log)",
        scale=1000.0,
        log_y=True,
        target=50.0,
        target_label="target for C: < 50 ms",
    ),
)


def write_plots(
    table: Table, img_dir: Path, plots: Sequence[Plot] = PLOTS
) -> list[tuple[Plot, Path]]:
    """One plot per `plots` under `img_dir`: each variant's median over N (log), with the
    min–max of its repeats as error bars."""
    img_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for plot in plots:
        path = img_dir / plot.name
        with figure(path, size=(7, 4.2)) as (_, ax):
            drawn = False
            for variant in table.variants:
                xs, ys, lows, highs = [], [], [], []
                for calls in table.sizes:
                    cell = table.cell(variant, calls)
                    spread = cell.figures.get(plot.metric) if cell is not None and cell.ok else None
                    if spread is None or (plot.log_y and spread.median <= 0):
                        continue
                    if plot.metric == ADDED_PSS and cell is not None and cell.pss_unresolved:
                        continue
                    xs.append(calls)
                    ys.append(spread.median * plot.scale)
                    lows.append((spread.median - spread.low) * plot.scale)
                    highs.append((spread.high - spread.median) * plot.scale)
                if not xs:
                    continue
                ax.errorbar(
                    xs,
                    ys,
                    yerr=[lows, highs],
                    marker="o",
                    capsize=3,
                    label=f"{variant}: {table.label(variant)}",
                    color=VARIANT_COLORS.get(variant),
                )
                drawn = True
            if plot.target is not None:
                threshold(ax, plot.target, label=plot.target_label, label_x=min(table.sizes))
            ax.set_xscale("log")
            if plot.log_y:
                ax.set_yscale("log")
            ax.set_xticks(table.sizes)
            ax.set_xticklabels([str(n) for n in table.sizes])
            dress(
                ax, xlabel="concurrent calls N", ylabel=plot.ylabel, title=plot.title, grid="both"
            )
            if drawn:
                ax.legend(fontsize=8)
        written.append((plot, path))
    return written


# -- Markdown ------------------------------------------------------------------------------


def met(ok: bool) -> str:
    """A target's verdict cell."""
    return "met" if ok else "not met"


def _target_rows(table: Table, headline_n: int | None) -> list[list[str]]:
    rows = []
    largest_c = max((n for n in table.sizes if table.cell("C", n)), default=None)
    if headline_n is not None:
        rows.append(_memory_target(table, headline_n))
        a_start = table.value("A", headline_n, "start_p50_s")
        c_start = table.value("C", headline_n, "start_p50_s")
        a_reply = table.value("A", headline_n, "first_reply_p50_s")
        c_reply = table.value("C", headline_n, "first_reply_p50_s")
        faster = all(
            c is not None and a is not None and c <= a / 5
            for c, a in ((c_start, a_start), (c_reply, a_reply))
        )
        rows.append(
            [
                f"C start latency p50 ≤ 1/5 of A (N={headline_n})",
                f"to the session started: C {duration(c_start)}, A {duration(a_start)} "
                f"({ratio(c_start, a_start)}); to the first reply: C {duration(c_reply)}, "
                f"A {duration(a_reply)} ({ratio(c_reply, a_reply)})",
                met(faster),
            ]
        )
    if largest_c is not None:
        cell = table.cell("C", largest_c)
        assert cell is not None
        base = table.value("C", min(table.sizes), "turn_p95_s")
        turn = table.value("C", largest_c, "turn_p95_s")
        held = cell.ok and cell.failures == 0
        rows.append(
            [
                f"C holds {largest_c} concurrent sessions",
                f"{cell_status(cell)}, {cell.failures} failed calls, {cell.max_live} live at once",
                met(held and cell.max_live == largest_c),
            ]
        )
        rows.append(
            [
                f"C turn p95 at N={largest_c} within 1.5× of N={min(table.sizes)}",
                f"{duration(turn)} vs {duration(base)} ({ratio(turn, base)})",
                met(turn is not None and base is not None and turn <= 1.5 * base),
            ]
        )
        all_live = table.value("C", largest_c, "lag_all_live_p99_s")
        whole = table.value("C", largest_c, "lag_p99_s")
        rows.append(
            [
                f"C loop lag p99 < 50 ms while holding N={largest_c}",
                f"{duration(all_live)} while all {largest_c} are live; {duration(whole)} over "
                "the whole run, start-up burst included",
                met(all_live is not None and all_live < 0.05),
            ]
        )
    return rows + _worker_target_rows(table)


def _worker_target_rows(table: Table) -> list[list[str]]:
    """E's targets at its largest N: turn p95 held, loop lag p99 < 50 ms in every worker."""
    largest = max((n for n in table.sizes if table.value("E", n, "turn_p95_s")), default=None)
    cell = table.cell("E", largest) if largest is not None else None
    if largest is None or cell is None:
        return []
    base = table.value("E", min(table.sizes), "turn_p95_s")
    turn = table.value("E", largest, "turn_p95_s")
    lags = [(w.index, w.get("lag_all_live_p99_s"), w.get("lag_p99_s")) for w in cell.workers]
    each = "; ".join(
        f"worker {index}: {duration(held)} while all {largest} are live, {duration(whole)} "
        "over the run"
        for index, held, whole in lags
    )
    return [
        [
            f"E turn p95 at N={largest} within 1.5× of N={min(table.sizes)}",
            f"{duration(turn)} vs {duration(base)} ({ratio(turn, base)})",
            met(turn is not None and base is not None and turn <= 1.5 * base),
        ],
        [
            f"E loop lag p99 < 50 ms in every worker while holding N={largest}",
            each or "no worker measured",
            met(bool(lags) and all(held is not None and held < 0.05 for _, held, _ in lags)),
        ],
    ]


def _memory_target(table: Table, calls: int) -> list[str]:
    """The memory target's row. C below the resolution is judged by the resolution, an upper
    bound on its figure; A below it cannot be compared with."""
    a_cell, c_cell = table.cell("A", calls), table.cell("C", calls)
    a_mem = table.shown("A", calls, ADDED_PSS)
    c_mem = table.value("C", calls, ADDED_PSS)
    a_text = added_pss(a_cell, spread=False) if a_cell is not None and a_cell.ok else DASH
    c_text = mib(c_mem)
    against = ratio(c_mem, a_mem)
    if c_cell is not None and c_cell.ok and c_cell.pss_unresolved:
        c_mem = c_cell.pss_resolution_mb
        c_text = added_pss(c_cell, spread=False)
        against = f"< {ratio(c_mem, a_mem)}" if c_mem is not None and a_mem is not None else DASH
    return [
        f"C added PSS per session ≤ 1/20 of A and < 1 MB (N={calls})",
        f"C {c_text}, A {a_text} ({against})",
        met(c_mem is not None and a_mem is not None and c_mem <= a_mem / 20 and c_mem < 1.0),
    ]


TARGET_HEADERS: Final = ("target", "measured", "")


HEADLINE_HEADERS: Final = (
    "variant",
    "added PSS / session",
    "vs A",
    "start p50",
    "vs A",
    "start p99",
    "first reply p50",
    "turn p95",
    "loop lag p99 (all live)",
    "CPU / turn",
    "failed calls",
)


def _headline(table: Table, calls: int) -> list[str]:
    """Every variant at N = `calls`, with its memory and start latency against A's."""
    rows = []
    for cell in table.at(calls):
        if not cell.ok:
            rows.append([cell.name, cell_status(cell), *[""] * (len(HEADLINE_HEADERS) - 2)])
            continue
        start = cell.get("start_p50_s")
        rows.append(
            [
                cell.name,
                added_pss(cell, spread=False),
                ratio(cell.shown(ADDED_PSS), table.shown("A", calls, ADDED_PSS)),
                duration(start),
                ratio(start, table.value("A", calls, "start_p50_s")),
                duration(cell.get("start_p99_s")),
                duration(cell.get("first_reply_p50_s")),
                duration(cell.get("turn_p95_s")),
                duration(cell.get("lag_all_live_p99_s")),
                _cpu(cell.get("cpu_per_turn_s")),
                str(cell.failures),
            ]
        )
    return markdown(HEADLINE_HEADERS, rows, "<" + ">" * (len(HEADLINE_HEADERS) - 1))


def per_n_rows(table: Table, calls: int, columns: Sequence[Column]) -> list[str]:
    """A table of every variant at N = `calls`: its name and runs, then `columns` (a dash in
    each for a variant none of whose runs went well)."""
    rows = []
    for cell in table.at(calls):
        if not cell.ok:
            rows.append([cell.name, cell_status(cell), *[DASH] * len(columns)])
            continue
        live = "" if cell.max_live >= calls else f" (max {cell.max_live} live at once)"
        rows.append([cell.name, cell_status(cell) + live, *(text(cell) for _, text in columns)])
    headers = ["variant", "runs", *(heading for heading, _ in columns)]
    return markdown(headers, rows, "<<" + ">" * len(columns))


def cell_notes(cell: Cell) -> list[str]:
    """What the runs of a cell that did not all go well got done, or why they stopped."""
    said = cell.partial or cell.notes
    return [f"- {cell.variant}: {'; '.join(said)}."] if said else []


TEXT_COLUMNS: Final[tuple[Column, ...]] = (
    ("added PSS / session", added_pss),
    ("idle PSS", median_of("idle_pss_mb", mib)),
    ("start p50", spread_of("start_p50_s")),
    ("start p95", median_of("start_p95_s")),
    ("start p99", median_of("start_p99_s")),
    ("first reply p50", median_of("first_reply_p50_s")),
    ("turn p50", median_of("turn_p50_s")),
    ("turn p95", spread_of("turn_p95_s")),
    ("turn p99", median_of("turn_p99_s")),
    ("loop lag p99", spread_of("lag_p99_s")),
    ("loop lag p99 (all live)", spread_of("lag_all_live_p99_s")),
    ("CPU / turn", median_of("cpu_per_turn_s", _cpu)),
    ("failed calls", failed_calls),
)


def _per_n(table: Table, calls: int) -> list[str]:
    notes = []
    for cell in table.at(calls):
        variant = cell.variant
        notes += cell_notes(cell)
        init = cell.get("process_init_p50_s")
        if init is not None:
            notes.append(
                f"- {variant}: its job processes took {duration(init)} (p50) from start to ready "
                '(livekit\'s "process initialized"; it starts min(cores, 4) at a time).'
            )
        if cell.redispatches:
            notes.append(
                f"- {variant}: {cell.redispatches} offers were made again after the worker "
                'answered "not available" (it reported a load of 1.0); their wait is in the '
                "start latency."
            )
    return [f"### N = {calls}", "", *per_n_rows(table, calls, TEXT_COLUMNS), "", *notes]


WIN_MARGIN: Final = 0.95
"""A plain variant "wins" a figure when it is below 95% of C's (smaller gaps are noise)."""


def _where_plain_wins(table: Table) -> list[str]:
    """Every N and metric at which plain livekit (A or B) beat OpenRTC's coroutine pool (C)."""
    checks = (
        ("added_pss_per_session_mb", "added PSS per session", mib),
        ("start_p50_s", "start latency p50", duration),
        ("turn_p95_s", "turn latency p95", duration),
        ("cpu_per_turn_s", "CPU per turn", _cpu),
    )
    found = []
    for calls in table.sizes:
        for metric, name, fmt in checks:
            c = table.shown("C", calls, metric)
            if c is None:
                continue
            for variant in ("A", "B"):
                value = table.shown(variant, calls, metric)
                if value is not None and value < WIN_MARGIN * c:
                    found.append(
                        f"- N={calls}: {variant} has lower {name} than C "
                        f"({fmt(value)} against {fmt(c)})."
                    )
    return found


def hand_written(path: Path) -> str:
    """The hand-written reading in `path` to include in a page ("" without the file), less
    the note to its editors (an HTML comment at its top, which stays in the source file)."""
    text = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    if text.startswith("<!--"):
        text = text.split("-->", 1)[1].strip()
    return text


def image_lines(images: Sequence[tuple[Plot, Path]], page: Path) -> list[str]:
    """Markdown lines showing each plot, by its path relative to the page."""
    lines = []
    for plot, path in images:
        lines += [f"![{plot.title}]({path.relative_to(page.parent).as_posix()})", ""]
    return lines


def noisy_bullet(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The :func:`noisy_runs` warning as a bullet of a page's method list, if there is one."""
    noisy = noisy_runs(runs)
    return [f"- {noisy[0].upper()}{noisy[1:]}"] if noisy else []


def _resolution_method(runs: Sequence[dict[str, Any]]) -> str:
    """How the resolution of the added PSS was set, for the runs at hand."""
    floor = f"{PSS_FLOOR_MB:g} MiB, what the sampler resolves on a quiet machine"
    if any("idle_pss_samples_mb" in run for run in runs):
        how = (
            "the idle PSS is the median of five samples taken 0.5 s apart just before the "
            "calls, and the resolution is what the tree's PSS moves by with nothing "
            "happening in it: twice the spread of those samples (the idle and the live "
            "reading both carry it), or the largest step between consecutive samples while "
            f"the most sessions were live if that is larger, at least {floor}; ÷ the number "
            "of sessions"
        )
    else:
        how = (
            "these runs predate the recording of the idle samples' spread, so the "
            f"resolution is the fixed floor ({floor}) ÷ the number of sessions"
        )
    return (
        f'A figure below its resolution is shown as "{UNRESOLVED} (r)": {how}. A figure at '
        "or below zero is shown the same way. The JSON keeps every raw figure."
    )


def _pace(settings: dict[str, Any]) -> str:
    low, high = settings.get("pause_s") or (0.0, 0.0)
    if high <= 0:
        return (
            "burst: each caller says its next line the moment the previous reply is done, so "
            "all N calls talk in lockstep. This measures throughput under a thundering herd, "
            "not a worker holding N calls."
        )
    return (
        f"human: before each line the caller waits a random {low:g} to {high:g} s "
        "(listening to the reply, which takes about 6 s to speak, thinking, saying its "
        "line), so turns drift apart as on real calls. `--pace burst` runs the lockstep "
        "stress test instead. Turn latencies never include the wait."
    )


def _repeats(settings: dict[str, Any]) -> str:
    repeats = settings["repeats"]
    large = settings.get("large_repeats", repeats)
    large_n = settings.get("large_n")
    if large == repeats or large_n is None:
        return f"{repeats} run(s) per variant and N"
    return f"{repeats} runs per variant and N below {large_n}, {large} from {large_n} on"


def render_markdown(data: dict[str, Any], images: Sequence[tuple[Plot, Path]], out: Path) -> str:
    table = Table(summarize(data["runs"]))
    machine = data["machine"]
    settings = data["settings"]
    workload = data["workload"]
    headline_n = table.compare_size("start_p50_s", HEADLINE_PREFERRED_N)
    when = datetime.datetime.fromtimestamp(data["started_at"], tz=datetime.UTC)
    lines = [
        "# Benchmarks: session density",
        "",
        "<!-- Generated by `python -m benchmarks.density --out docs/benchmarks.md`; edit "
        "benchmarks/report.py, not this file. -->",
        "",
        "The same simulated calls driven through each variant's worker, N calls dispatched "
        "at once, "
        "against the loopback dispatch server (no LiveKit server exists on the benchmark "
        "machine; the worker protocol, dispatch, accept and assignment are real):",
        "",
    ]
    for key, label in data["variants"].items():
        lines.append(f"- **{key}**: {label}")
    if data.get("complete") is False:
        lines += ["", f"**{interrupted(data)}**"]
    lines += [
        "",
        "How each worker is built and what each figure means is under [Method](#method); "
        "the harness and its README are in `benchmarks/`.",
        "",
        "## Headline",
        "",
    ]
    if headline_n is not None:
        lines += [
            f'At N = {headline_n} concurrent calls (median of the repeats; "vs A" is the '
            "ratio to the plain process-executor worker):",
            "",
            *_headline(table, headline_n),
            "",
        ]
    largest = max(table.sizes) if table.sizes else None
    if largest is not None and largest != headline_n:
        lines += [f"At N = {largest}:", "", *_headline(table, largest), ""]
        for variant in table.variants:
            cell = table.cell(variant, largest)
            if cell is not None and (cell.partial or not cell.runs):
                lines.append(f"- {variant}: {'; '.join(cell.partial or cell.notes)}.")
        lines.append("")
    throughput = _throughput_table(table)
    if throughput:
        lines += [
            "### Completed turns per second (burst pace)",
            "",
            "Turns answered ÷ the time from the first dispatch to the last reply done, with "
            "every caller talking in lockstep: how many turns a worker (E: all its workers) "
            "completes per second when saturated.",
            "",
            *throughput,
            "",
        ]
    lines += [
        "### Targets",
        "",
        "What the team wants to see; reported, not asserted.",
        "",
        *markdown(TARGET_HEADERS, _target_rows(table, headline_n)),
        "",
    ]
    analysis = hand_written(ANALYSIS)
    if analysis:
        lines += ["## Analysis", "", analysis, ""]
    if images:
        lines += ["## Plots", "", *image_lines(images, out)]
    lines += ["## Per N", ""]
    for calls in table.sizes:
        lines += [*_per_n(table, calls), ""]
    per_worker = [cell for cell in table.cells if cell.workers and cell.ok]
    if per_worker:
        lines += [
            "## Per worker",
            "",
            "A supervised variant's supervisor and each of its workers (medians over the "
            "repeats). PSS of each worker's own process tree, of the supervisor alone; the "
            "tables above show the whole tree and the worst worker's loop lag.",
            "",
        ]
        for cell in sorted(per_worker, key=lambda c: (c.calls, c.variant)):
            lines += [*_per_worker(cell), ""]
    wins = _where_plain_wins(table)
    lines += [
        "## Where plain livekit wins",
        "",
        "Every N and figure at which A or B measured at least 5% better than C in this run:",
        "",
        *(wins or ["- none in this run."]),
        "",
        "And what the figures do not show:",
        "",
        "- A (and D) isolate each call in its own process: a crash, a leak or a blocking call "
        "stays in that call. In C every session shares one event loop, so one agent that "
        "blocks the loop delays every call on the worker (OpenRTC's watchdog names it, but "
        "does not prevent it). The loop-lag column is the price of that sharing.",
        "- A's memory cap per job (`job_memory_limit_mb`) works per call; in C the whole "
        "worker is one process.",
        "- A and D spread calls over every core; C runs its sessions on one (E runs one C "
        "worker per core). When every "
        "caller talks at once (`--pace burst`), C's turns queue behind each other on that "
        "core (see Analysis) where a process worker that got its calls started would not.",
        "- B keeps one process too but runs one thread and event loop per call, so its loop-lag"
        " figure (the worker's main loop) does not see the calls' own loops.",
        "",
        "## Method",
        "",
        "- **Workload**: every call runs the same `Agent` subclass with the same scripted "
        f"LLM: {workload['reply_words']}-word replies streamed one word at a time, "
        f"{workload['first_token_delay_s'] * 1000:.0f} ms to the first token and "
        f"{workload['token_delay_s'] * 1000:.0f} ms per word after it; the caller says "
        f"{len(workload['caller_turns'])} lines, then stays on for {settings['hold_s']:g} s. "
        "Sessions run in text mode (no room, no audio), so STT, TTS and VAD do no work; "
        "the VAD is still loaded the way each worker loads it.",
        f"- **Pace**: {_pace(settings)}",
        "- **A / B**: a plain livekit `AgentServer` (`benchmarks/plain_worker.py`), written "
        "the way livekit's docs teach: a `setup_fnc` prewarm that loads `inference.VAD()` "
        "into `proc.userdata`, one `@server.rtc_session` entrypoint that builds "
        "`AgentSession(llm=..., vad=ctx.proc.userdata['vad'], turn_handling=...)`, starts "
        "the agent, runs the caller's lines with `session.run(user_input=...)`, holds, posts "
        "its report and calls `ctx.shutdown()`. A uses the process executor (livekit's "
        "default), B the thread executor; both keep `num_idle_processes = min(N, 4)` warm "
        "processes (threads), as a production worker keeps some.",
        "- **C / D**: an `AgentPool` with the same agent and LLM (`benchmarks/openrtc_worker.py`)"
        ", run with `pool.create_server(plugins=[Simulation(url)])` (openrtc-testing's "
        "simulation plugin); its default prewarm loads the shared "
        'VAD, which the session factory hands to each session. C is `isolation="coroutine"`'
        ' (the default), D `isolation="process"`; `max_sessions = N + 10`. D keeps the same '
        "warm job processes as A (`server_options={'num_idle_processes': min(N, 4)}`).",
        *_supervised_method(data),
        "- Every worker runs in its own subprocess (`python -m benchmarks.runner`) in livekit's "
        "dev mode (no load shedding), HTTP port 0, against the loopback dispatch server in "
        "the driver process. Variants are interleaved within each N and repeat.",
        "- **Added PSS per session**: the worker's whole process tree (worker, forkserver, job "
        "processes), PSS from `/proc/<pid>/smaps_rollup`, sampled every second. The figure is "
        "(median PSS over the samples taken while the most sessions were live at once − the "
        "idle worker's PSS) ÷ that number of sessions. PSS splits shared pages between the "
        "processes that share them, so forked job processes are not overcounted as RSS would. "
        + _resolution_method(data["runs"]),
        "- **Start latency**: from the driver's dispatch call to `session_started_at`, the "
        "wall-clock time the worker took just after `session.start()` returned (both "
        "clocks are the same machine's). **First reply**: start plus the first turn's "
        "latency, i.e. until the agent's whole first reply was produced.",
        "- **Turn latency**: `session.run(user_input=...)` from call to return, inside the "
        "worker: the LLM's own delays (about "
        f"{(workload['first_token_delay_s'] + (workload['reply_words'] - 1) * workload['token_delay_s']) * 1000:.0f}"  # noqa: E501
        " ms per reply) plus the framework's work and any queueing.",
        "- **Loop lag**: in the worker subprocess, how late a 50 ms sleep on the worker's "
        "main event loop wakes (`openrtc_testing.measure.LoopLagMonitor`), from just before "
        "the dispatch until every call reported; p99 of those samples. **All live**: the "
        "same, only over the samples taken while the most sessions were live at once (all N "
        "when the calls outlast their start-up), leaving out the burst of session starts "
        "and the calls winding down. For C that loop runs "
        "every session; for A, B and D it runs only the worker (job processes or threads "
        "have their own loops, not measured); for E, each worker's loop, the worst worker's "
        "figure in the tables.",
        "- **Completed turns per second** (burst pace only): turns answered ÷ the time from "
        "the first dispatch to the last reply done (a session's start plus its turns' "
        "latencies: burst callers do not pause).",
        "- **CPU per turn**: utime + stime of the worker's process tree (including job "
        "processes that ended and were reaped) over the same window, divided by the turns "
        "answered. At N = 1 it is mostly the idle worker's own cost over the hold, spread "
        "over three turns.",
        f"- A run that takes longer than {settings['time_bound_s']:.0f} s, loses more than "
        "10% of its calls, or brings the machine's available memory under "
        f"{settings['memory_floor_mb'] / 1024:.0f} GiB stops; that variant is not run at "
        "larger N. A variant is also skipped at an N whose projected memory (added PSS per "
        "session × N) or projected duration (start spread scaled linearly) would not fit.",
        "",
        "## Machine and versions",
        "",
        f"- CPU: {machine['cpu_model']}, {machine['cpus']} cores; memory {machine['memory_gib']}"
        f" GiB; Linux {machine['kernel']}",
        f"- Python {machine['python']}, livekit-agents {machine['livekit-agents']}, livekit "
        f"{machine['livekit']}, openrtc-core {machine['openrtc-core']}, openrtc-testing "
        f"{machine['openrtc-testing']}"
        + (f" (source {machine['revision']})" if machine.get("revision") else ""),
        f"- Run on {when:%Y-%m-%d %H:%M} UTC, {data['duration_s'] / 60:.0f} minutes: sizes "
        f"{', '.join(str(n) for n in settings['sizes'])}; {_repeats(settings)}; each call "
        f"holds {settings['hold_s']:g} s.",
        *noisy_bullet(data["runs"]),
        "",
        "Reproduce:",
        "",
        "```sh",
        "pip install -e '.[dev]' -e plugins/openrtc-testing matplotlib",
        data["command"],
        "```",
        "",
        "`--out docs/benchmarks.md` writes this page from the run (through nox: "
        "`nox -s bench -- --out docs/benchmarks.md`).",
        "",
    ]
    return "\n".join(lines)


def _throughput_table(table: Table) -> list[str]:
    """Completed turns per second per N and variant, with E against C and A."""
    sizes = [
        n for n in table.sizes if any(table.value(v, n, "turns_per_s") for v in table.variants)
    ]
    if not sizes:
        return []
    refs = [ref for ref in ("C", "A") if "E" in table.variants and ref in table.variants]
    rows = []
    for calls in sizes:
        e_rate = table.value("E", calls, "turns_per_s")
        rows.append(
            [
                str(calls),
                *(_rate(table.value(v, calls, "turns_per_s")) for v in table.variants),
                *(ratio(e_rate, table.value(ref, calls, "turns_per_s")) for ref in refs),
            ]
        )
    headers = ["N", *table.variants, *(f"E / {ref}" for ref in refs)]
    return markdown(headers, rows, ">" * len(headers))


PER_WORKER_HEADERS: Final = (
    "process",
    "calls",
    "turn p95",
    "loop lag p99",
    "loop lag p99 (all live)",
    "PSS idle",
    "PSS, all live",
    "added PSS / session",
)


def _per_worker(cell: Cell) -> list[str]:
    supervisor = [
        "supervisor",
        *[DASH] * 4,
        mib(cell.get("supervisor_idle_pss_mb")),
        mib(cell.get("supervisor_live_pss_mb")),
        DASH,
    ]
    rows = [supervisor, *([f"worker {w.index}", *_worker_texts(w)] for w in cell.workers)]
    return [
        f"### {cell.name}, N = {cell.calls}",
        "",
        *markdown(PER_WORKER_HEADERS, rows, "<" + ">" * (len(PER_WORKER_HEADERS) - 1)),
    ]


def _supervised_method(data: dict[str, Any]) -> list[str]:
    """The Method bullet of variant E, when the results have it."""
    if "E" not in data["variants"]:
        return []
    counts = {r.get("worker_processes") for r in data["runs"] if r.get("worker_processes")}
    workers = "/".join(str(n) for n in sorted(counts)) or "N"
    return [
        "- **E**: C's pool (coroutine, `max_sessions = N + 10` in each worker) under "
        "openrtc-workers' supervisor, one worker per usable core (`start --workers "
        f"{workers}` here): the runner process becomes the supervisor, runs the pool's "
        "prewarm once and forks the workers, each registered with the dispatch server on "
        "its own; the dispatch server offers calls round-robin over the workers that report "
        "themselves available, as LiveKit does. Each worker measures its own loop "
        "(`benchmarks/supervised_worker.py`, steered by the driver through files); E's "
        "loop-lag columns are the worst worker's, its PSS is the whole tree's (supervisor and "
        "workers), with each process under [Per worker](#per-worker). It runs livekit's "
        "`start` (production mode), the others dev mode; OpenRTC's coroutine backend sets its "
        "own load threshold in both. SIGTERM to the supervisor drains the workers.",
    ]


VOICE_BEGIN: Final = "<!-- voice-mode:begin -->"
VOICE_END: Final = "<!-- voice-mode:end -->"
"""The markers around the page's voice section (benchmarks.voice_report writes it)."""


def splice(page: str, section: str) -> str:
    """`page` with its voice section replaced by `section` (added at the end if it has none)."""
    start, end = page.find(VOICE_BEGIN), page.find(VOICE_END)
    if start < 0 or end < start:
        return page.rstrip("\n") + "\n\n" + section + "\n"
    return page[:start] + section + page[end + len(VOICE_END) :]


def section_of(page: str) -> str:
    """The voice section of `page` ("" if it has none)."""
    start, end = page.find(VOICE_BEGIN), page.find(VOICE_END)
    return page[start : end + len(VOICE_END)] if 0 <= start < end else ""


def write_docs(data: dict[str, Any], out: Path) -> None:
    """Write the text-mode Markdown page at `out` and its plots under ``img/`` beside it,
    keeping the voice section the page had (a voice sweep writes only that section)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    table = Table(summarize(data["runs"]))
    images = write_plots(table, out.parent / "img")
    page = render_markdown(data, images, out)
    voice = section_of(out.read_text(encoding="utf-8")) if out.exists() else ""
    out.write_text(splice(page, voice) if voice else page)
