"""The tenancy admission benchmark runs end to end at a tiny size, against a real Redis.

Only that it runs, reports every figure and that every cap admitted exactly what it should is
checked; timings depend on the machine and are never asserted. Redis: ``OPENRTC_TEST_REDIS_URL``
when set, else the benchmark's own private redis-server; without redis-server the run is
skipped, unless ``OPENRTC_REQUIRE_REDIS=1`` (CI), when it fails.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = (
    *("--requests", "20", "--calls", "3", "--warmup", "1"),
    *("--burst", "8", "--cap", "3", "--hold", "0.5"),
)
SPREAD = {"n", "p50", "p99", "max", "samples_ms"}
MISSING = "redis-server is not installed: apt install redis-server (CI installs it)"


def bench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "benchmarks.tenancy", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def redis_args() -> tuple[str, ...]:
    """``--redis-url`` for CI's server, none for a private one; skip (or fail) without one."""
    configured = os.environ.get("OPENRTC_TEST_REDIS_URL")
    if configured:
        return ("--redis-url", configured)
    if shutil.which("redis-server") is None:
        if os.environ.get("OPENRTC_REQUIRE_REDIS") == "1":
            pytest.fail(MISSING, pytrace=False)
        pytest.skip(MISSING)
    return ()


def test_a_tiny_run_reports_every_figure_and_every_cap_is_exact(tmp_path: Path) -> None:
    results = tmp_path / "tenancy.json"
    given = redis_args()
    done = bench(*TINY, *given, "--json", str(results))
    assert done.returncode == 0, done.stderr[-3000:]
    for label in ("in-process caps", "Redis fleet caps", "no tenancy", "FleetSlots.take"):
        assert label in done.stdout, label
    assert f"wrote {results}" in done.stderr
    if not given:
        assert "started a private redis-server" in done.stderr

    data = json.loads(results.read_text())
    if not given:
        command = ["python", "-m", "benchmarks.tenancy", *TINY, "--json", str(results)]
        assert data["command"] == shlex.join(command)
    assert data["machine"]["revision"] and data["machine"]["openrtc-tenancy"] != "not installed"
    assert data["redis"]["private"] is not bool(given) and data["redis"]["version"]
    assert data["settings"]["requests"] == 20 and data["settings"]["cap"] == 3
    assert set(data["direct"]) == {"in-process caps", "Redis fleet caps", "Redis PING (for scale)"}
    assert set(data["end_to_end"]) == {"no tenancy", "in-process caps", "Redis fleet caps"}
    for figures, n in ((data["direct"], 20), (data["end_to_end"], 3)):
        for label, f in figures.items():
            assert set(f) == SPREAD and f["n"] == n == len(f["samples_ms"]), label
            assert all(isinstance(v, float) and v > 0 for v in f["samples_ms"]), label
    assert set(data["end_to_end_p50_added_ms"]) == {"in-process caps", "Redis fleet caps"}
    # The plain worker really ran without the tenancy plugin, the other with it.
    assert not any("tenancy" in name for name in data["plugins"]["no tenancy"])
    assert "tenancy" in data["plugins"]["with tenancy"]

    local, fleet, one, three = data["exact_caps"]
    for cap in (local, fleet, one, three):
        assert cap["requests"] == 8 and cap["admitted"] == cap["expected"] == 3, cap
        assert cap["refused"] == 5, cap
    # The per-worker cap lets another worker try; a full fleet ends the dispatch.
    assert local["refused_terminate"] == 0 and fleet["refused_terminate"] == 5
    assert local["refused_by_openrtc"] == fleet["refused_by_openrtc"] == 5
    assert local["refused_unanswered"] == fleet["refused_unanswered"] == 0
    assert one["live_after"] == three["live_after"] == 3
    assert data["caps_wrong"] == []
    assert data["refusals_logged"] == 10


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--cap", "0"), "argument --cap"),
        (("--hold", "0.1"), "argument --hold"),
        (("--warmup", "-1"), "argument --warmup"),
        (("--json", "/nonexistent-dir/out.json"), "argument --json"),
        (("--redis-url", "http://127.0.0.1:6379/0"), "argument --redis-url"),
        (("--redis-url", "redis://127.0.0.1:1/0"), "argument --redis-url"),
    ],
)
def test_a_bad_argument_stops_it_with_one_error_line(args: tuple[str, ...], named: str) -> None:
    done = bench(*args, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {named}"), done.stderr


def test_a_redis_password_never_reaches_the_terminal() -> None:
    done = bench("--redis-url", "redis://:hunter2-secret@127.0.0.1:1/0", timeout=60)
    assert done.returncode == 2
    assert "hunter2-secret" not in done.stderr + done.stdout
    assert "redis://:***@127.0.0.1:1/0" in done.stderr
