"""Every use of livekit-agents' private API, in one place.

The pinned range (``livekit-agents>=1.8.9,<1.9``) is what these were read against; the
contract tests in ``tests/test_livekit_contract.py`` fail with a clear message when an upgrade
moves any of them. Nothing outside this module reaches into livekit's underscored names.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from livekit.agents import JobExecutorType

logger = logging.getLogger("openrtc.worker")

if TYPE_CHECKING:
    import typer
    from livekit.agents import AgentServer, AgentSession, JobContext, JobProcess
    from livekit.agents.job import RunningJobInfo


def running_job_info(ctx: JobContext) -> RunningJobInfo:
    """The job as the worker accepted it (``JobContext._info``, job.py)."""
    return ctx._info


def accept_attributes(ctx: JobContext) -> dict[str, str]:
    """The participant attributes the request handler accepted the job with."""
    attributes = running_job_info(ctx).accept_arguments.attributes
    return dict(attributes or {})


def server_url(ctx: JobContext) -> str:
    """The LiveKit URL the job was assigned from (``RunningJobInfo.url``)."""
    return running_job_info(ctx).url


def mark_connected(ctx: JobContext) -> None:
    """Tell livekit's job runner the job's session is up, as ``ctx.connect()`` would.

    A session started with no room (a simulated call) has nothing to connect to. Without
    this, livekit warns for every such job that it "completed without establishing a
    connection" and that the room connection was not established within 10 s
    (ipc/job_proc_lazy_main.py, both gated on the flag ``JobContext._on_connect`` sets).
    """
    ctx._on_connect()


def on_shutdown_requested(ctx: JobContext, callback: Callable[[str], None]) -> None:
    """Call `callback(reason)` the moment anyone asks the job to shut down (``ctx.shutdown``),
    before livekit closes the session and runs the shutdown callbacks.

    ``JobContext.shutdown`` calls the ``on_shutdown`` function the job runner gave the
    context (job.py ``JobContext.shutdown`` -> ``self._on_shutdown``); it is wrapped here.
    """
    requested = ctx._on_shutdown

    def shutdown_requested(reason: str) -> None:
        callback(reason)
        requested(reason)

    ctx._on_shutdown = shutdown_requested


async def end_jobs_and_report(server: AgentServer, *, within_s: float = 10.0) -> None:
    """Close every job still running on `server` and wait until their final status has been
    handed to the connection (not only queued), within `within_s`.

    The worker's job pool is ``AgentServer._proc_pool``; a closed job's status goes out through
    a task in ``_job_lifecycle_tasks`` that queues it on ``_msg_chan``, which the connection's
    send loop drains (worker.py).
    """
    executors = [proc for proc in server._proc_pool.processes if proc.running_job]
    await asyncio.gather(*(proc.aclose() for proc in executors), return_exceptions=True)
    deadline = asyncio.get_running_loop().time() + within_s
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.gather(*server._job_lifecycle_tasks, return_exceptions=True)
        if server._msg_chan.empty():
            return
        await asyncio.sleep(0.01)


async def close_unstarted_session(session: AgentSession[Any]) -> None:
    """Close what a session that never finished starting left running.

    ``AgentSession.start()`` starts the agent activity (and with it the STT pipeline) before
    it joins the room; when joining fails, ``start()`` raises before the session counts as
    started, and ``aclose()`` returns at once for a session that is not started
    (voice/agent_session.py ``_started``). The activity, its STT stream and its room IO would
    outlive the job. Closes ``_activity`` and ``_room_io`` of such a session.
    """
    if session._started:
        return
    activity, session._activity = session._activity, None
    if activity is not None:
        await activity.aclose()
    room_io, session._room_io = session._room_io, None
    if room_io is not None:
        await room_io.aclose()


def hide_console_deprecation() -> None:
    """Drop what livekit's console prints tagged "Deprecated" (its ``console`` mode tells the
    user to use the Go ``lk`` tool instead; ``openrtc console`` is ours to recommend).

    livekit prints it through its console singleton (cli/_legacy.py ``AgentsConsole``,
    ``get_instance()`` and ``print(child, *, tag, tag_style)``), not through logging.
    """
    from livekit.agents.cli import _legacy

    console = _legacy.AgentsConsole.get_instance()
    if getattr(console.print, "openrtc_filtered", False):
        return
    shown = console.print

    def print_unless_deprecated(child: Any, *, tag: str = "", tag_style: Any = None) -> None:
        if tag != "Deprecated":
            shown(child, tag=tag, tag_style=tag_style)

    print_unless_deprecated.openrtc_filtered = True  # type: ignore[attr-defined]
    console.print = print_unless_deprecated  # type: ignore[method-assign]


def build_livekit_cli(server: AgentServer) -> typer.Typer:
    """livekit's own ``dev|start|console|connect|download-files`` app bound to `server`.

    ``cli.run_app`` builds this app and invokes it on ``sys.argv`` at once; we need the app
    itself to pass an explicit argv and a program name (``cli/_legacy.py`` ``_build_cli``).
    """
    from livekit.agents.cli import _legacy

    return _legacy._build_cli(server)


# ---------------------------------------------------------------------------------------------
# Running jobs as tasks in the worker's own event loop (coroutine isolation)
# ---------------------------------------------------------------------------------------------
#
# livekit's per-job lifecycle (job context, shutdown callbacks, session end, the job's root
# span) lives in ipc/job_proc_lazy_main._JobProc, which talks to its executor through an object
# with ``async send()`` and a message channel. The coroutine backend drives one _JobProc per
# job in the worker's loop, with a shared JobProcess instead of a per-job initialize().


def session_view(provider: Any) -> Any:
    """A per-session view of a shared provider (LLM, STT, TTS, VAD): same model and client,
    its own event listeners.

    livekit's providers are event emitters, and every AgentSession subscribes to its
    providers' ``metrics_collected`` and ``error`` events; the provider's streams emit on the
    object they were made from. One provider object shared by N sessions would send each
    request's metrics to all N (N squared work) and every session's errors to all of them
    (livekit closes a session after a few errors it sees). A shallow copy with its own
    listener table keeps the shared model, connections and options, and its streams emit
    only to its own session.
    """
    from livekit import rtc

    if not isinstance(provider, rtc.EventEmitter):
        return provider
    view = copy.copy(provider)
    view._events = {}
    return view


def _ipc() -> Any:
    from livekit.agents import ipc

    return ipc


def job_proc_class() -> type[Any]:
    from livekit.agents.ipc.job_proc_lazy_main import _JobProc

    class InLoopJobProc(_JobProc):
        """_JobProc minus the per-job log filter on every root handler.

        livekit adds one filter per job to each root handler (JobContext._on_setup); with
        hundreds of jobs in one process every log record would run hundreds of filters.
        One process-wide filter (:func:`install_job_log_fields`) does the same job.
        """

        def _start_job(self, msg: Any) -> None:
            super()._start_job(msg)
            self._job_ctx._on_setup = _no_setup  # type: ignore[method-assign]

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


def job_metrics(started: bool) -> None:
    """livekit's process-wide running-jobs gauge, which only its process executor updates."""
    from livekit.agents.telemetry import metrics

    if started:
        metrics.job_started()
    else:
        metrics.job_ended()


@contextlib.contextmanager
def loop_monitor_paused(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Stop livekit's loop monitor on `loop` for the block, then start it again as it was.

    livekit's CLI monitors the worker's loop (cli/cli.py ``start_monitoring(loop,
    name="worker", emit_spans=False)``); the monitor keeps its name and span switch in
    ``_name`` and ``_emit_spans`` (telemetry/loop_monitor.py ``EventLoopMonitor``).
    """
    from livekit.agents.telemetry import loop_monitor

    monitor = loop_monitor.get_monitor(loop)
    if monitor is None:
        yield
        return
    name, emit_spans = monitor._name, monitor._emit_spans
    loop_monitor.stop_monitoring(loop)
    try:
        yield
    finally:
        loop_monitor.start_monitoring(loop, name=name, emit_spans=emit_spans)


def forget_loop_monitor_job(loop: asyncio.AbstractEventLoop) -> None:
    """Each job points livekit's loop monitor at its own context; in a shared loop the last
    job would take the blame for every stall (and be kept alive). Detach it."""
    from livekit.agents.telemetry import loop_monitor

    monitor = loop_monitor.get_monitor(loop)
    if monitor is not None:
        monitor.set_report_context(None)


class _JobLogFields(logging.Filter):
    """Adds the current job's log fields to records emitted inside a job (one for all jobs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from livekit.agents import get_job_context

        ctx = get_job_context(required=False)
        if ctx is not None:
            for key, value in ctx._log_fields.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        return True


_JOB_LOG_FIELDS = _JobLogFields()


def publish_attributes(ctx: JobContext, attributes: dict[str, str]) -> None:
    """Set attributes on the job's agent participant, when it is in a room (not otherwise:
    a simulated call has none)."""
    room = ctx.room
    if not room.isconnected():
        return
    task = asyncio.ensure_future(room.local_participant.set_attributes(attributes))
    task.add_done_callback(_log_attribute_failure)


def _log_attribute_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("could not update the agent participant's attributes: %s", task.exception())


def on_job_closed(server: AgentServer, callback: Callable[[str, bool], None]) -> None:
    """Call ``callback(job_id, failed)`` in the worker when a job's executor closes, whatever
    the isolation (``AgentServer._proc_pool``, created by ``run``: call after it started).
    `failed` is livekit's view: the executor's status (a job process that crashed, or an
    OpenRTC in-loop job whose session failed)."""
    from livekit.agents.ipc.job_executor import JobStatus

    def closed(executor: Any) -> None:
        info = executor.running_job
        if info is not None:
            callback(info.job.id, executor.status == JobStatus.FAILED)

    server._proc_pool.on("process_closed", closed)


def install_job_log_fields() -> None:
    for handler in logging.getLogger().handlers:
        if _JOB_LOG_FIELDS not in handler.filters:
            handler.addFilter(_JOB_LOG_FIELDS)


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


def production_port() -> int:
    """The health/HTTP port livekit's AgentServer listens on outside dev mode (8081)."""
    from livekit.agents import AgentServer

    port: int = AgentServer._default_port.prod_default
    return port


def setup_production_logging(level: str) -> None:
    """Log like livekit's ``start`` does (JSON lines on stdout, at `level`): the supervisor
    process of ``start --workers N`` uses it before any worker has set up its own."""
    from livekit.agents.cli import log

    log.setup_logging(level, devmode=False, console=False)


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


def _fixed_process_runner(livekit_runner: type[Any]) -> type[Any]:
    return type("FixedProcessRunner", (_YieldAfterJoin, livekit_runner), {})


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
