"""The hot-reload benchmark runs end to end at a tiny size: 4 calls, 1 save.

Only that it runs, reports every figure and drops no call is checked; timings depend on the
machine and are never asserted.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ("--calls", "4", "--saves", "1", "--turns", "12", "--pause", "0.3", "--interval", "1")
SPREAD = {"n", "p50", "p99", "max"}


def bench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "benchmarks.reload", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_a_tiny_run_reports_every_figure_and_drops_no_call(tmp_path: Path) -> None:
    results = tmp_path / "reload.json"
    done = bench(*TINY, "--json", str(results))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "calls dropped" in done.stdout and "turn during swaps" in done.stdout
    assert f"wrote {results}" in done.stderr

    data = json.loads(results.read_text())
    command = ["python", "-m", "benchmarks.reload", *TINY, "--json", str(results)]
    assert data["command"] == shlex.join(command)
    assert data["machine"]["revision"] and data["machine"]["openrtc-reload"] != "not installed"
    assert data["settings"]["calls"] == 4 and data["settings"]["saves"] == 1
    assert data["calls_dropped"] == 0
    assert data["calls_with_versions_backwards"] == []
    for key in ("applied_ms", "reload_ms", "switched_ms", "turn_ms_during_swaps"):
        assert set(data[key]) == SPREAD, key
    (save,) = data["saves"]
    assert isinstance(save["applied_ms"], float) and isinstance(save["reload_ms"], float)
    assert isinstance(save["switched"]["max"], float)
    assert save["job_procs_applied_ms"] == []  # coroutine isolation: no job process
    # Every call was live at the save, and each switched to the saved code.
    assert save["live_sessions"] == save["switched"]["n"] == 4
    assert data["turns_without_stamps"] == 0
    turns = data["turn_ms_during_swaps"]["n"] + data["turn_ms_otherwise"]["n"]
    assert turns == 4 * 12
    assert data["turn_fields"] == ["latency_ms", "version", "start_s", "end_s", "during_swap"]
    for call in data["calls"]:
        assert call["outcome"] == "completed", call
        versions = [turn[1] for turn in call["turns"]]
        assert versions[-1] == save["version"] and versions[0] != save["version"], versions
    kinds = [event["kind"] for event in data["events"]]
    assert kinds.count("applied") == 1 and kinds.count("switched") == 4
    # Only support.py was saved: the sales agent's code did not change.
    assert [e["agents"] for e in data["events"] if e["kind"] == "applied"] == [["support"]]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--calls", "0"), "argument --calls"),
        (("--interval", "0.1"), "argument --interval"),
        (("--turns", "3", "--pause", "0.5"), "argument --turns"),
        (("--json", "/nonexistent-dir/out.json"), "argument --json"),
    ],
)
def test_a_bad_argument_stops_it_with_one_error_line(args: tuple[str, ...], named: str) -> None:
    done = bench(*args, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {named}"), done.stderr
