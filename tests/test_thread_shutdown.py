"""A worker with thread isolation stops even while an idle runner is still prewarming.

With idle runners kept warm (``start``'s default), each call that takes one starts the
prewarm of its replacement. livekit's thread runner, closed during that prewarm, waited
forever for a message nobody would read, and the worker never exited on SIGTERM (see
``install_runner_fixes`` in ``openrtc_core/_livekit/jobs.py``).
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from e2e_pools import POOL_LLM, SupportAgent
from livekit.agents import JobProcess

from openrtc_core import AgentPool, PoolView, hookimpl
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.worker import running_worker, simulated_call_metadata

pytestmark = pytest.mark.asyncio

CLOSE_WITHIN_S = 30.0


class GatedPrewarm:
    """Every runner's prewarm waits for the gate (at most 10 s), once armed."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.gate = threading.Event()

    @hookimpl
    def openrtc_prewarm(self, proc: JobProcess, pool: PoolView) -> None:
        if self.armed:
            self.entered.set()
            self.gate.wait(10)


async def test_a_worker_closes_while_a_runner_prewarms() -> None:
    gated = GatedPrewarm()
    pool = AgentPool(llm=POOL_LLM, vad=None, isolation="thread", plugins=[gated])
    pool.add("support", SupportAgent, default=True)
    async with (
        LoopbackDispatchServer() as lk,
        running_worker(pool, lk, num_idle_processes=1) as server,
    ):
        gated.armed = True  # the idle runner is ready; its replacement will wait
        call = await lk.dispatch("room-1", job_metadata=simulated_call_metadata(turns=["hi"]))
        assert call.accepted, call.error
        loop = asyncio.get_running_loop()
        prewarming = await loop.run_in_executor(None, gated.entered.wait, 10)
        assert prewarming, "no replacement runner started its prewarm"
        # The runner finishes its prewarm only after the worker has begun to close.
        loop.call_later(0.5, gated.gate.set)
        await asyncio.wait_for(server.aclose(), CLOSE_WITHIN_S)
