"""Coroutine isolation: every job runs as tasks in the worker's own event loop.

No process and no thread per job: prewarm runs once and every session sees the same loaded
models. livekit's job lifecycle is kept whole (job context, shutdown callbacks, session end,
job status to the server, termination of one job); only where it runs changes. The AgentServer
is livekit's own: the pool replaces its job *pool* (the object that would fork processes) for
this worker alone, through :mod:`openrtc_core._livekit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from livekit.agents import JobExecutorType, utils
from livekit.agents.ipc.job_executor import JobStatus

from . import _livekit
from .watchdog import CURRENT_SESSION, LoopWatchdog, SessionTag, drop_cancelled_timers

if TYPE_CHECKING:
    from livekit.agents import AgentServer, JobContext, JobProcess
    from livekit.agents.job import RunningJobInfo

    from .pool import AgentPool

logger = logging.getLogger("openrtc.coroutine")

DEFAULT_MAX_SESSIONS = 50
FAILED_PREFIX = "openrtc: session failed"
"""Shutdown reasons starting with this mark the job failed (see SessionRun)."""
GC_ENV = "OPENRTC_GC"
PYTHON_GC_THRESHOLD = (700, 10, 10)
GC_THRESHOLD = (10_000, 10, 10)
TIMER_SWEEP_S = 1.0
LAG_BUDGET_S = 0.1
"""Mean loop lag over the last second at which the worker reports itself full."""

_ids = itertools.count(1)


class _Client:
    """The job side's view of its executor: ``send()`` is how _JobProc reports back."""

    def __init__(self, job: CoroutineJob) -> None:
        self.job = job

    async def send(self, msg: Any) -> None:
        reason = _livekit.exiting_reason(msg)
        if reason is not None:
            self.job.exiting(reason)
            return
        request = _livekit.inference_request(msg)
        if request is not None:
            self.job.start_inference(*request)


class CoroutineJob:
    """livekit's job-executor contract (ipc/job_executor.py) for one job in this loop."""

    def __init__(
        self,
        *,
        entrypoint: Callable[[JobContext], Awaitable[None]],
        session_end_fnc: Callable[[JobContext], Awaitable[None]] | None,
        simulation_end_fnc: Callable[[Any], Any] | None,
        session_end_timeout: float,
        close_timeout: float,
        shared_proc: JobProcess,
        inference_executor: Any,
    ) -> None:
        self._id = f"CORO_{next(_ids)}"
        self._entrypoint = entrypoint
        self._session_end_fnc = session_end_fnc
        self._simulation_end_fnc = simulation_end_fnc
        self._session_end_timeout = session_end_timeout
        self._close_timeout = close_timeout
        self._shared_proc = shared_proc
        self._inference_executor = inference_executor
        self._running_job: RunningJobInfo | None = None
        self._status = JobStatus.RUNNING
        self._user_arguments: Any | None = None
        self._channel: utils.aio.Chan[Any] = utils.aio.Chan()
        self._task: asyncio.Task[None] | None = None
        self._job_proc: Any = None
        self._inference_tasks: set[asyncio.Task[None]] = set()
        self.exit_reason = ""
        self.on_done: Callable[[CoroutineJob], None] | None = None
        self._closed = asyncio.Event()
        self._cut_off_timer: asyncio.TimerHandle | None = None

    # -- the executor contract --------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._id

    @property
    def started(self) -> bool:
        return self._task is not None

    @property
    def user_arguments(self) -> Any | None:
        return self._user_arguments

    @user_arguments.setter
    def user_arguments(self, value: Any | None) -> None:
        self._user_arguments = value

    @property
    def running_job(self) -> RunningJobInfo | None:
        return self._running_job

    @property
    def status(self) -> JobStatus:
        return self._status

    async def start(self) -> None:
        return None

    async def initialize(self) -> None:
        return None

    async def launch_job(self, info: RunningJobInfo) -> None:
        if self._running_job is not None:
            raise RuntimeError("a coroutine job runs exactly one job")
        self._running_job = info
        self._job_proc = _livekit.new_job_proc(
            entrypoint=self._entrypoint,
            session_end_fnc=self._session_end_fnc,
            simulation_end_fnc=self._simulation_end_fnc,
            session_end_timeout=self._session_end_timeout,
            shared_proc=self._shared_proc,
            client=_Client(self),
        )
        # A context of its own: nothing leaks between jobs, and every task the job creates
        # carries its tag for the watchdog.
        context = contextvars.copy_context()
        agent = (info.accept_arguments.attributes or {}).get("openrtc.agent", "")
        context.run(CURRENT_SESSION.set, SessionTag(info.job.id, agent))
        self._task = asyncio.get_running_loop().create_task(
            self._job_proc.entrypoint(self._channel),
            name=f"openrtc-job-{info.job.id}",
            context=context,
        )
        self._task.add_done_callback(self._finished)
        self._channel.send_nowait(_livekit.start_job_message(info))
        _livekit.job_metrics(started=True)

    async def join(self) -> None:
        # Waits until the job is finished *and* forgotten by the pool. livekit's drain loops
        # over listed jobs calling join(): returning before the pool dropped this one, without
        # yielding, would spin that loop forever.
        await self._closed.wait()

    async def aclose(self) -> None:
        """Ask the job to shut down; cut it off after the close timeout."""
        if self._task is None or self._task.done():
            return
        with contextlib.suppress(utils.aio.ChanClosed):
            self._channel.send_nowait(_livekit.shutdown_message("worker closed the job"))
        done, _ = await asyncio.wait({self._task}, timeout=self._close_timeout)
        if not done:
            logger.error(
                "job did not shut down within %.1f s; cancelling it",
                self._close_timeout,
                extra=self.logging_extra(),
            )
            self.exit_reason = self.exit_reason or f"{FAILED_PREFIX}: shutdown timed out"
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    def logging_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"executor_id": self._id}
        if self._running_job is not None:
            extra["job_id"] = self._running_job.job.id
            extra["room"] = self._running_job.job.room.name
        return extra

    # -- internals ------------------------------------------------------------------------

    def exiting(self, reason: str) -> None:
        """The job is past its session and runs its shutdown callbacks: bound that."""
        self.exit_reason = reason
        if self._task is not None and not self._task.done() and self._cut_off_timer is None:
            # An empty context: the job's own (its JobContext, its session) must not stay
            # reachable from the loop's schedule after the job is gone.
            self._cut_off_timer = asyncio.get_running_loop().call_later(
                self._close_timeout, self._cut_off, context=contextvars.Context()
            )

    def _cut_off(self) -> None:
        if self._task is None or self._task.done():
            return
        logger.error(
            "job still shutting down %.1f s after its session ended; cancelling it",
            self._close_timeout,
            extra=self.logging_extra(),
        )
        if not self.exit_reason.startswith(FAILED_PREFIX):
            self.exit_reason = f"{FAILED_PREFIX}: shutdown timed out ({self.exit_reason})"
        self._task.cancel()

    def _finished(self, task: asyncio.Task[None]) -> None:
        crashed = task.cancelled() or task.exception() is not None
        reason = self.exit_reason
        failed = crashed or reason == "job crashed" or reason.startswith(FAILED_PREFIX)
        self._status = JobStatus.FAILED if failed else JobStatus.SUCCESS
        if self._cut_off_timer is not None:
            self._cut_off_timer.cancel()
        self._channel.close()
        for inference in self._inference_tasks:
            inference.cancel()
        _livekit.job_metrics(started=False)
        if self.on_done is not None:
            self.on_done(self)
        self._closed.set()

    def start_inference(self, request_id: str, method: str, data: bytes) -> None:
        async def run() -> None:
            result: bytes | None = None
            error = ""
            if self._inference_executor is None:
                error = "no inference executor"
            else:
                try:
                    result = await self._inference_executor.do_inference(method, data)
                except Exception as exc:
                    error = str(exc) or type(exc).__name__
            _livekit.deliver_inference(self._job_proc, request_id, result, error)

        task = asyncio.get_running_loop().create_task(run())
        self._inference_tasks.add(task)
        task.add_done_callback(self._inference_tasks.discard)


class CoroutineJobPool(utils.EventEmitter[str]):
    """What AgentServer calls its process pool, for a coroutine-isolated OpenRTC pool."""

    def __init__(self, *, pool: AgentPool, **livekit_kwargs: Any) -> None:
        super().__init__()
        self.pool = pool
        self._setup_fnc: Callable[[JobProcess], Any] = livekit_kwargs["initialize_process_fnc"]
        self._entrypoint = livekit_kwargs["job_entrypoint_fnc"]
        self._session_end_fnc = livekit_kwargs.get("session_end_fnc")
        self._simulation_end_fnc = livekit_kwargs.get("simulation_end_fnc")
        self._session_end_timeout: float = livekit_kwargs["session_end_timeout"]
        self._close_timeout: float = livekit_kwargs["close_timeout"]
        self._inference_executor = livekit_kwargs.get("inference_executor")
        self._http_proxy: str | None = livekit_kwargs.get("http_proxy")
        self._jobs: list[CoroutineJob] = []
        self._shared_proc: JobProcess | None = None
        self._target_idle = 0
        self.watchdog = LoopWatchdog()
        self._timers_swept_at = 0.0
        self._sweep_pending: asyncio.TimerHandle | None = None

    @property
    def processes(self) -> list[CoroutineJob]:
        return self._jobs

    def get_by_job_id(self, job_id: str) -> CoroutineJob | None:
        return next(
            (j for j in self._jobs if j.running_job and j.running_job.job.id == job_id), None
        )

    async def start(self) -> None:
        started = time.monotonic()
        _livekit.warm_up_framework()
        self._shared_proc = _livekit.shared_job_process(self._http_proxy)
        self._setup_fnc(self._shared_proc)
        _livekit.install_job_log_fields()
        gc_setup = tune_gc()
        self.watchdog.start()
        self.pool.coroutine_pool = self
        logger.info(
            "coroutine isolation ready: prewarm ran once in %.2f s; %s",
            time.monotonic() - started,
            gc_setup,
        )

    async def aclose(self) -> None:
        await asyncio.gather(*(job.aclose() for job in list(self._jobs)))
        if self._sweep_pending is not None:
            self._sweep_pending.cancel()
        self.watchdog.stop()

    async def launch_job(self, info: RunningJobInfo) -> None:
        assert self._shared_proc is not None, "start() runs before jobs are launched"
        job = CoroutineJob(
            entrypoint=self._entrypoint,
            session_end_fnc=self._session_end_fnc,
            simulation_end_fnc=self._simulation_end_fnc,
            session_end_timeout=self._session_end_timeout,
            close_timeout=self._close_timeout,
            shared_proc=self._shared_proc,
            inference_executor=self._inference_executor,
        )
        job.on_done = self._on_job_done
        self._jobs.append(job)
        info.launched_at = time.time()
        await job.launch_job(info)
        self.emit("process_job_launched", job)

    def _on_job_done(self, job: CoroutineJob) -> None:
        # Announce the final status first, then forget the job: livekit's drain loop waits
        # on every listed job that still has a running_job.
        self.emit("process_closed", job)
        if job in self._jobs:
            self._jobs.remove(job)
        self._sweep_timers()

    def _sweep_timers(self) -> None:
        """Let ended jobs go: drop cancelled timers that still hold their context (see
        watchdog.drop_cancelled_timers), at most once every TIMER_SWEEP_S; a job that ends
        in between is swept by one sweep scheduled for the end of that interval."""
        loop = asyncio.get_running_loop()
        wait = self._timers_swept_at + TIMER_SWEEP_S - time.monotonic()
        if wait <= 0:
            self._timers_swept_at = time.monotonic()
            drop_cancelled_timers(loop)
        elif self._sweep_pending is None:
            self._sweep_pending = loop.call_later(
                wait, self._sweep_later, context=contextvars.Context()
            )

    def _sweep_later(self) -> None:
        self._sweep_pending = None
        self._sweep_timers()

    def set_target_idle_processes(self, num_idle_processes: int) -> None:
        self._target_idle = num_idle_processes

    @property
    def target_idle_processes(self) -> int:
        return self._target_idle


def tune_gc() -> str:
    """Set the garbage collector up for one process holding hundreds of sessions.

    Measured with 500 live sessions (``python -m benchmarks.density``): Python's defaults
    ran 8 full collections in 40 s of calls, each walking the whole worker (up to 340 ms
    with every session waiting), and they were the event loop's p99 lag. Two changes:

    * everything alive after prewarm (livekit, plugins, models: about 160,000 objects,
      ~75 ms of every full collection) is frozen out of the collector's sight
      (``gc.freeze``). It is not garbage; the worker holds it until it exits. Garbage is
      collected first so none of it is frozen.
    * the youngest generation is collected every 10,000 allocations instead of 700, so a
      turn's short-lived objects die before they are promoted, and the older generations,
      whose collections walk the sessions' live objects, fill up ten times more slowly.

    A threshold the pool's prewarm set itself is kept. ``OPENRTC_GC=python`` leaves
    Python's collector as it is (``tuned`` is the default). Returns what was done, for the
    start-up log line.
    """
    choice = os.environ.get(GC_ENV, "").strip().lower()
    if choice == "python":
        return "garbage collector left at Python's defaults (OPENRTC_GC=python)"
    if choice not in ("", "tuned"):
        logger.warning(
            "%s=%r is not a choice: use 'tuned' (the default) or 'python' (leave Python's "
            "collector as it is); tuning it",
            GC_ENV,
            os.environ[GC_ENV],
        )
    gc.collect()
    gc.freeze()
    done = f"{gc.get_freeze_count()} objects frozen out of garbage collection"
    if gc.get_threshold() == PYTHON_GC_THRESHOLD:
        gc.set_threshold(*GC_THRESHOLD)
        done += f", collection thresholds {GC_THRESHOLD}"
    return done


@attrs.frozen
class CoroutineLoad:
    """The load the worker reports: the larger of its session share and its loop lag."""

    pool: AgentPool

    def __call__(self, server: AgentServer) -> float:
        max_sessions = self.pool.session_cap or DEFAULT_MAX_SESSIONS
        session_load = len(server.active_jobs) / max_sessions
        job_pool = self.pool.coroutine_pool
        lag_load = job_pool.watchdog.sustained_lag_s() / LAG_BUDGET_S if job_pool else 0.0
        return min(1.0, max(session_load, lag_load))


@attrs.frozen
class CoroutineBackend:
    """Jobs as asyncio tasks in the worker's loop, one shared prewarm."""

    name: str = "coroutine"
    jobs_run_in_worker: bool = True
    default_max_sessions: int = DEFAULT_MAX_SESSIONS

    def server_options(self, pool: AgentPool) -> Mapping[str, Any]:
        max_sessions = pool.session_cap or DEFAULT_MAX_SESSIONS
        if pool.settings.job_memory_limit_mb:
            logger.warning(
                "job_memory_limit_mb=%s has no effect with isolation='coroutine': sessions "
                "share one process; use isolation='process' for per-session memory caps",
                pool.settings.job_memory_limit_mb,
            )
        return {
            # In-process, like livekit's thread executor: livekit's per-job log filters then
            # look the job up per record instead of assuming one job per process.
            "job_executor_type": JobExecutorType.THREAD,
            # Load is sessions/max_sessions (or loop lag): full at 1.0. livekit also estimates
            # an in-flight request's share as threshold / num_idle_processes.
            "load_threshold": 1.0,
            "num_idle_processes": max_sessions,
            "load_fnc": CoroutineLoad(pool),
        }

    def install(self, server: AgentServer, pool: AgentPool) -> None:
        _livekit.install_job_pool_selector()

    def job_pool(self, pool: AgentPool) -> Callable[..., CoroutineJobPool]:
        def build(**livekit_kwargs: Any) -> CoroutineJobPool:
            return CoroutineJobPool(pool=pool, **livekit_kwargs)

        return build
