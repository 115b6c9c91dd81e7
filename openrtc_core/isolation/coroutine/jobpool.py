"""What AgentServer calls its process pool, for a coroutine-isolated pool: jobs as tasks.

No process and no thread per job: prewarm runs once on one shared ``JobProcess`` and every
session sees the same loaded models.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from livekit.agents import utils

from ... import _livekit
from ..._livekit import cycles as livekit_cycles
from ..._livekit import jobs as livekit_jobs
from ..base import take_prewarmed
from .gctuning import CallGarbage, gc_tuned, tune_gc
from .job import CoroutineJob
from .watchdog import LoopWatchdog, drop_cancelled_timers

if TYPE_CHECKING:
    from livekit.agents import JobProcess
    from livekit.agents.job import RunningJobInfo

logger = logging.getLogger("openrtc.coroutine")

TIMER_SWEEP_S = 1.0


class CoroutineJobPool(utils.EventEmitter[str]):
    """What AgentServer calls its process pool, for a coroutine-isolated OpenRTC pool."""

    def __init__(self, **livekit_kwargs: Any) -> None:
        super().__init__()
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
        self.watchdog = LoopWatchdog(calls_live=self._has_jobs)
        self._timers_swept_at = 0.0
        self._sweep_pending: asyncio.TimerHandle | None = None
        self._collector: CallGarbage | None = None
        self.unhealthy: Callable[[str], None] | None = None
        """Told when this worker cannot get rid of something (WorkerSpec.unhealthy)."""

    @property
    def processes(self) -> list[CoroutineJob]:
        return self._jobs

    def get_by_job_id(self, job_id: str) -> CoroutineJob | None:
        return next(
            (j for j in self._jobs if j.running_job and j.running_job.job.id == job_id), None
        )

    def _has_jobs(self) -> bool:
        return bool(self._jobs)

    async def start(self) -> None:
        started = time.monotonic()
        # Prewarm and the GC set-up run in the worker's loop before it registers: no call
        # waits on them, so livekit's loop monitor is not asked to report them as stalls.
        with _livekit.loop_monitor_paused(asyncio.get_running_loop()):
            prewarmed = take_prewarmed()
            if prewarmed is None:
                self._shared_proc = livekit_jobs.shared_job_process(self._http_proxy)
                self._setup_fnc(self._shared_proc)
            else:
                # A supervisor ran the prewarm before it forked this worker.
                self._shared_proc = prewarmed
            _livekit.install_job_log_fields()
            livekit_cycles.install_acyclic_channels()
            livekit_cycles.install_reused_reply_classes()
            gc_setup = tune_gc()
            self._collector = CallGarbage() if gc_tuned() else None
        self.watchdog.start()
        logger.info(
            "coroutine isolation ready: %s; %s",
            (
                f"prewarm ran once in {time.monotonic() - started:.2f} s"
                if prewarmed is None
                else "prewarm ran once in the supervisor, before this worker was forked"
            ),
            gc_setup,
        )

    async def aclose(self) -> None:
        await asyncio.gather(*(job.aclose() for job in list(self._jobs)))
        if self._sweep_pending is not None:
            self._sweep_pending.cancel()
        self.watchdog.stop()
        if self._collector is not None:
            self._collector.close()

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
        job.unhealthy = self.unhealthy
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
        if self._collector is not None:
            self._collector.call_ended()
            live = len(self._jobs)
            if self._collector.due(calls_live=live):
                if live:
                    self._collector.collect(live)
                else:
                    # Nobody waits for this collection: livekit's loop monitor is not asked
                    # to report it as a stall.
                    with _livekit.loop_monitor_paused(asyncio.get_running_loop()):
                        self._collector.collect(live)

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
