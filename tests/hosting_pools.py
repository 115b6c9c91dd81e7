"""Pools whose plugin notes each process-lifecycle hook call in a file, with the process it
ran in. A module, so job processes (process isolation) import the same pools, plugin and all.

The file is a run option's value (``create_server(hosting_log=...)``): a job process writes to
it only when the worker's run options reached it (livekit's forkserver may predate the test,
so its environment would not do)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from livekit.agents import Agent

from openrtc_core import (
    AddRunOption,
    AgentPool,
    JobView,
    ProcessRole,
    RunOption,
    hookimpl,
)
from openrtc_testing import ScriptedLLM

LOG_OPTION = "hosting_log"
"""The run option naming the file the plugin appends one JSON line per hook call to."""


def note(pool: AgentPool, **fields: Any) -> None:
    path = pool.run_options.get(LOG_OPTION)
    if not path:
        raise RuntimeError(f"the run options carry no {LOG_OPTION}: nowhere to note {fields}")
    with Path(str(path)).open("a") as log:
        log.write(json.dumps({"pid": os.getpid(), **fields}) + "\n")


def noted(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


class HostingNotes:
    """Implements the three hooks, each awaiting a little, and adds the run option naming
    the file it writes to."""

    def __init__(self, pool: AgentPool) -> None:
        self.pool = pool

    @hookimpl
    def openrtc_add_run_options(self, add: AddRunOption) -> None:
        add(RunOption(name=LOG_OPTION, flag="--hosting-log", help="Where the hooks are noted."))

    def _note(self, pool: AgentPool, hook: str, **fields: Any) -> None:
        note(pool, hook=hook, same_pool=pool is self.pool, **fields)

    @hookimpl
    async def openrtc_process_started(self, pool: AgentPool, role: ProcessRole) -> None:
        await asyncio.sleep(0)  # awaited: the core waits for it
        self._note(pool, "process_started", role=role)

    @hookimpl
    async def openrtc_before_job(self, pool: AgentPool, role: ProcessRole, job: JobView) -> None:
        await asyncio.sleep(0)
        self._note(pool, "before_job", role=role, job=job.job_id)

    @hookimpl
    async def openrtc_worker_closing(self, pool: AgentPool) -> None:
        self._note(pool, "worker_closing")


class BrokenBeforeJob:
    """Fails before every job: the job is built all the same."""

    @hookimpl
    async def openrtc_before_job(self, job: JobView) -> None:
        raise RuntimeError(f"broken before {job.job_id}")


class Quiet(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Answers ok.")


def _pool(isolation: str) -> AgentPool:
    pool = AgentPool(llm=ScriptedLLM(default_reply="ok"), vad=None, isolation=isolation)
    pool.add("support", Quiet, default=True)
    pool.plugins.register(HostingNotes(pool), name="test.hosting")
    pool.plugins.register(BrokenBeforeJob(), name="test.broken-before-job")
    return pool


COROUTINE_POOL = _pool("coroutine")
PROCESS_POOL = _pool("process")
