"""A drain that times out ends the calls it cuts in the open: LiveKit hears of each."""

from __future__ import annotations

import asyncio
import logging

import pytest
from e2e_pools import make_coroutine_pool
from livekit.protocol import agent as agent_pb

from openrtc_core.cli import exit_status
from openrtc_core.server import PoolServer
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.worker import dispatch_until_accepted, running_worker, simulated_call_metadata

pytestmark = pytest.mark.asyncio

DRAIN_POOL = make_coroutine_pool(max_sessions=20, agent_name="drain")


async def test_calls_cut_by_a_drain_timeout_are_reported_ended_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    held = simulated_call_metadata(turns=["hi"], hold_s=3600)
    async with LoopbackDispatchServer() as lk, running_worker(DRAIN_POOL, lk) as server:
        calls = await asyncio.gather(
            *(
                dispatch_until_accepted(lk, f"support-{i}", agent_name="drain", job_metadata=held)
                for i in range(5)
            )
        )
        assert all(d.accepted for d in calls)
        assert isinstance(server, PoolServer)
        for d in calls:
            await d.wait_for_status(agent_pb.JS_RUNNING)
        with caplog.at_level(logging.ERROR, logger="openrtc.worker"), pytest.raises(TimeoutError):
            await server.drain(timeout=1)
        # Reported to the server before the worker let go of its connection.
        statuses = [await d.wait_for_status(timeout=5) for d in calls]
        assert set(statuses) <= {agent_pb.JS_SUCCESS, agent_pb.JS_FAILED}
    named = [r.getMessage() for r in caplog.records if "drain timed out" in r.getMessage()]
    assert len(named) == 1, named
    assert "5 call(s)" in named[0]
    assert all(d.job_id in named[0] for d in calls)
    assert sorted(job for job, _ in server.cut_calls) == sorted(d.job_id for d in calls)
    # ... and `openrtc start` then exits non-zero where livekit would exit 0.
    assert exit_status(server, 0) == 1
    assert exit_status(server, 2) == 2
