"""Every use of livekit-agents' private API, in one place.

The pinned range (``livekit-agents>=1.8.9,<1.9``) is what these were read against; the
contract tests in ``tests/test_livekit_contract.py`` fail with a clear message when an upgrade
moves any of them. Nothing outside this package reaches into livekit's underscored names.
What touches livekit's job runners and their messages is in :mod:`.jobs` (imported as
``livekit_jobs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

logger = logging.getLogger("openrtc.worker")

if TYPE_CHECKING:
    import typer
    from livekit.agents import AgentServer, AgentSession, JobContext
    from livekit.agents.job import RunningJobInfo
    from livekit.agents.voice.run_result import RunResult


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
            # A job that is over has had its context emptied (cycles.release_ended_job); a
            # callback it left scheduled may still log in that context.
            for key, value in getattr(ctx, "_log_fields", {}).items():
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


def production_port() -> int:
    """The health/HTTP port livekit's AgentServer listens on outside dev mode (8081)."""
    from livekit.agents import AgentServer

    port: int = AgentServer._default_port.prod_default
    return port


def setup_production_logging(level: str) -> None:
    """Log like livekit's ``start`` does (JSON lines on stdout, at `level`): the supervisor
    process of a ``start`` a plugin runs with several workers uses it before any worker has set
    up its own."""
    from livekit.agents.cli import log

    log.setup_logging(level, devmode=False, console=False)


async def run_turn(session: AgentSession[Any], user_input: str) -> RunResult[Any]:
    """``await session.run(user_input=...)``, except that a turn cut short leaves no error
    behind to be logged as a future exception never retrieved ("session closed").

    Two ways livekit leaves one (voice/agent_session.py, voice/run_result.py): ``run``
    registers its ``RunResult`` as the session's ``_global_run_state`` and then raises when
    the session is closing (``generate_reply``: "AgentSession isn't running"), so nobody
    holds the run the session fails as it closes; and ``await run`` waits through
    asyncio.shield, which lets go of the run's future when the await is cancelled. Here an
    abandoned run's future is cancelled: a closing session fails only a run not yet done.
    """
    before = session._global_run_state
    try:
        run: RunResult[Any] = session.run(user_input=user_input)
    except BaseException:
        orphan = session._global_run_state
        if orphan is not None and orphan is not before:
            orphan._done_fut.cancel()
        raise
    done = run._done_fut
    done.add_done_callback(_retrieve)  # failed as the wait is cancelled: taken all the same
    try:
        await asyncio.wait({done})
    except asyncio.CancelledError:
        done.cancel()
        raise
    done.result()
    return run


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
