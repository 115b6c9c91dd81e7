"""The soak benchmark's figures: summaries, the terminal tables, the Markdown report, the plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from .figures import dress, figure, threshold
from .tables import markdown, number, terminal

MIB: Final = 2**20
WAVE_ROWS_MAX: Final = 25
"""The report's per-wave table keeps at most this many rows per run (evenly spaced, last kept)."""


TARGET_PCT: Final = 5.0
"""Idle PSS within this many percent of its first post-warm-up wave counts as flat."""


def run_label(run: dict[str, Any]) -> str:
    """How a run is named in tables and on the plot: the variant, and the --env it had."""
    label = f"{run['variant']} {run['name']}"
    notes = [f"{k}={v}" for k, v in sorted((run.get("env") or {}).items())]
    if run.get("release_probe"):
        notes.append("collect+trim after every wave")
    if run.get("census"):
        notes.append("census")
    if run.get("live_census"):
        notes.append("live census")
    label += " (" + ", ".join(notes) + ")" if notes else ""
    status = run.get("status")
    if status not in (None, "ok", "running"):
        label += f" [{status} after {len(run.get('waves') or [])} waves]"
    return label


def _slope_per_1000(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (calls, MiB) points, in MiB per 1,000 calls."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return None
    cov = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return cov / var * 1000


def _mib(value: float | None) -> float | None:
    return None if value is None else value / MIB


def internals(wave: dict[str, Any]) -> dict[str, float | None]:
    """The worker's own view after a wave, in MiB and counts (None where not reported)."""
    worker = wave.get("worker") or {}
    malloc = worker.get("mallinfo2") or {}
    pymalloc = worker.get("pymalloc") or {}
    arenas = pymalloc.get("arenas_current")
    arena_bytes = pymalloc.get("arena_bytes")
    pauses = worker.get("gc_pauses") or {}
    full = pauses.get("2") or {}
    return {
        "gc_full_in_wave": full.get("count", 0) if "gc_pauses" in worker else None,
        "gc_longest_ms": max((p["max_s"] for p in pauses.values()), default=0.0) * 1000
        if "gc_pauses" in worker
        else None,
        "gc_objects": worker.get("gc_objects"),
        "gc_full_collections": (worker.get("gc_collections") or [None, None, None])[2],
        "malloc_heap_mib": _mib(malloc["arena"]) if malloc else None,
        "malloc_in_use_mib": _mib(malloc["uordblks"]) if malloc else None,
        "malloc_free_mib": _mib(malloc["fordblks"]) if malloc else None,
        "malloc_mmapped_mib": _mib(malloc["hblkhd"]) if malloc else None,
        "pymalloc_arenas_mib": (
            _mib(arena_bytes) if arena_bytes is not None else _mib(arenas * 2**20)
        )
        if arenas is not None
        else None,
        "pymalloc_used_mib": _mib(pymalloc.get("allocated_bytes")),
    }


def summarize(run: dict[str, Any], warmup: int, target_pct: float = TARGET_PCT) -> dict[str, Any]:
    """One run's verdict: idle PSS after warm-up, its growth, and whether it stayed flat.

    The baseline is the idle PSS after the first wave past the warm-up; the run is flat when
    no later idle sample exceeds it by more than `target_pct` percent.
    """
    waves = run.get("waves") or []
    # A wave after which the worker never got back to no job (it stopped answering) has no
    # idle sample: it is left out of the verdict.
    judged = [w for w in waves[warmup:] if w.get("jobs_left", 0) == 0]
    summary: dict[str, Any] = {
        "label": run_label(run),
        "status": run.get("status", "unknown"),
        "waves": len(waves),
        "calls": waves[-1]["calls"] if waves else 0,
        "failures": sum(w.get("failures", 0) for w in waves),
        "ready_pss_mb": (run.get("ready") or {}).get("pss_mb"),
        "first_mb": None,
        "last_mb": None,
        "max_mb": None,
        "growth_mb": None,
        "growth_pct": None,
        "rise_pct": None,
        "mib_per_1000": None,
        "anon_mib_per_1000": None,
        "anon_rise_pct": None,
        "verdict": "no waves past warm-up",
        "flat": None,
    }
    if not judged:
        return summary
    first, last = judged[0]["pss_mb"], judged[-1]["pss_mb"]
    peak = max(w["pss_mb"] for w in judged)
    rise_pct = (peak - first) / first * 100
    flat = rise_pct <= target_pct
    anon = [w["pss_anon_mb"] for w in judged if "pss_anon_mb" in w]
    if anon and anon[0] > 0:
        summary["anon_rise_pct"] = (max(anon) - anon[0]) / anon[0] * 100
    summary.update(
        {
            "first_mb": first,
            "last_mb": last,
            "max_mb": peak,
            "growth_mb": last - first,
            "growth_pct": (last - first) / first * 100,
            "rise_pct": rise_pct,
            "mib_per_1000": _slope_per_1000([(w["calls"], w["pss_mb"]) for w in judged]),
            "anon_mib_per_1000": _slope_per_1000(
                [(w["calls"], w["pss_anon_mb"]) for w in judged if "pss_anon_mb" in w]
            ),
            "flat": flat,
            "verdict": (
                f"{'flat' if flat else 'grows'}: max {rise_pct:+.1f}% vs {target_pct:g}% target"
            ),
        }
    )
    if summary["status"] != "ok":
        summary["verdict"] += f" ({summary['status']}, {len(judged)} waves judged)"
    return summary


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return number(value, fmt, missing="–")


SUMMARY_HEADERS: Final = (
    "run",
    "waves",
    "calls",
    "failed",
    "idle PSS ready",
    "first post-warm-up",
    "last",
    "max",
    "growth",
    "MiB / 1,000 calls",
    "anon max rise",
    "verdict",
)


def summary_rows(data: dict[str, Any]) -> list[list[str]]:
    warmup = int(data["settings"]["warmup"])
    target = float(data["settings"].get("target_pct", TARGET_PCT))
    rows = []
    for run in data["runs"]:
        s = summarize(run, warmup, target)
        rows.append(
            [
                s["label"],
                str(s["waves"]),
                f"{s['calls']:,}",
                str(s["failures"]),
                _num(s["ready_pss_mb"]),
                _num(s["first_mb"]),
                _num(s["last_mb"]),
                _num(s["max_mb"]),
                "–"
                if s["growth_mb"] is None
                else f"{s['growth_mb']:+.1f} MiB ({s['growth_pct']:+.1f}%)",
                _num(s["mib_per_1000"], "{:+.2f}"),
                "–"
                if s["anon_rise_pct"] is None
                else f"{s['anon_rise_pct']:+.1f}% "
                + ("(flat)" if s["anon_rise_pct"] <= target else "(grows)"),
                s["verdict"],
            ]
        )
    return rows


INTERNAL_HEADERS: Final = (
    "run",
    "after",
    "idle PSS",
    "PSS anon",
    "gc objects",
    "full GCs",
    "pymalloc arenas",
    "pymalloc used",
    "malloc heap",
    "malloc in use",
    "malloc free",
    "mmapped",
)


def _internal_row(label: str, after: str, wave: dict[str, Any]) -> list[str]:
    inside = internals(wave)
    return [
        label,
        after,
        _num(wave.get("pss_mb")),
        _num(wave.get("pss_anon_mb")),
        _num(inside["gc_objects"], "{:,.0f}"),
        _num(inside["gc_full_collections"], "{:.0f}"),
        _num(inside["pymalloc_arenas_mib"]),
        _num(inside["pymalloc_used_mib"]),
        _num(inside["malloc_heap_mib"]),
        _num(inside["malloc_in_use_mib"]),
        _num(inside["malloc_free_mib"]),
        _num(inside["malloc_mmapped_mib"]),
    ]


def internal_rows(data: dict[str, Any]) -> list[list[str]]:
    """Per run: the worker after warm-up call, after the first judged wave, after the last."""
    warmup = int(data["settings"]["warmup"])
    rows = []
    for run in data["runs"]:
        label = run_label(run)
        waves = run.get("waves") or []
        if run.get("ready"):
            rows.append(_internal_row(label, "warm-up call", run["ready"]))
        idle = [w for w in waves if w.get("jobs_left", 0) == 0]  # see summarize()
        picked = []
        if len(waves) > warmup and waves[warmup] in idle:
            picked.append(waves[warmup])
        if idle and (not picked or idle[-1] is not picked[0]):
            picked.append(idle[-1])
        for wave in picked:
            rows.append(_internal_row(label, f"{wave['calls']:,} calls", wave))
    return rows


RELEASE_HEADERS: Final = (
    "run",
    "idle PSS after last wave",
    "after gc.collect()",
    "after malloc_trim(0)",
    "anon: last wave → after both",
    "objects collected",
    "collection took",
)


def release_rows(data: dict[str, Any]) -> list[list[str]]:
    """Per run that finished: what a full collection and malloc_trim gave back at the end."""
    rows = []
    for run in data["runs"]:
        released = run.get("released")
        waves = run.get("waves") or []
        if not released or not waves:
            continue
        collect = released.get("collect") or {}
        rows.append(
            [
                run_label(run),
                _num(waves[-1]["pss_mb"]),
                _num(released.get("pss_after_collect_mb")),
                _num(released.get("pss_after_trim_mb")),
                _num(waves[-1].get("pss_anon_mb"))
                + " → "
                + _num(released.get("anon_after_trim_mb")),
                _num(collect.get("collected"), "{:,.0f}"),
                _num(collect.get("seconds"), "{:.2f} s"),
            ]
        )
    return rows


FULL_GC_HEADERS: Final = (
    "run",
    "full collections",
    "mean",
    "longest",
    "over 100 ms",
    "CPU mean",
    "CPU longest",
    "all collections",
)


def full_collections(run: dict[str, Any]) -> dict[str, float] | None:
    """The run's full collections, from every wave's pauses: count, mean and longest (wall
    and the loop thread's CPU), how many waves had one over 100 ms, all collections' time.
    None for a run that recorded no pauses."""
    waves = [w for w in run.get("waves") or [] if "gc_pauses" in (w.get("worker") or {})]
    if not waves:
        return None
    full = [w["worker"]["gc_pauses"].get("2") or {} for w in waves]
    count = sum(f.get("count", 0) for f in full)
    with_cpu = [f for f in full if "cpu_total_s" in f]
    return {
        "count": count,
        "mean_ms": sum(f.get("total_s", 0.0) for f in full) / count * 1000 if count else 0.0,
        "max_ms": max((f.get("max_s", 0.0) for f in full), default=0.0) * 1000,
        "waves_over_100ms": sum(1 for f in full if f.get("max_s", 0.0) > 0.1),
        "cpu_mean_ms": (
            sum(f["cpu_total_s"] for f in with_cpu) / count * 1000
            if with_cpu and count
            else float("nan")
        ),
        "cpu_max_ms": max((f["cpu_max_s"] for f in with_cpu), default=float("nan")) * 1000,
        "all_s": sum(
            p.get("total_s", 0.0) for w in waves for p in w["worker"]["gc_pauses"].values()
        ),
    }


def full_gc_rows(data: dict[str, Any]) -> list[list[str]]:
    rows = []
    for run in data["runs"]:
        f = full_collections(run)
        if f is None:
            continue
        rows.append(
            [
                run_label(run),
                f"{f['count']:,.0f}",
                f"{f['mean_ms']:.0f} ms",
                f"{f['max_ms']:.0f} ms",
                f"in {f['waves_over_100ms']:.0f} wave(s)",
                "–" if f["cpu_mean_ms"] != f["cpu_mean_ms"] else f"{f['cpu_mean_ms']:.0f} ms",
                "–" if f["cpu_max_ms"] != f["cpu_max_ms"] else f"{f['cpu_max_ms']:.0f} ms",
                f"{f['all_s']:.1f} s",
            ]
        )
    return rows


def render_console(data: dict[str, Any]) -> str:
    s = data["settings"]
    head = (
        f"idle PSS (MiB) with no call live, after waves of {s['wave']} calls "
        f"({s['concurrency']} at once, {s['turns']} turns); first {s['warmup']} wave(s) "
        f"are warm-up; target: within {s.get('target_pct', TARGET_PCT):g}%"
    )
    return "\n\n".join(
        [
            head,
            "\n".join(terminal(SUMMARY_HEADERS, summary_rows(data))),
            "inside the worker (MiB unless counted)",
            "\n".join(terminal(INTERNAL_HEADERS, internal_rows(data))),
            "given back at the end (MiB)",
            "\n".join(terminal(RELEASE_HEADERS, release_rows(data))),
            "full garbage collections (the loop waits for each; CPU: the loop thread's own)",
            "\n".join(terminal(FULL_GC_HEADERS, full_gc_rows(data))),
        ]
    )


def _wave_rows(run: dict[str, Any]) -> list[list[str]]:
    waves = run.get("waves") or []
    if len(waves) > WAVE_ROWS_MAX:
        step = -(-len(waves) // WAVE_ROWS_MAX)
        kept = waves[::step]
        if kept[-1] is not waves[-1]:
            kept.append(waves[-1])
    else:
        kept = waves
    rows = []
    for wave in kept:
        inside = internals(wave)
        rows.append(
            [
                str(wave["wave"]),
                f"{wave['calls']:,}",
                _num(wave.get("calls_per_s")),
                str(wave.get("failures", 0)),
                _num(wave["pss_mb"]),
                _num(wave.get("pss_anon_mb")),
                _num(inside["gc_objects"], "{:,.0f}"),
                _num(inside["pymalloc_arenas_mib"]),
                _num(inside["malloc_in_use_mib"]),
                _num(inside["malloc_free_mib"]),
                _num(inside["gc_full_in_wave"], "{:.0f}"),
                _num(inside["gc_longest_ms"], "{:.0f}"),
                _num(wave.get("pss_after_trim_mb")),
            ]
        )
    return rows


WAVE_HEADERS: Final = (
    "wave",
    "calls",
    "calls/s",
    "failed",
    "idle PSS",
    "PSS anon",
    "gc objects",
    "pymalloc arenas",
    "malloc in use",
    "malloc free",
    "full GCs in wave",
    "longest GC pause (ms)",
    "PSS after collect+trim",
)


def _series(run: dict[str, Any], key: str) -> tuple[list[float], list[float]]:
    """(calls served, figure) after the warm-up call and after every wave that has it."""
    points = [(0.0, run["ready"][key])] if key in (run.get("ready") or {}) else []
    points += [
        (float(w["calls"]), float(w[key]))
        for w in run.get("waves") or []
        if key in w and w.get("jobs_left", 0) == 0  # a worker that stopped has no idle sample
    ]
    return [x for x, _ in points], [y for _, y in points]


def plot(data: dict[str, Any], path: Path) -> None:
    """Idle PSS (top) and its anonymous part (bottom) after each wave, one line per run."""
    warmup = int(data["settings"]["warmup"])
    wave_size = int(data["settings"]["wave"])
    with figure(path, size=(9, 7.5), rows=2, sharex=True) as (_, (top, bottom)):
        panels = (
            (top, "pss_mb", "idle PSS, no call live (MiB)"),
            (bottom, "pss_anon_mb", "its anonymous part, Pss_Anon (MiB)"),
        )
        for ax, key, ylabel in panels:
            for run in data["runs"]:
                xs, ys = _series(run, key)
                if not xs:
                    continue
                (line,) = ax.plot(xs, ys, marker="o", markersize=3, label=run_label(run))
                waves = run.get("waves") or []
                if len(waves) > warmup and key in waves[warmup]:
                    limit = waves[warmup][key] * (1 + TARGET_PCT / 100)
                    threshold(ax, limit, color=line.get_color(), linestyle=":")
            if warmup:
                ax.axvspan(0, warmup * wave_size, color="0.9", label=f"warm-up ({warmup} waves)")
            dress(ax, ylabel=ylabel)
        top.legend(fontsize=8)
        bottom.set_xlabel("calls served")
        top.set_title(
            f"Worker memory after each wave of {wave_size} calls "
            f"(dotted: +{TARGET_PCT:g}% over the first post-warm-up wave)"
        )


def render_markdown(data: dict[str, Any], image: str) -> str:
    s = data["settings"]
    commands = [c for c in data.get("commands") or [data.get("command")] if c]
    machine = data.get("machine") or {}
    parts = [
        "# Soak results",
        "",
        "Generated by `python -m benchmarks.soak`"
        + (" (the run did not finish)" if not data.get("complete") else "")
        + ":",
        "",
        "```sh",
        *commands,
        "```",
        "",
        f"{s['calls']:,} calls per run in waves of {s['wave']} ({s['concurrency']} at once, "
        f"{s['turns']} turns each, no pauses); after each wave, the worker's idle PSS (the "
        f"minimum of 3 samples once it reports no job). The first {s['warmup']} wave(s) are "
        f"warm-up; the verdict compares every later wave with the first of them (target: "
        f"within {s.get('target_pct', TARGET_PCT):g}%). Machine: {machine.get('cpus')} CPUs, "
        f"Python {machine.get('python')}, livekit-agents {machine.get('livekit-agents')}, "
        f"revision {machine.get('revision')}.",
        "",
        "MiB. *Growth* is the last judged wave against the first; *MiB / 1,000 calls* the "
        "least-squares slope over the judged waves; *anon max rise* the same verdict figure "
        "for `Pss_Anon` alone (the worker's private anonymous memory: its heaps), which other "
        "processes mapping the same libraries do not move, unlike the file-backed part of PSS.",
        "",
        "\n".join(markdown(SUMMARY_HEADERS, summary_rows(data))),
        "",
        f"![idle PSS after each wave]({image})",
        "",
        "## Inside the worker",
        "",
        "MiB unless counted: tracked objects (`len(gc.get_objects())`), full collections so "
        "far, pymalloc's arenas and the bytes in use in them, glibc's heap (`mallinfo2`: "
        "`arena`, `uordblks` in use, `fordblks` free but kept, `hblkhd` mmapped).",
        "",
        "\n".join(markdown(INTERNAL_HEADERS, internal_rows(data))),
    ]
    full = full_gc_rows(data)
    if full:
        parts += [
            "",
            "## Full garbage collections",
            "",
            "Every full collection during the waves: the loop waits for each. *Mean* and "
            "*longest* are wall time; *CPU* is the loop thread's own time in them (other "
            "processes on the machine can stretch the wall time, not this); *over 100 ms*: "
            "waves whose longest full collection took longer; *all collections*: young ones "
            "included, wall time.",
            "",
            "\n".join(markdown(FULL_GC_HEADERS, full)),
        ]
    released = release_rows(data)
    if released:
        parts += [
            "",
            "## Given back at the end",
            "",
            "After the last wave the worker is asked for a full `gc.collect()`, then glibc's "
            "`malloc_trim(0)`; the idle PSS after each (the verdict above is measured before).",
            "",
            "\n".join(markdown(RELEASE_HEADERS, released)),
        ]
    for run in data["runs"]:
        if not run.get("waves"):
            continue
        parts += [
            "",
            f"### {run_label(run)}",
            "",
            f"`{run.get('config', '')}`; status {run.get('status')}"
            + (f": {run['note']}" if run.get("note") else ""),
            "",
            "\n".join(markdown(WAVE_HEADERS, _wave_rows(run))),
        ]
    return "\n".join(parts) + "\n"


def write_report(data: dict[str, Any], out: Path) -> None:
    """The Markdown report at `out`, its plot beside it (same name, .png)."""
    image = out.with_suffix(".png")
    plot(data, image)
    out.write_text(render_markdown(data, image.name), encoding="utf-8")
