"""Tasks that will not stop: named with their session (or as unattributed), and the worker's
close never hangs on them. Through ``openrtc start`` in a subprocess (livekit's own runner,
which cancels every task left at close and waited for them without a limit)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from openrtc_core.isolation.coroutine.leftovers import STUCK_EXIT_STATUS, UNATTRIBUTED
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.fleet import started_fleet
from openrtc_testing.worker import simulate_call

pytestmark = pytest.mark.asyncio

TESTS = Path(__file__).resolve().parent
EXIT_TIMEOUT_S = 120.0
"""Far more than the worker needs to exit (5 s of grace per stuck task set, a drain with no
call live); without the fix it never exits."""


NO_SUPERVISOR = {
    # No supervisor of either kind: the worker is the process itself.
    "OPENRTC_DISABLE_PLUGINS": "deploy,workers",
    "OPENRTC_SUPERVISOR": "",
}


def logged(log: Path) -> str:
    return log.read_text(errors="replace")


async def test_close_names_tasks_that_will_not_stop_and_does_not_hang(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    async with (
        LoopbackDispatchServer() as lk,
        started_fleet(lk, tmp_path, env=NO_SUPERVISOR, pythonpath=[TESTS]) as worker,
    ):
        # ``openrtc start leak_pools:pool`` with simulation on, as one worker.
        proc = await worker.start(
            sys.executable, "-m", "openrtc_testing.supervised", "leak_pools:pool", log=log
        )
        await worker.registered(timeout=120)
        swallower, report = await simulate_call(lk, "swallower-1", turns=["hi"])
        assert report["outcome"] == "completed"
        ghost, report = await simulate_call(lk, "ghost-1", turns=["hi"])
        assert report["outcome"] == "completed"
        # The session's own leftover is cancelled after its call, and named when it goes on.
        await worker.until(lambda: "swallows-cancel" in logged(log), 60, "swallows-cancel logged")
        proc.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(proc.wait(), EXIT_TIMEOUT_S)
    output = logged(log)
    assert status == STUCK_EXIT_STATUS, output[-4000:]
    lines = output.splitlines()
    named = [line for line in lines if "task swallows-cancel (swallow_cancel at" in line]
    assert named and all(f"agent swallower (job {swallower.job_id})" in n for n in named), lines
    assert any("leak_pools.py:" in line for line in named), named
    (ghost_line,) = [line for line in lines if "task ghost-task (swallow_cancel at" in line]
    assert UNATTRIBUTED in ghost_line and ghost.job_id not in ghost_line
    assert any("will not stop" in line and "exiting now" in line for line in lines), lines
