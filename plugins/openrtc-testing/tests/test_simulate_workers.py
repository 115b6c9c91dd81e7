"""``openrtc simulate --workers N``: the calls served by the real supervisor's workers.

The end-to-end test needs openrtc-workers (the supervisor); without it the command's error
says what to install, which is tested either way (the plugin disabled stands for missing).
The rest reads made-up figures and log lines: no process runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from livekit.protocol import agent as agent_pb

from openrtc_core import exit_reason
from openrtc_testing.dispatch import Dispatch
from openrtc_testing.simulate import CallResult, SimulationResult, parse_workers
from openrtc_testing.supervised import split_options
from openrtc_testing.supervising import (
    SUPERVISED_MODULE,
    LogRefusals,
    SupervisorSpec,
    error_line,
    log_tail,
    readable,
)

ROOT = Path(__file__).resolve().parents[3]
HAS_SUPERVISOR = importlib.util.find_spec("openrtc_workers") is not None


def simulate_command(*args: str) -> list[str]:
    """``openrtc simulate examples/pool.py ARGS``, run from the repository's root."""
    return [sys.executable, "-m", "openrtc_core", "simulate", "examples/pool.py", *args]


def simulate_env(env: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "COLUMNS": "80", **(env or {})}


def simulate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        simulate_command(*args),
        cwd=ROOT,
        env=simulate_env(env),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.skipif(not HAS_SUPERVISOR, reason="needs openrtc-workers (the supervisor)")
def test_calls_are_served_by_every_supervised_worker(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    done = simulate("--workers", "2", "--calls", "8", "--turns", "2", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert figures["call_count"] == len(figures["calls"]) == 8
    assert [call["outcome"] for call in figures["calls"]] == ["completed"] * 8
    assert {call["worker"] for call in figures["calls"]} == {1, 2}
    assert list(figures["workers"]) == ["1", "2"]
    assert figures["supervisor_error"] is None
    assert sum(w["calls"] for w in figures["workers"].values()) == 8
    for worker in figures["workers"].values():
        assert worker["completed"] == worker["calls"] >= 1
        assert worker["failed"] == 0
        assert worker["turns"] == 2 * worker["calls"]
        assert len(worker["pids"]) == 1
    pids = {w["pids"][0] for w in figures["workers"].values()}
    assert len(pids) == 2
    assert figures["loop_lag_p99_s"] is None  # the workers' loops are not this process's
    # The per-worker table fits 80 columns, and nothing of the workers' logs is printed.
    lines = done.stdout.splitlines()
    assert "per worker" in done.stdout
    assert all(len(line) <= 80 for line in lines), done.stdout
    assert '"level"' not in done.stdout + done.stderr


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", ""])
def test_a_bad_workers_value_is_one_error_line_naming_the_option(value: str) -> None:
    done = simulate("--workers", value, "--calls", "1")
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0] == f"error: --workers {value!r}: give a number of worker processes, 1 or more"


def test_without_a_supervisor_the_error_says_which_plugin_provides_it() -> None:
    # Disabled by name, the supervisor is missing: the error names the plugin and why.
    disabled = {"OPENRTC_DISABLE_PLUGINS": "workers,deploy"}
    done = simulate("--workers", "2", "--calls", "1", env=disabled)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert (
        "--workers is provided by openrtc-workers (plugin 'workers'), which is disabled"
        in (lines[0])
    )
    assert "exit status 1" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr


def test_parse_workers() -> None:
    assert parse_workers(None) == 1
    assert parse_workers("1") == 1
    assert parse_workers(" 3 ") == 3
    with pytest.raises(ValueError, match="--workers '0'"):
        parse_workers("0")


def test_the_supervisor_is_started_with_the_options_the_pool_was_loaded_with() -> None:
    spec = SupervisorSpec(
        target="app.py", workers=3, isolation="process", tenants="t.toml", reload=True
    )
    assert spec.argv() == [
        sys.executable,
        "-m",
        SUPERVISED_MODULE,
        "app.py",
        "--isolation",
        "process",
        "--tenants",
        "t.toml",
        "--workers",
        "3",
        "--reload",
    ]
    assert SupervisorSpec(target="app.py", workers=2).argv()[3:] == ["app.py", "--workers", "2"]
    # ...and supervised.py takes the loading options out before the rest goes to start,
    # whose run options (--tenants, declared by a tenancy plugin) take theirs.
    loading = split_options(["--tenants=t.toml", "--workers", "3", "--isolation", "process"])
    assert (loading.isolation, loading.entry_points) == ("process", False)
    assert loading.rest == ("--tenants=t.toml", "--workers", "3")
    assert split_options(["--entry-points", "--reload"]).entry_points
    with pytest.raises(SystemExit, match="--isolation needs a value"):
        split_options(["--isolation"])


def call(worker: int | None, pid: int | None, ok: bool = True) -> CallResult:
    return CallResult(
        "support",
        "room",
        ok=ok,
        accepted=worker is not None,
        turn_latencies_s=[0.01, 0.03] if worker is not None else [],
        worker=worker,
        worker_pid=pid,
    )


def figures(calls: list[CallResult], workers: int) -> SimulationResult:
    return SimulationResult(
        calls=calls,
        wall_s=1.0,
        baseline_pss_mb=0.0,
        peak_pss_mb=0.0,
        loop_lag_p99_s=None,
        isolation="coroutine",
        swapped={},
        workers=workers,
    )


def test_per_worker_figures_name_every_worker_and_its_pids() -> None:
    calls = [call(1, 100), call(1, 100, ok=False), call(1, 150), call(3, 300), call(None, None)]
    per_worker = figures(calls, 3).per_worker()
    assert list(per_worker) == ["1", "2", "3"]
    assert per_worker["1"]["pids"] == [100, 150]  # replaced once by the supervisor
    assert (per_worker["1"]["calls"], per_worker["1"]["completed"]) == (3, 2)
    assert per_worker["1"]["failed"] == 1
    assert per_worker["1"]["turns"] == 6
    assert per_worker["2"] == {
        "pids": [],
        "calls": 0,
        "completed": 0,
        "failed": 0,
        "lost": 0,
        "turns": 0,
        "turn_latency_p50_s": None,
        "turn_latency_p95_s": None,
    }
    as_json = figures(calls, 3).as_dict()
    assert [c["worker"] for c in as_json["calls"]] == [1, 1, 1, 3, None]
    # One worker in this process: no worker figures, as before.
    plain = figures([call(None, None)], 1).as_dict()
    assert "workers" not in plain
    assert "worker" not in plain["calls"][0]


def test_log_lines_read_back_for_a_person(tmp_path: Path) -> None:
    log = tmp_path / "supervisor.log"
    record = {
        "message": "worker 1/2 (pid 7) died unexpectedly (exit status 3)",
        "level": "ERROR",
        "name": "openrtc.workers",
        "pid": 5,
    }
    in_worker = {"message": "boom", "level": "ERROR", "name": "x", "worker": "2/2"}
    in_worker["exc_info"] = 'Traceback (most recent call last):\n  ...\nValueError: "bad"'
    log.write_text(
        "error: an earlier one\n"
        + json.dumps(record)
        + "\n\n"
        + json.dumps(in_worker)
        + "\nerror: no supervisor 'workers' is installed; install it: pip install x\n"
    )
    assert log_tail(log, lines=3) == [
        "ERROR openrtc.workers: worker 1/2 (pid 7) died unexpectedly (exit status 3)",
        'ERROR x [worker 2/2]: boom (ValueError: "bad")',
        "error: no supervisor 'workers' is installed; install it: pip install x",
    ]
    assert error_line(log) == "no supervisor 'workers' is installed; install it: pip install x"
    assert error_line(tmp_path / "missing.log") is None
    assert readable("not json {") == "not json {"
    assert len(readable("x" * 1000)) == 300
    # The supervisor's return code, as asyncio's subprocess gives it.
    assert exit_reason(1) == "exit status 1"
    assert exit_reason(-9) == "killed by SIGKILL"


def test_refusal_reasons_are_read_from_the_workers_log(tmp_path: Path) -> None:
    log = tmp_path / "supervisor.log"
    refusals = LogRefusals(log)

    def rejecting(job: str, reason: str) -> str:
        message = f"rejecting job {job} in room sim-1: {reason}"
        return json.dumps({"message": message, "name": "openrtc.worker", "job_id": job}) + "\n"

    def refused(job: str) -> Dispatch:
        d = Dispatch(job=agent_pb.Job(id=job))
        d.rejected_by.append(("AW_1", False))
        return d

    log.write_text(rejecting("AJ_1", "refused by tenancy: unknown tenant 'x'"))
    with log.open("a") as f:
        f.write(rejecting("AJ_2", "the worker is at max_sessions=1")[:30])  # half written
    assert refusals.stated(refused("AJ_1")) == "unknown tenant 'x'"
    assert refusals.stated(refused("AJ_2")) == ""
    with log.open("a") as f:
        f.write(rejecting("AJ_2", "the worker is at max_sessions=1")[30:])
    assert refusals.stated(refused("AJ_2")) == "the worker is at max_sessions=1"
    assert refusals.stated(Dispatch(job=agent_pb.Job(id="AJ_3"))) == ""  # not refused
