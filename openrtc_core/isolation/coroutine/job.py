"""One job as tasks in the worker's loop: livekit's job-executor contract, kept whole.

livekit's per-job lifecycle (job context, shutdown callbacks, session end, the job's status
to the server, termination of one job) runs in livekit's own ``_JobProc``, driven here in the
worker's loop instead of in a process (see :mod:`openrtc_core._livekit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from livekit.agents import utils
from livekit.agents.ipc.job_executor import JobStatus

from ... import _livekit
from ..._livekit import cycles as livekit_cycles
from ..._livekit import jobs as livekit_jobs
from ...models import AGENT_ATTRIBUTE
from ...registry import CURRENT_SESSION, SessionTag
from ..base import failed_reason, is_failed_reason
from .leftovers import STOP_GRACE_S, describe
from .watchdog import forget_job, module_of, tag_of, tasks_of

if TYPE_CHECKING:
    from livekit.agents import JobContext, JobProcess
    from livekit.agents.job import RunningJobInfo

logger = logging.getLogger("openrtc.coroutine")

_ids = itertools.count(1)

LEFTOVER_GRACE_S = 5.0
"""How long a task an agent started may outlive its call before it is cancelled."""


def _framework_task(task: asyncio.Task[Any]) -> bool:
    return module_of(task).startswith(("livekit.", "openrtc_core."))


def settle_tasks(job_id: str, agent: str) -> None:
    """Nothing of an ended job outlives it: settle its tasks as the job finishes.

    livekit's own tasks of the job still running (an STT pump that started with the session
    and retries on a closed connection, say) are cancelled now. Finished tasks have their
    exception taken: a session that failed leaves livekit's tasks holding the exception it
    already reported (the failing ``on_enter``, the run that was cut), which asyncio would
    log again, with its traceback, as "exception was never retrieved". Tasks of the agent's
    own code get a grace period (:func:`cancel_leftover_tasks`).
    """
    for task in tasks_of(job_id):
        if not task.done():
            if _framework_task(task):
                task.cancel()
            continue
        if not task.cancelled() and task.exception() is not None:
            logger.debug(
                "task %s of job %s ended with %r",
                task.get_name(),
                job_id,
                task.exception(),
                extra={"job_id": job_id, "agent": agent},
            )


def cancel_leftover_tasks(
    job_id: str, agent: str, unhealthy: Callable[[str], None] | None = None
) -> None:
    """Cancel the tasks the job's code left running after its call ended, and say so once.

    One still running :data:`~openrtc_core.isolation.coroutine.leftovers.STOP_GRACE_S` later catches
    ``CancelledError`` and goes on: nothing in this worker can stop it, so it is named and
    the worker is told it is `unhealthy` (a supervisor replaces it).
    """
    leftovers = [task for task in tasks_of(job_id) if not task.done()]
    forget_job(job_id)
    if not leftovers:
        return
    for task in leftovers:
        task.cancel()
    # In an empty context: the check must not keep the job's context alive.
    asyncio.get_running_loop().call_later(
        STOP_GRACE_S,
        _name_stuck,
        leftovers,
        unhealthy,
        context=contextvars.Context(),
    )
    names = sorted({task.get_name() for task in leftovers})
    logger.warning(
        "agent %s left %d task(s) running %.0f s after its call (job %s) ended: %s; cancelled "
        "them. Keep a reference to tasks you start and cancel them in on_exit.",
        agent,
        len(leftovers),
        LEFTOVER_GRACE_S,
        job_id,
        ", ".join(names[:5]) + (", ..." if len(names) > 5 else ""),
        extra={"job_id": job_id, "agent": agent},
    )


def _name_stuck(
    cancelled: list[asyncio.Task[Any]], unhealthy: Callable[[str], None] | None
) -> None:
    stuck = [task for task in cancelled if not task.done()]
    if not stuck:
        return
    for task in stuck:
        logger.error(
            "%s is still running %.0f s after it was cancelled: it catches CancelledError and "
            "goes on, and this worker cannot stop it. Let CancelledError through (re-raise it).",
            describe(task),
            STOP_GRACE_S,
            extra={"task": task.get_name(), **_session_fields(task)},
        )
    if unhealthy is not None:
        unhealthy(f"{len(stuck)} task(s) would not stop when cancelled: {describe(stuck[0])}")


def _session_fields(task: asyncio.Task[Any]) -> dict[str, str]:
    tag = tag_of(task)
    return {"job_id": tag.job_id, "agent": tag.agent} if tag is not None else {}


class _Client:
    """The job side's view of its executor: ``send()`` is how _JobProc reports back."""

    def __init__(self, job: CoroutineJob) -> None:
        self.job = job

    async def send(self, msg: Any) -> None:
        reason = livekit_jobs.exiting_reason(msg)
        if reason is not None:
            self.job.exiting(reason)
            return
        request = livekit_jobs.inference_request(msg)
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
        self.unhealthy: Callable[[str], None] | None = None
        """Told when a task the job left behind will not stop (see cancel_leftover_tasks)."""
        self._closed = asyncio.Event()
        self._cut_off_timer: asyncio.TimerHandle | None = None
        self._releasing: asyncio.Task[None] | None = None

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
        self._job_proc = livekit_jobs.new_job_proc(
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
        agent = (info.accept_arguments.attributes or {}).get(AGENT_ATTRIBUTE, "")
        context.run(CURRENT_SESSION.set, SessionTag(info.job.id, agent))
        self._task = asyncio.get_running_loop().create_task(
            self._job_proc.entrypoint(self._channel),
            name=f"openrtc-job-{info.job.id}",
            context=context,
        )
        self._task.add_done_callback(self._finished)
        self._channel.send_nowait(livekit_jobs.start_job_message(info))
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
            self._channel.send_nowait(livekit_jobs.shutdown_message("worker closed the job"))
        done, _ = await asyncio.wait({self._task}, timeout=self._close_timeout)
        if not done:
            logger.error(
                "job did not shut down within %.1f s; cancelling it",
                self._close_timeout,
                extra=self.logging_extra(),
            )
            self.exit_reason = self.exit_reason or failed_reason("shutdown timed out")
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
        if not is_failed_reason(self.exit_reason):
            self.exit_reason = failed_reason(f"shutdown timed out ({self.exit_reason})")
        self._task.cancel()

    def _finished(self, task: asyncio.Task[None]) -> None:
        crashed = task.cancelled() or task.exception() is not None
        reason = self.exit_reason
        failed = crashed or reason == "job crashed" or is_failed_reason(reason)
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
        if self._running_job is not None:
            job_id = self._running_job.job.id
            agent = (self._running_job.accept_arguments.attributes or {}).get(AGENT_ATTRIBUTE, "")
            settle_tasks(job_id, agent)
            # In an empty context, like the sweep below: it is not one of the job's tasks.
            self._releasing = asyncio.get_running_loop().create_task(
                self._release_when_settled(tasks_of(job_id)), context=contextvars.Context()
            )
            # In an empty context: the sweep must not keep the job's context alive.
            asyncio.get_running_loop().call_later(
                LEFTOVER_GRACE_S,
                cancel_leftover_tasks,
                job_id,
                agent,
                self.unhealthy,
                context=contextvars.Context(),
            )

    async def _release_when_settled(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Once every task of the ended job has finished, take its objects apart so that
        reference counting frees them (see ``_livekit.cycles``); a task still running after
        the leftover grace leaves them to the garbage collector."""
        running = [task for task in tasks if not task.done()]
        if running:
            await asyncio.wait(running, timeout=LEFTOVER_GRACE_S + 1.0)
            if any(not task.done() for task in running):
                return
        job_proc, self._job_proc = self._job_proc, None
        try:
            livekit_cycles.release_task_exceptions(tasks)
            del tasks, running
            livekit_cycles.release_ended_job(job_proc)
        except Exception:  # a livekit upgrade moved something: the collector frees it
            logger.exception("could not take apart the objects of an ended job")

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
            livekit_jobs.deliver_inference(self._job_proc, request_id, result, error)

        task = asyncio.get_running_loop().create_task(run())
        self._inference_tasks.add(task)
        task.add_done_callback(self._inference_tasks.discard)
