"""A call its job process was killed for (its memory limit) is reported as such: to LiveKit,
in the job's status, and in ``openrtc simulate``'s figures, as soon as the job is gone."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from livekit.protocol import agent
from report_pools import EXIT_POOL, MEMORY_LIMIT_MB, MEMORY_POOL

from openrtc_testing.dispatch import LoopbackDispatchServer
from openrtc_testing.worker import dispatch_until_accepted, running_worker, simulated_call_metadata

ROOT = Path(__file__).resolve().parent.parent
KILLED_FOR_MEMORY = "job process killed for memory: it reached "
LIMIT = f"over job_memory_limit_mb={MEMORY_LIMIT_MB}"
PYTHONPATH = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]


def reached_mb(error: str) -> int:
    """The size a report says the job process reached, in MB."""
    assert error.startswith(KILLED_FOR_MEMORY) and error.endswith(LIMIT), error
    return int(error[len(KILLED_FOR_MEMORY) :].split(" MB", 1)[0])


class _KillTimes(logging.Handler):
    """When livekit decided to kill a job process for its memory (its error line, 1 s before
    the kill: a stack dump request, then SIGUSR1), for the figure printed."""

    def __init__(self) -> None:
        super().__init__()
        self.at: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "exceeded memory limit" in record.getMessage():
            self.at.append(record.created)


async def test_a_job_killed_for_its_memory_is_reported_failed_with_limit_and_size() -> None:
    # Before: livekit killed the process and sent JS_FAILED with error "", nothing more.
    kills = _KillTimes()
    logging.getLogger("livekit.agents").addHandler(kills)
    try:
        async with LoopbackDispatchServer() as lk, running_worker(MEMORY_POOL, lk):
            metadata = simulated_call_metadata("hog", turns=["hi"], hold_s=120)
            d = await dispatch_until_accepted(lk, "hog-room", job_metadata=metadata)
            assert d.accepted, d
            assert await d.wait_for_status(timeout=90) == agent.JS_FAILED
            reported_at = time.time()
    finally:
        logging.getLogger("livekit.agents").removeHandler(kills)
    assert reached_mb(d.error) > MEMORY_LIMIT_MB
    assert kills.at, "livekit never said it killed the job process"
    print(f"livekit's kill decision to job status: {reported_at - kills.at[-1]:.2f} s")


async def test_a_job_process_that_exits_on_its_own_is_reported_with_its_exit_status() -> None:
    # Before: JS_FAILED with error "", and no report of the call.
    async with LoopbackDispatchServer() as lk, running_worker(EXIT_POOL, lk):
        metadata = simulated_call_metadata("exits", turns=["hi"])
        d = await dispatch_until_accepted(lk, "exit-room", job_metadata=metadata)
        assert d.accepted, d
        assert await d.wait_for_status(timeout=90) == agent.JS_FAILED
        assert await lk.wait_for_end(d.job_id, timeout=30) is None  # no report came
    assert d.error == "job process ended (exit status 3)"


def test_simulate_reports_a_call_killed_for_its_memory(tmp_path: Path) -> None:
    # Before: simulate waited for the call's report the whole call timeout (100 s here) and
    # said "TimeoutError: no report".
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "-m", "openrtc_core", "simulate", "report_pools:MEMORY_POOL",
         "--calls", "1", "--turns", "1", "--hold", "120", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), *PYTHONPATH])},
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    (call,) = figures["calls"]
    assert call["outcome"] == "failed", call
    assert call["job_id"].startswith("AJ_"), call
    assert reached_mb(call["error"]) > MEMORY_LIMIT_MB
    assert figures["admission"]["never_accepted"] == 0
    assert "killed for memory" in done.stdout
    assert "TimeoutError" not in done.stdout
