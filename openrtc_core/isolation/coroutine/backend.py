"""The coroutine backend: jobs as asyncio tasks in the worker's loop, one shared prewarm."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from livekit.agents import JobExecutorType

from ..._livekit import jobs as livekit_jobs
from ..base import BackendTraits, JobPoolFactory, WorkerSpec
from ..executors import warn_no_memory_caps
from .jobpool import CoroutineJobPool

if TYPE_CHECKING:
    from livekit.agents import AgentServer

logger = logging.getLogger("openrtc.coroutine")

DEFAULT_MAX_SESSIONS = 50
LAG_BUDGET_S = 0.1
"""Mean loop lag over the last second at which the worker reports itself full."""
BUSY_BUDGET = 0.95
"""Share of the last second the loop's thread ran at which the worker reports itself full."""
_TRAITS = BackendTraits(
    jobs_run_in_worker=True, default_max_sessions=DEFAULT_MAX_SESSIONS, prewarm_once=True
)


@attrs.define
class CoroutineLoad:
    """The load the worker reports: the larger of its session share and its loop lag."""

    max_sessions: int
    calls: Callable[[AgentServer], int]
    job_pool: CoroutineJobPool | None = None
    _full: bool = False

    def __call__(self, server: AgentServer) -> float:
        calls = self.calls(server)
        watchdog = self.job_pool.watchdog if self.job_pool is not None else None
        lag = watchdog.sustained_lag_s() if watchdog is not None else 0.0
        busy = watchdog.utilisation() if watchdog is not None else 0.0
        load = min(1.0, max(calls / self.max_sessions, lag / LAG_BUDGET_S, busy / BUSY_BUDGET))
        self._say_when_full_changes(load >= 1.0, calls, lag, busy)
        return load

    def _say_when_full_changes(self, full: bool, calls: int, lag: float, busy: float) -> None:
        """One line when the worker becomes full (and why), one when it has room again."""
        if full == self._full:
            return
        self._full = full
        if not full:
            logger.info("worker has room again: %d calls live", calls)
        elif calls >= self.max_sessions:
            logger.warning(
                "worker full: %d calls live, max_sessions=%d; LiveKit offers new calls to "
                "other workers until one ends",
                calls,
                self.max_sessions,
            )
        elif lag >= LAG_BUDGET_S:
            logger.warning(
                "worker full: its event loop lags %.0f ms on average over the last second "
                "(budget %.0f ms) with %d calls live; LiveKit offers new calls elsewhere",
                lag * 1000,
                LAG_BUDGET_S * 1000,
                calls,
            )
        else:
            logger.warning(
                "worker full: its event loop was busy %.0f%% of the last second with %d calls "
                "live; LiveKit offers new calls elsewhere",
                busy * 100,
                calls,
            )


@attrs.define
class CoroutineBackend:
    """Jobs as asyncio tasks in the worker's loop, one shared prewarm.

    One instance serves one server: it builds that server's job pool and reports its load.
    """

    name: str = "coroutine"
    traits: BackendTraits = _TRAITS
    _load: CoroutineLoad | None = attrs.field(init=False, default=None)

    def server_options(self, worker: WorkerSpec) -> Mapping[str, Any]:
        warn_no_memory_caps(self.name, worker)
        max_sessions = worker.session_cap or DEFAULT_MAX_SESSIONS
        self._load = CoroutineLoad(max_sessions, worker.calls)
        return {
            # In-process, like livekit's thread executor: livekit's per-job log filters then
            # look the job up per record instead of assuming one job per process.
            "job_executor_type": JobExecutorType.THREAD,
            # Load is sessions/max_sessions (or loop lag): full at 1.0. livekit also estimates
            # an in-flight request's share as threshold / num_idle_processes.
            "load_threshold": 1.0,
            "num_idle_processes": max_sessions,
            "load_fnc": self._load,
        }

    def job_pool(self, worker: WorkerSpec) -> JobPoolFactory | None:
        # What a job process imports before its first job, done now, while the server is
        # built: inside the running worker it would stall the event loop for ~0.4 s, and
        # livekit's loop monitor would report our start-up as a stall.
        livekit_jobs.warm_up_framework()

        def build(**livekit_kwargs: Any) -> CoroutineJobPool:
            job_pool = CoroutineJobPool(**livekit_kwargs)
            job_pool.unhealthy = worker.unhealthy
            if self._load is not None:
                self._load.job_pool = job_pool
            return job_pool

        return build

    def install(self, server: AgentServer) -> None:
        return None
