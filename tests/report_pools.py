"""Pools whose calls end in ways a report must name. A module, so job processes (process
isolation) can import the same pools."""

from __future__ import annotations

import os

from livekit.agents import Agent

from openrtc_core import AgentPool
from openrtc_testing import ScriptedLLM

HOG_MB = 400
"""What the hog allocates as its call starts: past the job memory limit below, whatever the
job process held before."""
MEMORY_LIMIT_MB = 300

_HELD: list[bytes] = []


class MemoryHog(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Holds on to memory.")

    async def on_enter(self) -> None:
        # Written, not only reserved: every page counts in the job process's PSS.
        _HELD.append(b"\x01" * (HOG_MB << 20))


MEMORY_POOL = AgentPool(
    llm=ScriptedLLM(default_reply="ok"),
    vad=None,
    isolation="process",
    job_memory_limit_mb=MEMORY_LIMIT_MB,
)
MEMORY_POOL.add("hog", MemoryHog, default=True)


class ExitsHard(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Ends its process as the call starts.")

    async def on_enter(self) -> None:
        os._exit(3)  # no cleanup, no report: only the job's exit status says what happened


EXIT_POOL = AgentPool(llm=ScriptedLLM(default_reply="ok"), vad=None, isolation="process")
EXIT_POOL.add("exits", ExitsHard, default=True)
