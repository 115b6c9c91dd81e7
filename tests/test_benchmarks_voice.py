"""The density benchmark's voice mode, without running a benchmark: settings, the stopping
rule, the figures from call reports, the terminal table and the page's voice section.

The one real voice run is in tests/test_benchmarks_smoke.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from bench_fakes import Faked, fake_run, results

from benchmarks import density
from benchmarks.report import VOICE_BEGIN, VOICE_END, Table, section_of, splice, summarize
from benchmarks.run import CallRecord, RunPlan, voice_figures
from benchmarks.voice_report import held
from benchmarks.workload import VOICE_CALLER_TURNS, VOICE_HUMAN_PAUSE_S


def voice_run(variant: str, calls: int, *, heard_p95: float, **extra: Any) -> dict[str, Any]:
    return fake_run(
        variant,
        calls,
        heard_p50_s=heard_p95 * 0.9,
        heard_p95_s=heard_p95,
        heard_p99_s=heard_p95,
        heard_max_s=heard_p95 * 1.1,
        heard_detected_p95_s=heard_p95,
        turns_waited_out=0,
        cpu_per_call_s=0.03,
        vad_inference_per_call_s=0.015,
        frames_late=0,
        frames_dropped=0,
        call_seconds=30.0 * calls,
        **extra,
    )


def voice_results(runs: list[dict[str, Any]]) -> dict[str, Any]:
    data = results(runs)
    data["settings"].update(mode="voice", pause_s=list(VOICE_HUMAN_PAUSE_S))
    data["workload"].update(caller_turns=list(VOICE_CALLER_TURNS), sample_rate=16000)
    return data


def sweep_runs() -> list[dict[str, Any]]:
    """A holds 10 (its N=20 failed calls), C holds 40 (its N=80 is past 1.5x)."""
    return [
        voice_run("A", 1, heard_p95=0.60, added=48.0),
        voice_run("C", 1, heard_p95=0.58, added=0.7),
        voice_run("A", 10, heard_p95=0.65, added=47.0),
        voice_run("C", 10, heard_p95=0.60, added=0.5),
        voice_run("A", 20, heard_p95=0.70, failures=3, status="failed", note="3 of 20 failed"),
        voice_run("C", 20, heard_p95=0.62, added=0.5),
        voice_run("C", 40, heard_p95=0.80, added=0.5),
        voice_run("C", 80, heard_p95=1.20, added=0.5),
    ]


# -- what a variant holds -------------------------------------------------------------------


def test_a_variant_holds_up_to_the_n_before_its_latency_or_its_calls_give() -> None:
    table = Table(summarize(sweep_runs()))

    a, c = held(table, "A"), held(table, "C")

    assert a is not None and c is not None
    assert (a.calls, a.broke_at) == (10, 20)
    assert "failed" in a.why
    assert (c.calls, c.broke_at) == (40, 80)
    assert "detector-ended heard p95 1200 ms" in c.why
    assert c.reference_s == 0.58 and c.reference_n == 1


def test_a_variant_that_held_every_n_it_ran_says_so() -> None:
    table = Table(summarize([voice_run("C", 1, heard_p95=0.5), voice_run("C", 10, heard_p95=0.7)]))
    found = held(table, "C")
    assert found is not None and (found.calls, found.broke_at) == (10, None)
    assert held(table, "A") is None


# -- the sweep ------------------------------------------------------------------------------


def test_voice_mode_has_its_own_defaults() -> None:
    args = density.build_parser().parse_args(["--mode", "voice"])
    settings = density.settings_from(args)
    assert settings.voice
    assert settings.sizes == density.VOICE_SIZES
    assert settings.hold_s == density.VOICE_HOLD_S
    assert settings.repeats == density.VOICE_REPEATS
    assert settings.repeats_for(1) == density.VOICE_REFERENCE_REPEATS  # the reference
    assert settings.repeats_for(10) == density.VOICE_REPEATS
    assert settings.pause_s == VOICE_HUMAN_PAUSE_S
    text = density.settings_from(density.build_parser().parse_args([]))
    assert not text.voice and text.sizes == density.FULL_SIZES and text.pause_s == (4.0, 10.0)


def test_the_sweep_stops_a_variant_past_what_it_holds(
    faked: Faked, monkeypatch: pytest.MonkeyPatch
) -> None:
    heard = {1: 0.6, 10: 0.7, 20: 1.0, 40: 0.7}  # 1.0 s is past 1.5 x 0.6 s

    async def run_once(plan: RunPlan) -> dict[str, Any]:
        faked.started.append(plan)
        return voice_run(plan.variant.key, plan.calls, heard_p95=heard[plan.calls])

    monkeypatch.setattr(density, "run_once", run_once)
    monkeypatch.setattr(density, "prepare_voice", lambda parser: None)
    code = density.main(["--mode", "voice", "--variants", "C", "--sizes", "1,10,20,40"])

    assert code == 0
    assert [p.calls for p in faked.started] == [1, 1, 1, 10, 10, 20, 20]
    assert all(p.voice for p in faked.started)


def test_past_held_compares_medians_with_the_smallest_n() -> None:
    reference = [0.6, 0.55, 0.65]  # median 0.6
    assert density.past_held(1, reference, 1, reference) == ""
    assert density.past_held(10, [0.89, 0.3], 1, reference) == ""  # one slow run: median held
    reason = density.past_held(20, [0.91, 0.95], 1, reference)
    assert "930 ms at N=20" in reason and "600 ms at N=1" in reason


# -- figures from the calls' reports --------------------------------------------------------


def test_voice_figures_set_waited_out_turns_apart_and_count_cpu_per_call_second() -> None:
    calls = []
    for latencies, waited in (([0.5, 0.6, 2.6], [False, False, True]), ([0.7], [False])):
        call = CallRecord(dispatched_at=1.0)
        call.take_report(
            {
                "outcome": "completed",
                "session_started_at": 2.0,
                "duration_s": 10.0,
                "turns": [
                    {"latency_s": t, "turn_waited_out": w}
                    for t, w in zip(latencies, waited, strict=True)
                ],
                "voice": {
                    "frames_sent": 500,
                    "frames_late": 2,
                    "frames_dropped": 1,
                    "vad_inference_s": 1.5,
                    "max_input_lag_s": 0.03,
                },
            }
        )
        calls.append(call)

    figures = voice_figures(calls, cpu_s=4.0)

    assert figures["turns_waited_out"] == 1
    assert figures["heard_max_s"] == 2.6
    assert figures["heard_detected_p95_s"] is not None and figures["heard_detected_p95_s"] < 1
    assert figures["cpu_per_call_s"] == pytest.approx(4.0 / 20.0)
    assert figures["vad_inference_per_call_s"] == pytest.approx(3.0 / 20.0)
    assert (figures["frames_sent"], figures["frames_late"], figures["frames_dropped"]) == (
        1000,
        4,
        2,
    )


# -- the terminal and the page --------------------------------------------------------------


def test_the_terminal_table_shows_heard_latency_and_what_each_variant_holds() -> None:
    text = density.render_tables(voice_results(sweep_runs()))
    assert "heard p95" in text and "CPU/call-s" in text
    assert "A livekit process: 10 calls, 5 per core" in text
    assert "C OpenRTC coroutine: 40 calls, 20 per core" in text


def test_the_voice_section_goes_between_its_markers_and_a_text_page_keeps_it(
    tmp_path: Path,
) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks: session density\n\ntext figures\n")

    density.write_page(voice_results(sweep_runs()), page)
    first = page.read_text()
    assert first.startswith("# Benchmarks: session density\n\ntext figures\n")
    section = section_of(first)
    assert section.startswith(VOICE_BEGIN) and section.endswith(VOICE_END)
    assert "## Voice mode" in section and "At N = 10" in section
    assert "| C added PSS per call ≤ 1/20 of A (N=10) |" in section
    assert (tmp_path / "img" / "voice-heard-latency.png").is_file()

    density.write_page(voice_results(sweep_runs()), page)  # again: replaced, not added
    assert page.read_text().count(VOICE_BEGIN) == 1

    text_runs = [fake_run("A", 10, added=23.9), fake_run("C", 10)]
    density.write_page(results(text_runs), page)
    rewritten = page.read_text()
    assert "## Headline" in rewritten and "text figures" not in rewritten
    assert section_of(rewritten) == section


def test_splice_adds_a_section_to_a_page_without_one() -> None:
    section = f"{VOICE_BEGIN}\nvoice\n{VOICE_END}"
    assert splice("# page\n", section) == f"# page\n\n{section}\n"
    assert splice(f"# page\n\n{VOICE_BEGIN}\nold\n{VOICE_END}\n\nafter\n", section) == (
        f"# page\n\n{section}\n\nafter\n"
    )


def test_a_later_results_file_adds_its_runs_to_an_earlier_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, later = tmp_path / "sweep.json", tmp_path / "more.json"
    skipped = voice_run("C", 20, heard_p95=0.7, status="skipped", note="stopped: an old rule")
    first.write_text(json.dumps(voice_results([*sweep_runs()[:4], skipped])))  # N = 1, 10
    more = voice_results([voice_run("C", 20, heard_p95=0.7), voice_run("C", 40, heard_p95=2.0)])
    more["command"] = "python -m benchmarks.density --mode voice --variants C --sizes 20,40"
    later.write_text(json.dumps(more))

    assert density.main(["--from-json", str(first), str(later)]) == 0

    out = capsys.readouterr().out
    assert "C OpenRTC coroutine: 20 calls" in out  # N = 20 from the later file holds; 40 not
    assert re.search(r"^C OpenRTC coroutine +40 ", out, re.MULTILINE)  # its row in the table
    assert "skipped" not in out  # the later file ran C at 20: the earlier skip is gone


def test_files_of_different_modes_are_not_rendered_as_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    voice, text = tmp_path / "voice.json", tmp_path / "text.json"
    voice.write_text(json.dumps(voice_results(sweep_runs())))
    text.write_text(json.dumps(results([fake_run("C", 10)])))
    with pytest.raises(SystemExit) as exited:
        density.main(["--from-json", str(voice), str(text)])
    assert exited.value.code == 2
    assert "render them apart" in capsys.readouterr().err
