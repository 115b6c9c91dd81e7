"""The density benchmark runs end to end: quick mode, OpenRTC's coroutine pool, N = 1 and 2;
and E, that pool under openrtc-workers' supervisor (one worker per core), at N = 4.

Only that it runs and reports is checked; timings depend on the machine and are never asserted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("added_pss_per_session_mb", "idle_pss_mb", "start_p50_s", "turn_p95_s", "cpu_per_turn_s")


def quick_density(tmp_path: Path, *args: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``python -m benchmarks.density --quick ARGS``, checked to exit 0; where its JSON went."""
    results = tmp_path / "density.json"
    command = [sys.executable, "-m", "benchmarks.density", "--quick", *args]
    command += ["--json", str(results), "--logs", str(tmp_path / "logs")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return results, done


def test_quick_density_run_reports_figures_for_each_size(tmp_path: Path) -> None:
    results, done = quick_density(tmp_path, "--variants", "C", "--sizes", "1,2")

    assert "C OpenRTC coroutine" in done.stdout  # the table names the variant
    assert f"wrote {results}" in done.stderr

    data = json.loads(results.read_text())
    assert data["complete"] is True
    runs = {run["calls"]: run for run in data["runs"] if run["variant"] == "C"}
    assert sorted(runs) == [1, 2]
    for calls, run in runs.items():
        assert run["status"] == "ok", (run["note"], run.get("log_tail"))
        assert run["failures"] == 0
        assert run["completed"] == calls
        assert run["turns"] == run["expected_turns"]
        missing = [name for name in FIGURES if not isinstance(run.get(name), float)]
        assert not missing, f"N={calls}: no figure for {missing}"
        assert run["loop_lag"]["samples"] > 0
        assert "series" not in run["loop_lag"]  # cut into phases by the driver, then dropped
        assert run["loop_lag_all_live"]["live_sessions"] == calls
        assert run["loop_lag_all_live"]["samples"] > 0
        assert run["pause_s"] == data["settings"]["pause_s"] == [4.0, 10.0]
        assert len(run["idle_pss_samples_mb"]) == 5
        # Raw, whatever its size; the tables show "< resolution" below this.
        assert run["added_pss_resolution_mb"] == run["pss_resolution_mb"] / calls > 0


def test_quick_density_run_of_e_measures_every_worker(tmp_path: Path) -> None:
    """E: the real supervisor forks one worker per usable core; each measures its own loop."""
    pytest.importorskip("openrtc_workers", reason="E runs openrtc-workers' supervisor")
    results, done = quick_density(tmp_path, "--pace", "burst", "--variants", "E", "--sizes", "4")
    assert "E OpenRTC workers" in done.stdout
    assert "completed turns per second" in done.stdout

    data = json.loads(results.read_text())
    (run,) = data["runs"]
    assert run["status"] == "ok", (run["note"], run.get("log_tail"))
    assert run["completed"] == 4
    assert run["turns"] == run["expected_turns"]
    assert isinstance(run["turns_per_s"], float)
    assert run["worker_exit_code"] == 0  # SIGTERM drained the workers, the supervisor exited 0
    cores = len(os.sched_getaffinity(0))
    workers = run["workers"]
    assert [w["worker"] for w in workers] == list(range(1, cores + 1))
    assert len({w["pid"] for w in workers} | {run["supervisor"]["pid"]}) == cores + 1
    assert sum(w["calls"] for w in workers) == 4
    for worker in workers:
        assert worker["loop_lag"]["samples"] > 0
        assert "series" not in worker["loop_lag"]
        assert worker["loop_lag_all_live"]["samples"] > 0
        assert worker["idle_pss_mb"] > 0
        assert worker["live_pss_mb"] > 0
    assert run["supervisor"]["idle_pss_mb"] > 0
    worst = max(w["loop_lag"]["p99_s"] for w in workers)
    assert run["loop_lag"]["p99_s"] == worst
    assert run["processes_at_peak"] >= cores + 1


def test_quick_voice_density_run_hears_every_turn_on_both_sides(
    tmp_path: Path, espeak_ng: str
) -> None:
    """Voice mode: a plain livekit worker (A) and OpenRTC's pool (C) each run one spoken
    call through the real VAD and turn detector; the page gets a voice section."""
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nthe text-mode page\n")
    results, done = quick_density(
        tmp_path, "--mode", "voice", "--variants", "A,C", "--sizes", "1", "--out", str(page)
    )
    assert "heard p95" in done.stdout

    data = json.loads(results.read_text())
    assert data["settings"]["mode"] == "voice"
    for run in data["runs"]:
        assert run["status"] == "ok", (run["variant"], run["note"], run.get("log_tail"))
        assert run["completed"] == 1
        assert run["turns"] == run["expected_turns"] == 3
        for figure in ("heard_p50_s", "heard_p95_s", "cpu_per_call_s", "vad_inference_per_call_s"):
            assert isinstance(run[figure], float) and run[figure] > 0, (run["variant"], figure)
        assert isinstance(run["frames_dropped"], int)
    written = page.read_text()
    assert written.startswith("# Benchmarks\n\nthe text-mode page\n")
    assert "## Voice mode" in written


def test_voice_memory_attributes_a_live_voice_sessions_memory(espeak_ng: str) -> None:
    """benchmarks.voice_memory: two live voice sessions in one process, their PSS, threads
    and the Python allocation sites that hold the most, by file and line."""
    command = [sys.executable, "-m", "benchmarks.voice_memory", "--calls", "2"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 live voice sessions in one process" in done.stdout
    assert "MiB per session, of which Python-traced" in done.stdout
    sites = [line for line in done.stdout.splitlines() if " KiB " in line]
    assert sites and all(line.rstrip()[-1].isdigit() for line in sites)  # ...py:LINE
    assert "VAD executor: shared (as OpenRTC's shared VAD)" in done.stdout
    flushed = re.search(
        r"\(60 s speech buffer .*\): ([0-9.]+) MiB PSS added per stream", done.stdout
    )
    # livekit zeroes the whole 1.83-MiB buffer on a flush: most of it becomes resident.
    assert flushed and float(flushed.group(1)) > 1.0, done.stdout
