"""The pool the supervisor tests run (a module: workers and job processes import it).

``WORKERS_TEST_CRASH=start`` makes every worker exit with status 3 as soon as it starts (a
crash loop); ``WORKERS_TEST_BALLAST_MB`` makes each call hold that much memory while it lasts;
``WORKERS_TEST_ISOLATION`` picks the isolation backend. ``SIGUSR2`` makes a worker log the
stack of every thread and asyncio task to stderr (a test that times out asks for it).
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import sys
from typing import Any

from livekit.agents import Agent, AgentSession

from openrtc_core import AgentPool, PoolView, SessionInfo, SessionOutcome, hookimpl
from openrtc_testing import Rule, ScriptedLLM

CRASH_ENV = "WORKERS_TEST_CRASH"
BALLAST_ENV = "WORKERS_TEST_BALLAST_MB"
ISOLATION_ENV = "WORKERS_TEST_ISOLATION"
CRASH_STATUS = 3

_ballast: dict[str, bytearray] = {}


class Desk(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Answer briefly.")


class Behaviour:
    """Crashes and memory on demand, through the pool's own lifecycle hooks."""

    @hookimpl
    def openrtc_worker_started(self, pool: PoolView, server: Any) -> None:
        if os.environ.get(CRASH_ENV) == "start":
            os._exit(CRASH_STATUS)
        # The threads' stacks even when the loop is stuck, then the loop's tasks.
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, _log_tasks)
        faulthandler.register(signal.SIGUSR2, file=sys.stderr, all_threads=True, chain=True)

    @hookimpl
    def openrtc_session_started(self, info: SessionInfo, session: AgentSession[Any]) -> None:
        size = int(os.environ.get(BALLAST_ENV, "0") or 0)
        if size:
            block = bytearray(size * 1024 * 1024)
            block[::4096] = b"x" * len(block[::4096])  # touch every page: it is resident
            _ballast[info.job_id] = block

    @hookimpl
    def openrtc_session_ended(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        _ballast.pop(info.job_id, None)


class Swallower(Agent):
    """Leaves a task behind that catches CancelledError and spins: nothing stops it."""

    def __init__(self) -> None:
        super().__init__(instructions="Answer briefly.")

    async def on_enter(self) -> None:
        _left_behind.append(asyncio.create_task(_swallow_cancel(), name="swallows-cancel"))


_left_behind: list[asyncio.Task[None]] = []


async def _swallow_cancel() -> None:
    while True:
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            continue


def _log_tasks() -> None:
    print(f"asyncio tasks of pid {os.getpid()}:", file=sys.stderr)
    for task in asyncio.all_tasks():
        task.print_stack(limit=12, file=sys.stderr)
    sys.stderr.flush()


pool = AgentPool(
    isolation=os.environ.get(ISOLATION_ENV, "coroutine"),
    llm=ScriptedLLM(name="desk-llm", rules=[Rule(when="hello", reply="Hi, {user}!")]),
    turn_handling={"turn_detection": None},
    plugins=[Behaviour()],
)
pool.add("desk", Desk, default=True)
pool.add("swallower", Swallower)
