"""The isolation contract: everything a backend may say about itself or own.

A backend is chosen by name (``AgentPool(isolation="process")``) from the registry the
``openrtc_register_isolation_backends`` hook fills; one instance serves one server. It is
told about the worker through a frozen :class:`WorkerSpec`, declares its :class:`BackendTraits`,
and may bring its own job pool: the object livekit's ``AgentServer`` would otherwise build as
its process pool, with the executor contract of livekit's ``ipc/job_executor.py``. Everything
here is public, so a third-party backend needs no private name of OpenRTC's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import attrs

from ..models import PoolSettings

if TYPE_CHECKING:
    from livekit.agents import AgentServer, JobProcess

JobPoolFactory = Callable[..., Any]
"""Called by livekit with its process-pool keyword arguments; returns the job pool."""

FAILED_REASON_PREFIX: Final = "openrtc: session failed"
"""A job whose shutdown reason starts with this ended failed (its session failed)."""


def failed_reason(error: str) -> str:
    """The shutdown reason of a job whose session failed with `error`."""
    return f"{FAILED_REASON_PREFIX}: {error}"


def is_failed_reason(reason: str) -> bool:
    return reason.startswith(FAILED_REASON_PREFIX)


def _listed_jobs(server: AgentServer) -> int:
    return len(server.active_jobs)


def _ignore(reason: str) -> None:
    return None


@attrs.frozen(kw_only=True)
class BackendTraits:
    """What a backend says about how it runs jobs."""

    jobs_run_in_worker: bool = False
    """Jobs run in the worker process itself, so what the request handler learnt about a job
    (its tenant) reaches the session directly instead of being resolved again."""
    default_max_sessions: int | None = None
    """The session cap of a pool that sets no ``max_sessions``; None for no cap."""
    prewarm_once: bool = False
    """Every job of the worker sees one prewarmed ``JobProcess``: a supervisor may then run
    the prewarm before it forks its workers (:func:`take_prewarmed`), and they share its
    memory. False when prewarm runs per job process or thread."""


@attrs.frozen(kw_only=True)
class WorkerSpec:
    """What a backend is told about the worker it serves."""

    settings: PoolSettings
    session_cap: int | None
    """``max_sessions``, or the backend's default; None for no cap."""
    preload_modules: tuple[str, ...] = ()
    """OpenRTC's and the loaded plugins' modules, safe to import before a fork."""
    calls: Callable[[AgentServer], int] = _listed_jobs
    """How many calls the server holds now: accepted jobs whose call has not ended (a job
    still shutting down after its call holds no slot). What a load function should count."""
    unhealthy: Callable[[str], None] = _ignore
    """Say the worker holds something it cannot get rid of (a task that will not stop when
    cancelled), in words: plugins hear it (``openrtc_worker_unhealthy``) and a supervisor
    drains and replaces the worker."""


@runtime_checkable
class IsolationBackend(Protocol):
    """What the server assembly needs from a backend."""

    @property
    def name(self) -> str:
        """The name the backend is chosen by."""
        ...

    @property
    def traits(self) -> BackendTraits:
        """How it runs jobs (see :class:`BackendTraits`)."""
        ...

    def server_options(self, worker: WorkerSpec) -> Mapping[str, Any]:
        """``AgentServer`` keyword arguments it needs (executor type, limits, load)."""
        ...

    def job_pool(self, worker: WorkerSpec) -> JobPoolFactory | None:
        """Its own job pool for this server, or None to use livekit's process pool."""
        ...

    def install(self, server: AgentServer) -> None:
        """Adjust the built server before it runs; most backends need nothing here."""
        ...


_prewarmed: list[JobProcess] = []


def hand_over_prewarmed(proc: JobProcess) -> None:
    """Keep `proc`, prewarmed in this process before it forked its workers, for the first
    server of each worker to take (:func:`take_prewarmed`)."""
    _prewarmed[:] = [proc]


def take_prewarmed() -> JobProcess | None:
    """The ``JobProcess`` a supervisor prewarmed before forking this worker, once; None when
    there is none (a worker started on its own prewarms for itself)."""
    return _prewarmed.pop() if _prewarmed else None
