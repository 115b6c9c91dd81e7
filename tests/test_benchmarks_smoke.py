"""The density benchmark runs end to end: quick mode, OpenRTC's coroutine pool, N = 1 and 2.

Only that it runs and reports is checked; timings depend on the machine and are never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("added_pss_per_session_mb", "idle_pss_mb", "start_p50_s", "turn_p95_s", "cpu_per_turn_s")


def test_quick_density_run_reports_figures_for_each_size(tmp_path: Path) -> None:
    results = tmp_path / "density.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.density",
        "--quick",
        "--variants",
        "C",
        "--sizes",
        "1,2",
        "--json",
        str(results),
        "--logs",
        str(tmp_path / "logs"),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

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
