"""The density benchmark's command line and report, without running a benchmark.

Runs are faked (``run_once`` replaced) or given as a small results fixture; the one real
run is tests/test_benchmarks_smoke.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import density
from benchmarks.report import render_console, render_markdown
from benchmarks.run import CallRecord, memory_figures
from benchmarks.sampling import PSS_FLOOR_MB, PssSample
from benchmarks.variants import VARIANTS

ROOT = Path(__file__).resolve().parents[1]


def fake_run(
    variant: str,
    calls: int,
    repeat: int = 1,
    *,
    added: float = 0.15,
    resolution: float | None = 0.1,
    **extra: Any,
) -> dict[str, Any]:
    """One run's result as run.run_once records it; `resolution` is the tree's, in MiB."""
    run: dict[str, Any] = {
        "variant": variant,
        "label": VARIANTS[variant].label,
        "name": VARIANTS[variant].name,
        "config": VARIANTS[variant].describe(calls),
        "calls": calls,
        "repeat": repeat,
        "hold_s": 2.0,
        "pause_s": [4.0, 10.0],
        "status": "ok",
        "note": "",
        "completed": calls,
        "failures": 0,
        "errors": {},
        "redispatches": 0,
        "wall_s": 20.0,
        "turns": 3 * calls,
        "expected_turns": 3 * calls,
        "cpu_s": 0.09 * calls,
        "cpu_per_turn_s": 0.03,
        "start_p50_s": 0.010,
        "start_p95_s": 0.012,
        "start_p99_s": 0.013,
        "first_reply_p50_s": 0.46,
        "first_reply_p95_s": 0.47,
        "first_reply_p99_s": 0.47,
        "turn_p50_s": 0.45,
        "turn_p95_s": 0.46,
        "turn_p99_s": 0.47,
        "start_max_s": 0.013,
        "idle_pss_mb": 357.0,
        "max_live_sessions": calls,
        "live_pss_mb": 357.0 + added * calls,
        "added_pss_per_session_mb": added,
        "pss_samples": [[1.0, 357.0, 1]],
        "loop_lag": {"samples": 10, "p50_s": 0.001, "p99_s": 0.003, "max_s": 0.004},
        "loop_lag_all_live": {
            "live_sessions": calls,
            "samples": 10,
            "p50_s": 0.001,
            "p99_s": 0.003,
            "max_s": 0.004,
        },
        "process_init": {"count": 0, "p50_s": None, "max_s": None},
        "worker_exit_code": 0,
    }
    if resolution is not None:
        run["idle_pss_samples_mb"] = [357.0, 357.0 + resolution / 2, 357.0, 357.0, 357.0]
        run["pss_resolution_mb"] = resolution
        run["added_pss_resolution_mb"] = resolution / calls
    run.update(extra)
    return run


def results(runs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A results file (--json) holding `runs`."""
    data: dict[str, Any] = {
        "command": "python -m benchmarks.density --quick",
        "started_at": 1_790_000_000.0,
        "duration_s": 60.0,
        "machine": {
            "cpus": 2,
            "cpu_model": "test CPU",
            "memory_gib": 8.0,
            "kernel": "6.0",
            "python": "3.11.7",
            "livekit-agents": "1.8.9",
            "livekit": "1.1.21",
            "openrtc-core": "0.1.0",
            "openrtc-testing": "0.1.0",
            "revision": "abc1234",
        },
        "settings": {
            "sizes": sorted({r["calls"] for r in runs}),
            "repeats": 1,
            "large_repeats": 1,
            "large_n": 200,
            "variants": list(dict.fromkeys(r["variant"] for r in runs)),
            "hold_s": 2.0,
            "pace": "human",
            "pause_s": [4.0, 10.0],
            "time_bound_s": 240.0,
            "memory_floor_mb": 2048.0,
            "quick": True,
        },
        "workload": {
            "caller_turns": ["a", "b", "c"],
            "reply": "word " * 15,
            "reply_words": 15,
            "first_token_delay_s": 0.15,
            "token_delay_s": 0.02,
        },
        "variants": {r["variant"]: r["label"] for r in runs},
        "runs": runs,
    }
    data.update(extra)
    return data


def all_variants(calls: int = 10) -> list[dict[str, Any]]:
    return [
        fake_run("A", calls, added=23.9),
        fake_run("B", calls, added=0.26),
        fake_run("C", calls, added=0.15),
        fake_run("D", calls, added=25.3),
    ]


# -- variants named in every table ----------------------------------------------------------------


def test_tables_name_each_variant_with_its_letter(tmp_path: Path) -> None:
    data = results(all_variants())
    console = render_console(data)
    page = render_markdown(data, [], tmp_path / "bm.md")
    for title in ("A livekit process", "B livekit thread", "C OpenRTC coroutine"):
        assert any(line.startswith(title) for line in console.splitlines()), console
        assert f"| {title} | ok ×1 |" in page  # the per-N table
        assert f"| {title} | " in page.split("### Targets")[0]  # the headline
    assert "| D OpenRTC process |" in page


def test_old_results_without_names_get_them_from_the_variants(tmp_path: Path) -> None:
    runs = all_variants()
    for run in runs:
        del run["name"]
    assert "B livekit thread" in render_console(results(runs))


# -- added PSS below the resolution ------------------------------------------------------------


def test_a_negative_added_pss_is_shown_as_below_resolution(tmp_path: Path) -> None:
    runs = [
        fake_run("A", 1, added=24.4, resolution=0.4),
        fake_run("C", 1, added=-1.59, resolution=0.4),
    ]
    data = results(runs)
    console = render_console(data)
    row = next(line for line in console.splitlines() if line.startswith("C OpenRTC"))
    assert "< resolution" in row
    assert "-1.59" not in row
    assert "24.4 MiB" in console
    page = render_markdown(data, [], tmp_path / "bm.md")
    assert "| C OpenRTC coroutine | ok ×1 | < resolution (0.40 MiB) |" in page
    assert "-1.59" not in page
    assert runs[1]["added_pss_per_session_mb"] == -1.59  # the raw figure stays in the JSON


def test_a_figure_smaller_than_the_idle_noise_over_n_is_below_resolution(
    tmp_path: Path,
) -> None:
    runs = [
        fake_run("C", 1, added=0.3, resolution=1.0),  # 0.3 < 1.0 / 1
        fake_run("C", 10, added=0.15, resolution=1.0),  # 0.15 > 1.0 / 10
    ]
    page = render_markdown(results(runs), [], tmp_path / "bm.md")
    assert "| C OpenRTC coroutine | ok ×1 | < resolution (1.00 MiB) |" in page
    assert "| C OpenRTC coroutine | ok ×1 | 0.15 MiB |" in page


def test_runs_without_idle_samples_use_the_fixed_floor(tmp_path: Path) -> None:
    below = fake_run("C", 1, added=PSS_FLOOR_MB / 2, resolution=None)
    above = fake_run("C", 10, added=PSS_FLOOR_MB / 2, resolution=None)
    console = render_console(results([below, above]))
    rows = [line for line in console.splitlines() if line.startswith("C OpenRTC")]
    assert "< resolution" in rows[0]
    assert "0.05 MiB" in rows[1]


def test_progress_line_shows_below_resolution() -> None:
    line = density._progress(fake_run("C", 1, added=-1.59, resolution=0.4))
    assert "< resolution" in line
    assert "-1.59" not in line
    assert line.startswith("[C OpenRTC coroutine N=1 r1]")


def test_memory_figures_keep_the_raw_figure_and_its_resolution() -> None:
    call = CallRecord(dispatched_at=0.0, started_at=10.0, duration_s=5.0, outcome="completed")
    samples = [PssSample(at=at, pss_mb=355.5, processes=1) for at in (11.0, 12.0, 13.0)]
    idle = [357.0, 357.2, 357.1, 357.1, 357.0]

    figures = memory_figures([call], samples, idle)

    assert figures["added_pss_per_session_mb"] == pytest.approx(-1.6)
    assert figures["pss_resolution_mb"] == pytest.approx(0.4)  # twice the idle spread
    assert figures["added_pss_resolution_mb"] == pytest.approx(0.4)
