"""max_sessions counts calls: a job whose call ended, while it shuts down, holds no slot."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from e2e_pools import ONE_SLOT_POOL
from livekit.protocol import agent as agent_pb

from openrtc_core.models import SessionState
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.worker import running_worker, simulate_call

pytestmark = pytest.mark.asyncio


def state(job_id: str) -> SessionState | None:
    live = ONE_SLOT_POOL.sessions.get(job_id)
    return live.state if live is not None else None


async def until(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_call_that_ended_frees_its_slot_while_its_job_shuts_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with (
        LoopbackDispatchServer() as lk,
        running_worker(ONE_SLOT_POOL, lk) as server,
    ):
        first, report = await simulate_call(lk, "linger-1", turns=["hi"], agent_name="one-slot")
        assert report["outcome"] == "completed"
        # The caller hangs up right after its report: the call is then over (ending, or
        # already ended for the registry) ...
        await until(lambda: state(first.job_id) in (SessionState.ENDING, None))
        # ... while its job is still shutting down (3 s) ...
        assert first.job_id in {job.job.id for job in server.active_jobs}
        # ... and the one slot is free: the next call is accepted at its first offer.
        with caplog.at_level(logging.INFO, logger="openrtc"):
            second, report = await simulate_call(
                lk, "linger-2", turns=["hi"], agent_name="one-slot"
            )
        assert report["outcome"] == "completed"
        assert (second.offers, second.refused, second.unavailable) == (1, 0, 0)
        assert first.job_id in {job.job.id for job in server.active_jobs}
        assert "max_sessions" not in caplog.text
        assert await first.wait_for_status() == agent_pb.JS_SUCCESS
