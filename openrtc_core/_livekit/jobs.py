"""livekit's job runners and the messages they exchange (``livekit.agents.ipc``): the
per-job runner OpenRTC drives in its own loop, the process pool's class (which an OpenRTC job
pool stands in for), and two fixes to livekit's thread and process runners.

Part of :mod:`openrtc_core._livekit`, which re-exports every name here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from livekit.agents import JobExecutorType

from ..processes import exit_reason

if TYPE_CHECKING:
    from livekit.agents import JobContext, JobProcess
    from livekit.agents.job import RunningJobInfo


def _ipc() -> Any:
    from livekit.agents import ipc

    return ipc


@functools.cache
def job_proc_class() -> type[Any]:
    """The in-loop job runner's class, made once: a class made per job is a reference cycle
    (class, its methods' ``__class__`` cell) that outlives the job until a full collection."""
    from livekit.agents.ipc.job_proc_lazy_main import _JobProc

    class InLoopJobProc(_JobProc):
        """_JobProc minus the per-job log filter on every root handler.

        livekit adds one filter per job to each root handler (JobContext._on_setup); with
        hundreds of jobs in one process every log record would run hundreds of filters.
        One process-wide filter (``_livekit.install_job_log_fields``) does the same job.
        """

        def _start_job(self, msg: Any) -> None:
            super()._start_job(msg)
            self._job_ctx._on_setup = _no_setup  # type: ignore[method-assign]

        async def _shutdown_job(self, job_entry_task: Any, shutdown_info: Any) -> None:
            # The session forgets its agent activity as it closes; remember it so that
            # cycles.release_ended_job can take it apart once the job is over.
            session = self._job_ctx._primary_agent_session
            if session is not None and session._activity is not None:
                self.openrtc_activity = session._activity
            await super()._shutdown_job(job_entry_task, shutdown_info)

    return InLoopJobProc


def _no_setup() -> None:
    return None


def new_job_proc(
    *,
    entrypoint: Callable[[JobContext], Awaitable[None]],
    session_end_fnc: Callable[[JobContext], Awaitable[None]] | None,
    simulation_end_fnc: Callable[[Any], Any] | None,
    session_end_timeout: float,
    shared_proc: JobProcess,
    client: Any,
) -> Any:
    """A _JobProc bound to `client` (``async send(msg)``) and the shared `shared_proc`."""
    from livekit.agents.ipc.job_proc_lazy_main import _InfClient

    proc = job_proc_class()(
        _unused_initialize,
        entrypoint,
        session_end_fnc,
        session_end_timeout=session_end_timeout,
        executor_type=JobExecutorType.THREAD,
        simulation_end_fnc=simulation_end_fnc,
    )
    # What _JobProc.initialize() would set, minus running the prewarm again.
    proc._client = client
    proc._inf_client = _InfClient(client)
    proc._job_proc = shared_proc
    return proc


def _unused_initialize(proc: JobProcess) -> None:
    raise AssertionError("in-loop jobs share the worker's prewarmed JobProcess")


def shared_job_process(http_proxy: str | None) -> JobProcess:
    """The one JobProcess every in-loop job sees as ``ctx.proc`` (prewarm runs on it once)."""
    from livekit.agents import JobProcess

    # THREAD, not PROCESS: livekit's log filters then look up the current job per record.
    return JobProcess(
        executor_type=JobExecutorType.THREAD, user_arguments=None, http_proxy=http_proxy
    )


def warm_up_framework() -> None:
    """What each job process does once before its first job (_JobProc.initialize)."""
    from livekit.agents.ipc import _preload  # noqa: F401
    from livekit.agents.telemetry.traces import _resource

    _resource({})


def start_job_message(info: RunningJobInfo) -> Any:
    msg = _ipc().proto.StartJobRequest()
    msg.running_job = info
    return msg


def shutdown_message(reason: str) -> Any:
    return _ipc().proto.ShutdownRequest(reason=reason)


def exiting_reason(msg: Any) -> str | None:
    """The reason of an ``Exiting`` message from a job, or None for any other message."""
    return msg.reason if isinstance(msg, _ipc().proto.Exiting) else None


def inference_request(msg: Any) -> tuple[str, str, bytes] | None:
    proto = _ipc().proto
    if isinstance(msg, proto.InferenceRequest):
        return msg.request_id, msg.method, msg.data
    return None


def deliver_inference(job_proc: Any, request_id: str, data: bytes | None, error: str) -> None:
    job_proc._inf_client._on_inference_response(
        _ipc().proto.InferenceResponse(request_id=request_id, data=data, error=error)
    )


class _JobPoolSelector:
    """Stands in for ``ipc.proc_pool.ProcPool``: our entrypoints bring their own job pool.

    A worker whose entrypoint has an ``openrtc_job_pool`` factory (a coroutine-isolated
    OpenRTC pool) gets that; every other AgentServer in the process gets livekit's ProcPool.
    """

    def __init__(self, original: Any) -> None:
        self.original = original

    def __call__(self, **kwargs: Any) -> Any:
        factory = getattr(kwargs.get("job_entrypoint_fnc"), "openrtc_job_pool", None)
        if factory is None:
            return self.original(**kwargs)
        return factory(**kwargs)


def install_job_pool_selector() -> None:
    proc_pool = _ipc().proc_pool
    if not isinstance(proc_pool.ProcPool, _JobPoolSelector):
        proc_pool.ProcPool = _JobPoolSelector(proc_pool.ProcPool)


def livekit_proc_pool() -> Any:
    """livekit's own ProcPool class, whether or not the selector is installed."""
    current = _ipc().proc_pool.ProcPool
    return current.original if isinstance(current, _JobPoolSelector) else current


def restore_job_pool() -> None:
    proc_pool = _ipc().proc_pool
    if isinstance(proc_pool.ProcPool, _JobPoolSelector):
        proc_pool.ProcPool = proc_pool.ProcPool.original


def install_runner_fixes() -> None:
    """Two fixes to livekit's own job runners (thread and process), for a worker to stop.

    **Drain spin.** ``AgentServer.drain`` loops while its pool lists a runner with a job,
    awaiting ``runner.join()`` (worker.py ``_drain``). The pool forgets a runner in a task that
    resumes after the runner's end (``ProcPool._monitor_process_task``), but ``join()`` of a
    runner that has ended returns without yielding to the loop (it awaits a finished task),
    so when the drain gets there first it spins forever and the worker's loop stops: no
    ping, no log, no exit. Both replacement classes yield once after ``join()``.

    **Thread runner close.** ``ThreadJobExecutor.aclose()`` awaits ``_shutting_down_fut``
    with no timeout, and only its ``_monitor_task`` resolves it, from the runner's
    ``ShuttingDown`` message. Two ways leave it unresolved (pinned 1.8.9,
    ipc/job_thread_executor.py):

    - ``initialize()`` is cancelled (a worker stopped while an idle runner was still
      prewarming: ``ProcPool._main_task`` cancels its spawn tasks) and leaves
      ``_initialize_fut`` unset; ``_main_task`` waits on it forever and never starts the
      monitor;
    - the runner joins and the monitor is cancelled after its 1 s grace before it read the
      message (a loaded host).

    The thread runner's ``aclose()`` settles what is left once the thread has joined: an
    initialization that never finished fails, and after livekit's own monitor has had its
    chance, the two shutdown futures resolve. A joined thread can send nothing more.

    ProcPool looks both classes up through their modules; the replacements go there.
    """
    ipc = _ipc()
    for module, name, build in (
        (ipc.job_thread_executor, "ThreadJobExecutor", _fixed_thread_runner),
        (ipc.job_proc_executor, "ProcJobExecutor", _fixed_process_runner),
    ):
        current = getattr(module, name)
        if not getattr(current, "openrtc_fixed", False):
            fixed = build(current)
            fixed.__name__ = fixed.__qualname__ = name
            setattr(module, name, fixed)


class _YieldAfterJoin:
    """``join()`` that yields to the loop once the runner has ended (the drain spin)."""

    openrtc_fixed = True

    async def join(self) -> None:
        await super().join()  # type: ignore[misc]
        await asyncio.sleep(0)


class _SaysWhyKilled:
    """A process runner that knows when livekit's memory monitor killed its job, and why.

    The monitor (ipc/supervised_proc.py ``_memory_monitor_task``) kills the job process as
    soon as a sample of its memory (``_sample_memory_mb``: PSS, else USS or RSS, in MB) is
    above ``_opts.memory_limit_mb``; it keeps the figure to itself, and the job's status then
    goes to LiveKit as failed with no error. The same test on the same sample, here, keeps
    the reason (:func:`job_error`).
    """

    killed_for: str = ""

    def _sample_memory_mb(self) -> tuple[float, str]:
        memory_mb, metric = super()._sample_memory_mb()  # type: ignore[misc]
        limit = self._opts.memory_limit_mb  # type: ignore[attr-defined]
        if limit > 0 and memory_mb > limit:
            self.killed_for = (
                f"job process killed for memory: it reached {memory_mb:.0f} MB ({metric}), "
                f"over job_memory_limit_mb={limit:g}"
            )
        return memory_mb, metric


def _fixed_process_runner(livekit_runner: type[Any]) -> type[Any]:
    return type("FixedProcessRunner", (_YieldAfterJoin, _SaysWhyKilled, livekit_runner), {})


def job_error(runner: Any) -> str:
    """Why a job process ended its job early: livekit killed it for its memory, or it exited
    on its own with a failure status or a signal (``os._exit``, a crash); "" otherwise."""
    if not isinstance(runner, _SaysWhyKilled):
        return ""
    code = runner.exitcode  # type: ignore[attr-defined]
    if runner.killed_for or not code:
        return runner.killed_for
    return f"job process ended ({exit_reason(code)})"


def report_job_errors(server: Any) -> None:
    """Send each job's status to LiveKit with its error (:func:`job_error`), where livekit's
    ``AgentServer._update_job_status`` always sends ``error=""``.

    livekit's worker calls ``self._update_job_status(runner)`` when a runner starts, launches
    its job or closes (worker.py ``run``), and queues the message with ``_queue_msg``; the
    replacement maps the runner's status as livekit does and adds the error.
    """
    from livekit.agents.ipc.job_executor import JobStatus
    from livekit.protocol import agent

    statuses = {JobStatus.FAILED: agent.JS_FAILED, JobStatus.SUCCESS: agent.JS_SUCCESS}

    async def update_job_status(runner: Any) -> None:
        info = runner.running_job
        if info is None:
            return
        status = statuses.get(runner.status, agent.JS_RUNNING)
        error = job_error(runner) if status == agent.JS_FAILED else ""
        update = agent.UpdateJobStatus(job_id=info.job.id, status=status, error=error)
        await server._queue_msg(agent.WorkerMessage(update_job=update))

    server._update_job_status = update_job_status


def _fixed_thread_runner(livekit_runner: type[Any]) -> type[Any]:
    class FixedThreadRunner(_YieldAfterJoin, livekit_runner):  # type: ignore[misc]
        async def aclose(self) -> None:
            if not self.started:
                return
            settle = asyncio.create_task(self._settle_after_join())
            try:
                await super().aclose()
            finally:
                settle.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await settle

        async def _settle_after_join(self) -> None:
            await self._join_fut
            if not self._initialize_fut.done():
                self._initialize_fut.set_exception(RuntimeError("the runner never initialized"))
            if self._main_atask is not None:
                await asyncio.shield(self._main_atask)
            for fut in (self._shutdown_ack_fut, self._shutting_down_fut):
                if not fut.done():
                    fut.set_result(None)

    return FixedThreadRunner
