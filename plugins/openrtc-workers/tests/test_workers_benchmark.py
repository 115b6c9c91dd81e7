"""``python -m benchmarks.workers`` runs end to end at a tiny size (figures not asserted:
they depend on the machine), and refuses bad arguments in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "benchmarks.workers", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_a_tiny_run_reports_memory_per_worker_and_a_restart(tmp_path: Path) -> None:
    done = bench("--counts", "1,2", "--kills", "1", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((tmp_path / "workers.json").read_text())
    one, two = figures["memory"]
    assert one["workers"] == 1 and len(one["worker_pss_mib"]) == 1
    assert two["workers"] == 2 and len(two["worker_pss_mib"]) == 2
    assert two["supervisor_pss_mib"] > 0
    assert figures["restarts"]["kills"] == 1 and figures["restarts"]["exit_status"] == 0
    assert "SIGKILL to the replacement registered" in done.stdout


def test_bad_counts_are_one_error_line() -> None:
    done = bench("--counts", "0,2")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --counts '0,2': use worker counts of at least 1"
