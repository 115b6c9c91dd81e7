"""A pool whose agents leave behind tasks that will not stop (a module: a worker subprocess
imports it). ``swallower`` starts one in its session's context, ``ghost`` in an empty
``contextvars.Context()``; both catch ``CancelledError`` and spin."""

from __future__ import annotations

import asyncio
import contextvars

from e2e_pools import POOL_LLM
from livekit.agents import Agent

from openrtc_core import AgentPool

LEFT_BEHIND: list[asyncio.Task[None]] = []


async def swallow_cancel() -> None:
    while True:
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            continue


class SwallowerAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Leaves a task behind that will not stop.")

    async def on_enter(self) -> None:
        LEFT_BEHIND.append(asyncio.create_task(swallow_cancel(), name="swallows-cancel"))


class GhostAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Leaves one behind from an empty context.")

    async def on_enter(self) -> None:
        task = contextvars.Context().run(asyncio.create_task, swallow_cancel(), name="ghost-task")
        LEFT_BEHIND.append(task)


pool = AgentPool(llm=POOL_LLM, vad=None, isolation="coroutine")
pool.add("swallower", SwallowerAgent, default=True)
pool.add("ghost", GhostAgent)
