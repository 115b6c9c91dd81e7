"""Isolation backends: how the worker runs each job.

A backend is chosen by name (``AgentPool(isolation="process")``) from the registry that the
``openrtc_register_isolation_backends`` hook fills. Built in: ``process`` (livekit's process
per job, with per-job memory caps) and ``thread`` (livekit's thread per job).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs
from livekit.agents import JobExecutorType

if TYPE_CHECKING:
    from livekit.agents import AgentServer

    from .pool import AgentPool

logger = logging.getLogger("openrtc.isolation")


@runtime_checkable
class IsolationBackend(Protocol):
    """What the pool needs from a backend."""

    @property
    def name(self) -> str:
        """The name the backend is chosen by."""
        ...

    def server_options(self, pool: AgentPool) -> Mapping[str, Any]:
        """``AgentServer`` keyword arguments this backend needs (executor type, limits)."""
        ...

    def install(self, server: AgentServer, pool: AgentPool) -> None:
        """Adjust a built server before it runs; most backends need nothing here."""
        ...


PRELOADED_CORE = "openrtc_core"


def plugin_modules(pool: AgentPool) -> list[str]:
    """The modules of the installed plugins the pool loaded (entry points), in load order."""
    return [
        record.module.partition(":")[0]
        for record in pool.plugins.records
        if record.status == "loaded" and record.source == "entry-point" and record.module
    ]


@attrs.frozen
class ProcessBackend:
    """livekit's own process per job. Memory caps apply per session (PSS, livekit's monitor).

    Every job process rebuilds the pool and loads its plugins before it is ready, and livekit
    readies only min(cores, 4) processes at a time, so what each one imports is paid again
    for every call in a burst. OpenRTC and the plugins' modules are therefore imported once
    in livekit's forkserver (``preload_modules``, Linux), as livekit does with its own
    plugin packages; the user's modules are left to the job processes (importing them before
    the fork would run their import-time code in the forkserver).
    """

    name: str = "process"

    def server_options(self, pool: AgentPool) -> Mapping[str, Any]:
        return {
            "job_executor_type": JobExecutorType.PROCESS,
            "job_memory_limit_mb": pool.settings.job_memory_limit_mb,
            "job_memory_warn_mb": pool.settings.job_memory_warn_mb,
            "preload_modules": [PRELOADED_CORE, *plugin_modules(pool)],
        }

    def install(self, server: AgentServer, pool: AgentPool) -> None:
        return None


@attrs.frozen
class ThreadBackend:
    """livekit's thread per job: one process, a thread and event loop per job."""

    name: str = "thread"
    jobs_run_in_worker: bool = True

    def server_options(self, pool: AgentPool) -> Mapping[str, Any]:
        if pool.settings.job_memory_limit_mb:
            logger.warning(
                "job_memory_limit_mb=%s has no effect with isolation='thread': threads share "
                "one process; use isolation='process' for per-session memory caps",
                pool.settings.job_memory_limit_mb,
            )
        return {"job_executor_type": JobExecutorType.THREAD}

    def install(self, server: AgentServer, pool: AgentPool) -> None:
        return None
