"""The backends that use livekit's own job executors: a process or a thread per job."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
from livekit.agents import JobExecutorType

from .._livekit import jobs as livekit_jobs
from .base import BackendTraits, JobPoolFactory, WorkerSpec

if TYPE_CHECKING:
    from livekit.agents import AgentServer

logger = logging.getLogger("openrtc.isolation")

_OWN_PROCESS = BackendTraits()
_IN_WORKER = BackendTraits(jobs_run_in_worker=True)


def warn_no_memory_caps(backend: str, worker: WorkerSpec) -> None:
    """Say that per-session memory caps need process isolation, when the pool set one."""
    if worker.settings.job_memory_limit_mb:
        logger.warning(
            "job_memory_limit_mb=%s has no effect with isolation=%r: sessions share one "
            "process; use isolation='process' for per-session memory caps",
            worker.settings.job_memory_limit_mb,
            backend,
        )


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
    traits: BackendTraits = _OWN_PROCESS

    def server_options(self, worker: WorkerSpec) -> Mapping[str, Any]:
        return {
            "job_executor_type": JobExecutorType.PROCESS,
            "job_memory_limit_mb": worker.settings.job_memory_limit_mb,
            "job_memory_warn_mb": worker.settings.job_memory_warn_mb,
            "preload_modules": list(worker.preload_modules),
        }

    def job_pool(self, worker: WorkerSpec) -> JobPoolFactory | None:
        return None

    def install(self, server: AgentServer) -> None:
        # Without them, a worker's drain or close can hang for good (see _livekit).
        livekit_jobs.install_runner_fixes()
        # A job killed for its memory is reported to LiveKit as such, limit and size.
        livekit_jobs.report_job_errors(server)


@attrs.frozen
class ThreadBackend:
    """livekit's thread per job: one process, a thread and event loop per job."""

    name: str = "thread"
    traits: BackendTraits = _IN_WORKER

    def server_options(self, worker: WorkerSpec) -> Mapping[str, Any]:
        warn_no_memory_caps(self.name, worker)
        return {"job_executor_type": JobExecutorType.THREAD}

    def job_pool(self, worker: WorkerSpec) -> JobPoolFactory | None:
        return None

    def install(self, server: AgentServer) -> None:
        # Without them, a worker's drain or close can hang for good (see _livekit).
        livekit_jobs.install_runner_fixes()
