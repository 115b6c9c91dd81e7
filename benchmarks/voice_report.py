"""Voice mode's figures (``--mode voice``): the terminal table, and the "Voice mode" section of
the benchmarks page with its plots.

The text-mode page and the voice section are refreshed by separate sweeps, so the section
sits between two markers in the page (``report.VOICE_BEGIN``, ``report.VOICE_END``): a
voice sweep replaces what is between them (or adds the section at the end), a text sweep
writes its page and keeps the section it finds (``report.write_docs``).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from .report import (
    ADDED_PSS,
    TARGET_HEADERS,
    VOICE_BEGIN,
    VOICE_END,
    Column,
    Plot,
    Table,
    added_pss,
    cell_notes,
    cell_status,
    console_added,
    console_rows,
    failed_calls,
    hand_written,
    image_lines,
    interrupted,
    median_of,
    met,
    noisy_bullet,
    noisy_runs,
    per_n_rows,
    splice,
    spread_of,
    summarize,
    write_plots,
)
from .tables import DASH, duration, markdown, mib, number, ratio

HELD_FACTOR: Final = 1.5
"""A variant holds N voice calls while their caller-heard latency p95 stays within this
factor of its single-call value (its smallest N)."""
HELD_METRIC: Final = "heard_detected_p95_s"
"""The latency HELD_FACTOR applies to: heard p95 over the turns the turn detector ended.

The turns it waits out (2.5 s, its doubt about a clip) come at random, a few percent of
them at any N: over 30 turns, two of them decide the p95 of all turns, and would stop a
variant at an N it holds. The waited-out share is shown beside it; it rises with load too,
where input frames are dropped."""
VOICE_ANALYSIS: Final = Path(__file__).with_name("voice_analysis.md")
"""Hand-written reading of the voice results, included in the section under "Analysis"."""

VOICE_PLOTS: Final = (
    Plot(
        name="voice-heard-latency.png",
        metric=HELD_METRIC,
        title="Caller-heard latency p95, turns the detector ended",
        ylabel="seconds (log)",
        scale=1.0,
        log_y=True,
    ),
    Plot(
        name="voice-cpu.png",
        metric="cpu_per_call_s",
        title="Worker CPU per second of voice call",
        ylabel="CPU-seconds per call-second (log)",
        scale=1.0,
        log_y=True,
    ),
    Plot(
        name="voice-memory.png",
        metric=ADDED_PSS,
        title="Added PSS per live voice call",
        ylabel="MiB per call (log)",
        scale=1.0,
        log_y=True,
    ),
)


def is_voice(data: dict[str, Any]) -> bool:
    """Whether a results file holds a voice-mode sweep."""
    return (data.get("settings") or {}).get("mode") == "voice"


@attrs.frozen(kw_only=True)
class Held:
    """The most voice calls a variant held: the largest N, from its smallest up, whose runs
    all went well with every call completed and caller-heard latency p95 within
    HELD_FACTOR of the smallest N's."""

    calls: int
    reference_n: int
    reference_s: float
    broke_at: int | None
    """The first N past what it holds (None: it held every N it ran)."""
    why: str


def held(table: Table, variant: str) -> Held | None:
    """What `variant` held over the sizes it ran (None without a good run at its smallest)."""
    sizes = [n for n in table.sizes if table.cell(variant, n) is not None]
    if not sizes:
        return None
    reference = table.value(variant, sizes[0], HELD_METRIC)
    if reference is None:
        return None
    largest, broke_at, why = sizes[0], None, ""
    for calls in sizes[1:]:
        cell = table.cell(variant, calls)
        assert cell is not None
        heard = cell.get(HELD_METRIC) if cell.ok else None
        if not cell.runs:
            why = f"not run at N={calls}: {'; '.join(cell.notes)}"
        elif not cell.ok or cell.failures:
            why = f"N={calls}: {cell_status(cell)}, {cell.failures} failed call(s)"
        elif heard is None or heard > HELD_FACTOR * reference:
            why = (
                f"N={calls}: detector-ended heard p95 {duration(heard)}, "
                f"{ratio(heard, reference)} of N={sizes[0]}"
            )
        else:
            largest = calls
            continue
        broke_at = calls
        break
    return Held(
        calls=largest,
        reference_n=sizes[0],
        reference_s=reference,
        broke_at=broke_at,
        why=why,
    )


def _held_text(found: Held | None) -> str:
    if found is None:
        return DASH
    if found.broke_at is None:
        return f"≥ {found.calls} (every N run)"
    return str(found.calls)


def _cores(data: dict[str, Any]) -> int:
    return int((data.get("machine") or {}).get("cpus") or 1)


def _per_s(value: float | None) -> str:
    return number(value, "{:.3f}")


def _count(value: float | None) -> str:
    return number(value, "{:.0f}")


# -- terminal ----------------------------------------------------------------------------------

VOICE_CONSOLE_COLUMNS: Final[tuple[Column, ...]] = (
    ("+PSS/call", console_added),
    ("start p50", median_of("start_p50_s")),
    ("heard p50", median_of("heard_p50_s")),
    ("heard p95", median_of("heard_p95_s")),
    ("ended p95", median_of(HELD_METRIC)),
    ("heard max", median_of("heard_max_s")),
    ("waited", median_of("turns_waited_out", _count)),
    ("CPU/call-s", median_of("cpu_per_call_s", _per_s)),
    ("all live", median_of("lag_all_live_p99_s")),
    ("dropped", median_of("frames_dropped", _count)),
    ("fail", failed_calls),
)


def render_voice_console(data: dict[str, Any]) -> str:
    table = Table(summarize(data["runs"]))
    lines = console_rows(table, 13, VOICE_CONSOLE_COLUMNS)
    lines += [
        "",
        f"held (heard p95 of the turns the detector ended within {HELD_FACTOR:g}x of the "
        "smallest N's, no call failed):",
    ]
    for variant in table.variants:
        found = held(table, variant)
        name = next(c.name for c in table.cells if c.variant == variant)
        if found is None:
            lines.append(f"  {name}: no good run at its smallest N")
            continue
        lines.append(
            f"  {name}: {_held_text(found)} calls, {found.calls / _cores(data):g} per core"
            f" (reference {duration(found.reference_s)} at N={found.reference_n})"
            + (f"; {found.why}" if found.why else "")
        )
    noisy = noisy_runs(data["runs"])
    if noisy:
        lines += ["", noisy]
    if data.get("complete") is False:
        lines += ["", interrupted(data)]
    return "\n".join(lines)


# -- Markdown ----------------------------------------------------------------------------------


HEADLINE_HEADERS: Final = (
    "variant",
    "added PSS / call",
    "vs A",
    "start p50",
    "heard p50",
    "heard p95",
    "detector-ended p95",
    "waited out",
    "CPU per call-second",
    "vs A",
    "holds (calls)",
    "per core",
)


def _headline(table: Table, calls: int, data: dict[str, Any]) -> list[str]:
    """Every variant at N = `calls`, its memory and CPU against A's, and what it holds."""
    a_mem = table.shown("A", calls, ADDED_PSS)
    a_cpu = table.value("A", calls, "cpu_per_call_s")
    rows = []
    for variant in table.variants:
        cell = table.cell(variant, calls)
        found = held(table, variant)
        holds = _held_text(found)
        per_core = f"{found.calls / _cores(data):g}" if found is not None else DASH
        if cell is None or not cell.ok:
            status = cell_status(cell) if cell is not None else "not run"
            rows.append([variant, status, *[""] * 8, holds, per_core])
            continue
        cpu = cell.get("cpu_per_call_s")
        rows.append(
            [
                cell.name,
                added_pss(cell, spread=False),
                ratio(cell.shown(ADDED_PSS), a_mem),
                duration(cell.get("start_p50_s")),
                duration(cell.get("heard_p50_s")),
                duration(cell.get("heard_p95_s")),
                duration(cell.get(HELD_METRIC)),
                f"{_count(cell.get('turns_waited_out'))} of {3 * calls}",
                _per_s(cpu),
                ratio(cpu, a_cpu),
                holds,
                per_core,
            ]
        )
    return markdown(HEADLINE_HEADERS, rows, "<" + ">" * (len(HEADLINE_HEADERS) - 1))


def _targets(table: Table, calls: int | None) -> list[str]:
    rows = []
    a_held = held(table, "A")
    for variant in ("C", "E"):
        if variant not in table.variants:
            continue
        if calls is not None:
            mine = table.value(variant, calls, ADDED_PSS)
            cell = table.cell(variant, calls)
            if cell is not None and cell.ok and cell.pss_unresolved:
                mine = cell.pss_resolution_mb
            a_mem = table.shown("A", calls, ADDED_PSS)
            rows.append(
                [
                    f"{variant} added PSS per call ≤ 1/20 of A (N={calls})",
                    f"{variant} {mib(mine)}, A {mib(a_mem)} ({ratio(mine, a_mem)})",
                    met(mine is not None and a_mem is not None and mine <= a_mem / 20),
                ]
            )
        mine_held = held(table, variant)
        rows.append(
            [
                f"{variant} holds at least as many voice calls as A, detector-ended heard p95 "
                f"within {HELD_FACTOR:g}× of one call",
                f"{variant} {_held_text(mine_held)}, A {_held_text(a_held)}",
                met(
                    mine_held is not None and a_held is not None and mine_held.calls >= a_held.calls
                ),
            ]
        )
    return markdown(TARGET_HEADERS, rows)


VOICE_COLUMNS: Final[tuple[Column, ...]] = (
    ("added PSS / call", added_pss),
    ("idle PSS", median_of("idle_pss_mb", mib)),
    ("start p50", spread_of("start_p50_s")),
    ("heard p50", median_of("heard_p50_s")),
    ("heard p95", spread_of("heard_p95_s")),
    ("heard p99", median_of("heard_p99_s")),
    ("heard max", median_of("heard_max_s")),
    ("detector-ended p95", median_of("heard_detected_p95_s")),
    ("waited out", lambda c: f"{_count(c.get('turns_waited_out'))} of {3 * c.calls}"),
    ("CPU per call-second", median_of("cpu_per_call_s", _per_s)),
    ("VAD wall time per call-second", median_of("vad_inference_per_call_s", _per_s)),
    ("loop lag p99 (all live)", median_of("lag_all_live_p99_s")),
    (
        "input frames late / dropped",
        lambda c: f"{_count(c.get('frames_late'))} / {_count(c.get('frames_dropped'))}",
    ),
    ("failed calls", failed_calls),
)


def _per_n(table: Table, calls: int) -> list[str]:
    notes = [note for cell in table.at(calls) for note in cell_notes(cell)]
    return [f"#### N = {calls}", "", *per_n_rows(table, calls, VOICE_COLUMNS), "", *notes]


def render_voice_section(
    data: dict[str, Any], images: Sequence[tuple[Plot, Path]], out: Path
) -> str:
    table = Table(summarize(data["runs"]))
    machine, settings, workload = data["machine"], data["settings"], data["workload"]
    compare = table.compare_size("heard_p95_s")
    when = datetime.datetime.fromtimestamp(data["started_at"], tz=datetime.UTC)
    low, high = settings.get("pause_s") or (0.0, 0.0)
    lines = [
        VOICE_BEGIN,
        "",
        "## Voice mode",
        "",
        "<!-- Generated by `python -m benchmarks.density --mode voice --out docs/benchmarks.md`"
        "; edit benchmarks/voice_report.py, not this section. -->",
        "",
        "The same variants on voice calls: each caller speaks its lines as real speech "
        f"(espeak-ng, {workload.get('sample_rate', 16000) // 1000} kHz, 20 ms frames in real "
        "time) into the session's audio input; the worker runs the prewarmed VAD and "
        "livekit's local turn detector on it; the scripted STT answers when the VAD's "
        "segment ends, the scripted LLM as in text mode, and the scripted TTS makes real "
        "audio of the reply's length, which the caller's earpiece plays out in real time. "
        "**Heard latency** is what a caller hears: from the end of its speech to the "
        "agent's first audio. A variant **holds** N calls while every call completes and "
        "the heard latency p95 of the turns the turn detector ended stays within "
        f"{HELD_FACTOR:g}× of its single-call value; the sweep stops a variant at the first "
        "N past that. The turns the detector waits out instead (its doubt about a clip, "
        "2.5 s) come at random at any N, a few in a hundred, and two of them in 30 turns "
        "would decide a p95 of every turn; they are counted beside it (**waited out**), "
        "and their share rises where a loaded worker drops input frames.",
        "",
    ]
    if data.get("complete") is False:
        lines += [f"**{interrupted(data)}**", ""]
    if compare is not None:
        lines += [
            f"At N = {compare} (the largest N at which A and C both completed every call; "
            "medians of the repeats), with what each variant holds:",
            "",
            *_headline(table, compare, data),
            "",
        ]
    lines += [
        "What the team wants to see; reported, not asserted:",
        "",
        *_targets(table, compare),
        "",
    ]
    analysis = hand_written(VOICE_ANALYSIS)
    if analysis:
        lines += ["### Voice analysis", "", analysis, ""]
    if images:
        lines += ["### Voice plots", "", *image_lines(images, out)]
    lines += ["### Voice, per N", ""]
    for calls in table.sizes:
        lines += [*_per_n(table, calls), ""]
    lines += [
        "### Voice method",
        "",
        f"- **Caller**: says {len(workload['caller_turns'])} lines "
        f"({'; '.join(repr(t) for t in workload['caller_turns'])}), each after a pause of "
        f"{low:g} to {high:g} s (thinking: hearing the reply and speaking take their real "
        f"time here), then stays on {settings['hold_s']:g} s. The lines are ones the turn "
        "detector ends a turn on (`benchmarks/workload.py` says why); **waited out** counts "
        "turns it did not, which then end after the endpointing delay (2.5 s), and "
        "**detector-ended p95** leaves them out.",
        "- **A / B**: the plain worker builds the session livekit's docs build for a voice "
        "agent: `AgentSession(stt=..., llm=..., tts=..., vad=ctx.proc.userdata['vad'], "
        "turn_handling={'turn_detection': inference.TurnDetector()})`, the caller's "
        "microphone and earpiece as `session.input.audio` / `session.output.audio`. "
        "**C / D / E**: the pool configures the same turn detector; openrtc-testing's "
        "simulation plugin adds the scripted STT and TTS and the same caller. Both sides run "
        "one caller class (`openrtc_testing.voice_caller.VoiceCaller`).",
        "- **CPU per call-second**: the worker tree's CPU time over the calls ÷ the sum of "
        "the calls' lengths (session start to the end of the hold). **VAD wall time per "
        "call-second**: how long the VAD's inference calls took, as livekit times them "
        "(`inference_duration`, wall clock: it includes waiting for the GIL and for the "
        "stream's thread, so it grows with contention), counted per call, on the same scale.",
        "- **Input frames late / dropped**: 20 ms frames the session read more than a frame "
        "behind real time, and frames lost when it fell more than a 200 ms jitter buffer "
        "behind, as a phone line would lose them.",
        "- Memory, start latency, loop lag and the stopping rules as in text mode "
        "([Method](#method)); the warm-up call is a voice call, so the turn detector's "
        "model is loaded before the idle PSS is sampled.",
        f"- Run on {when:%Y-%m-%d %H:%M} UTC, {data['duration_s'] / 60:.0f} minutes, "
        f"{machine['cpus']} cores ({machine['cpu_model']}), Python {machine['python']}, "
        f"livekit-agents {machine['livekit-agents']}"
        + (f", source {machine['revision']}" if machine.get("revision") else "")
        + f": sizes {', '.join(str(n) for n in settings['sizes'])}, "
        f"{settings['repeats']} run(s) per variant and N.",
        *noisy_bullet(data["runs"]),
        "",
        "```sh",
        data["command"],
        "```",
        "",
        VOICE_END,
    ]
    return "\n".join(lines)


def write_voice_docs(data: dict[str, Any], out: Path) -> None:
    """Put the voice section into the page at `out` (a new page if there is none), and its
    plots under ``img/`` beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    table = Table(summarize(data["runs"]))
    images = write_plots(table, out.parent / "img", VOICE_PLOTS)
    section = render_voice_section(data, images, out)
    page = out.read_text(encoding="utf-8") if out.exists() else "# Benchmarks\n"
    out.write_text(splice(page, section), encoding="utf-8")
