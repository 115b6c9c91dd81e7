"""``python -m benchmarks.deploy`` runs end to end at a tiny size: 6 calls, 2 deploys, 1 worker.

A real controller, real generations, ``openrtc deploy`` as a user runs it. That it reports
every figure, drops no call and serves each call with the right code is checked; timings
depend on the machine and are never asserted.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
TINY = ("--calls", "6", "--deploys", "2", "--workers", "1", "--hold", "3")
SPREAD = {"n", "p50", "p95", "max"}


def bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "benchmarks.deploy", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_a_tiny_run_reports_every_figure_and_drops_no_call(tmp_path: Path) -> None:
    done = bench(*TINY, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "calls dropped: 0" in done.stdout and "openrtc deploy returned" in done.stdout

    data = json.loads((tmp_path / "deploy.json").read_text())
    assert data["command"] == shlex.join(
        ["python", "-m", "benchmarks.deploy", *TINY, "--out", str(tmp_path)]
    )
    assert data["versions"]["openrtc-deploy"] != "not installed"
    assert data["machine"]["cpus"] and data["machine"]["loadavg_1m"]["mean"] is not None
    assert data["calls_dropped"] == 0 and data["calls_cut"] == 0
    assert data["calls_misserved"] == 0 and data["deploys_failed"] == 0
    assert data["controller_exit_status"] == 0
    for key in ("returned_s", "reached_controller_s", "first_call_on_new_s", "drain_s"):
        assert set(data[key]) == SPREAD and data[key]["n"] == 2, key
    assert isinstance(data["longest_no_taker_ms"], float)

    first, second = data["deploys"]
    assert (first["version"], second["version"]) == ("bench-1", "bench-2")
    for deploy in (first, second):
        assert deploy["ok"] and deploy["live_calls_at_deploy"] >= 1, deploy
        # The new generation took calls, and the old one had calls to drain.
        assert isinstance(deploy["first_call_on_new_s"], float), deploy
        assert deploy["drained_calls"] >= 1 and deploy["cut"] == [], deploy
        assert any("is serving" in line for line in deploy["said"]), deploy["said"]
        # What the loopback server saw of each worker: the old one ends the window full.
        sides = [w["generation"] for w in deploy["workers"]]
        assert sides.count("old") == 1 and sides.count("new") == 1, deploy["workers"]
        old = next(w for w in deploy["workers"] if w["generation"] == "old")
        assert old["status"][-1][1] == "WS_FULL", old
        assert isinstance(deploy["new_workers_full_s"], float)
    # Every version served calls, each with its own code (checked per call by the run).
    assert set(data["calls_served_by_version"]) == {"bench-0", "bench-1", "bench-2"}
    assert data["generations_holding_calls_max"] <= 2
    assert isinstance(data["full_notices"], list)

    page = (tmp_path / "deploy.md").read_text()
    assert page.startswith("# Deploys under load") and "| 2 | bench-2 |" in page


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--calls", "0"), "argument --calls"),
        (("--hold", "nan"), "argument --hold"),
        (("--out", "/proc/version/deploy"), "argument --out"),
    ],
)
def test_a_bad_argument_stops_it_with_one_error_line(args: tuple[str, ...], named: str) -> None:
    done = bench(*args, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {named}"), done.stderr
