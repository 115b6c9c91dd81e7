"""Contract tests for the livekit-agents private API that openrtc_core/_livekit/ relies on.

When one of these fails after a livekit-agents upgrade, the message says what moved; fix
openrtc_core/_livekit/ (and only it) before widening the pinned range.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import inspect
import os
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from typing import Any, get_args

import pytest
from livekit.agents import AgentServer, JobContext
from livekit.agents.job import JobAcceptArguments, RunningJobInfo

from openrtc_core import _livekit
from openrtc_core._livekit import jobs as livekit_jobs


def _fail(what: str) -> str:
    return (
        f"livekit-agents {version('livekit-agents')} changed {what}; "
        "openrtc_core/_livekit/ must be updated for it"
    )


def test_pinned_range_is_the_one_read() -> None:
    major, minor, *_ = version("livekit-agents").split(".")
    assert (int(major), int(minor)) == (1, 8), _fail("its version outside >=1.8.9,<1.9")


def test_running_job_info_carries_accept_arguments_and_url() -> None:
    fields = {f.name for f in dataclasses.fields(RunningJobInfo)}
    assert {"accept_arguments", "job", "url", "token"} <= fields, _fail("RunningJobInfo fields")
    accept = {f.name for f in dataclasses.fields(JobAcceptArguments)}
    assert "attributes" in accept, _fail("JobAcceptArguments.attributes")


def test_job_context_keeps_running_job_info_as_info() -> None:
    source = inspect.getsource(JobContext.__init__)
    assert "self._info = info" in source, _fail("JobContext._info")


def test_connect_flag_is_set_through_the_on_connect_callback() -> None:
    from livekit.agents.ipc import job_proc_lazy_main

    assert "self._on_connect = on_connect" in inspect.getsource(JobContext.__init__), _fail(
        "JobContext._on_connect"
    )
    assert "self._on_connect()" in inspect.getsource(JobContext.connect), _fail(
        "JobContext.connect calling _on_connect"
    )
    source = inspect.getsource(job_proc_lazy_main._JobProc)
    assert "self._ctx_connect_called = True" in source, _fail("_JobProc's connect flag")
    assert "on_connect=_on_ctx_connect" in source, _fail("_JobProc's on_connect callback")


def test_legacy_cli_builder_returns_a_typer_app_with_the_verbs() -> None:
    import typer

    app = _livekit.build_livekit_cli(AgentServer())
    assert isinstance(app, typer.Typer), _fail("cli._legacy._build_cli")
    group = typer.main.get_command(app)
    commands = set(getattr(group, "commands", {}))
    assert {"dev", "start", "console", "connect", "download-files"} <= commands, _fail(
        "the legacy CLI verbs"
    )


@pytest.mark.parametrize("name", ["rtc_session", "drain", "aclose", "run", "update_options"])
def test_agent_server_public_surface(name: str) -> None:
    assert callable(getattr(AgentServer, name, None)), _fail(f"AgentServer.{name}")


def test_accept_attributes_reads_what_the_handler_accepted_with() -> None:
    class FakeCtx:
        _info = RunningJobInfo(
            accept_arguments=JobAcceptArguments(
                name="", identity="a", metadata="", attributes={"openrtc.agent": "x"}
            ),
            job=None,  # type: ignore[arg-type]
            url="ws://127.0.0.1:1",
            token="",
            worker_id="w",
            fake_job=True,
        )

    ctx = FakeCtx()
    assert _livekit.accept_attributes(ctx) == {"openrtc.agent": "x"}  # type: ignore[arg-type]
    assert _livekit.server_url(ctx) == "ws://127.0.0.1:1"  # type: ignore[arg-type]


# -- coroutine isolation ---------------------------------------------------------------------


def test_job_proc_constructor_and_attributes() -> None:
    from livekit.agents.ipc import job_proc_lazy_main

    params = inspect.signature(job_proc_lazy_main._JobProc.__init__).parameters
    expected = {
        "initialize_process_fnc",
        "job_entrypoint_fnc",
        "session_end_fnc",
        "session_end_timeout",
        "executor_type",
        "simulation_end_fnc",
    }
    assert expected <= set(params), _fail("_JobProc.__init__ parameters")
    source = inspect.getsource(job_proc_lazy_main._JobProc)
    for attribute in ("self._client", "self._inf_client", "self._job_proc", "self._job_ctx"):
        assert attribute in source, _fail(f"_JobProc's use of {attribute}")
    for method in ("entrypoint", "_start_job", "_run_job_task", "_shutdown_job"):
        assert hasattr(job_proc_lazy_main._JobProc, method), _fail(f"_JobProc.{method}")
    assert hasattr(job_proc_lazy_main, "_InfClient"), _fail("_InfClient")


def test_job_context_setup_is_what_in_loop_jobs_replace() -> None:
    source = inspect.getsource(JobContext._on_setup)
    assert "addFilter" in source, _fail("JobContext._on_setup (per-job root log filters)")
    assert "_log_fields" in inspect.getsource(JobContext), _fail("JobContext._log_fields")


def test_ipc_messages_used_in_loop() -> None:
    from livekit.agents.ipc import proto

    start = proto.StartJobRequest()
    assert "running_job" in start.__dataclass_fields__, _fail("StartJobRequest.running_job")
    assert proto.ShutdownRequest(reason="x").reason == "x", _fail("ShutdownRequest.reason")
    assert proto.Exiting(reason="y").reason == "y", _fail("Exiting.reason")
    request = proto.InferenceRequest(method="m", request_id="r", data=b"d")
    assert (request.method, request.request_id, request.data) == ("m", "r", b"d")
    assert proto.InferenceResponse(request_id="r", data=None, error="e").error == "e"


def test_proc_pool_is_looked_up_through_the_module_with_these_keywords() -> None:
    from livekit.agents import worker

    source = inspect.getsource(worker.AgentServer.run)
    assert "ipc.proc_pool.ProcPool(" in source, _fail("how AgentServer.run builds its pool")
    params = set(inspect.signature(livekit_jobs.livekit_proc_pool().__init__).parameters)
    used = {
        "initialize_process_fnc",
        "job_entrypoint_fnc",
        "session_end_fnc",
        "simulation_end_fnc",
        "session_end_timeout",
        "close_timeout",
        "inference_executor",
        "http_proxy",
    }
    assert used <= params, _fail("ProcPool.__init__ keywords")


def test_pool_selector_is_reversible_and_scoped() -> None:
    from livekit.agents.ipc import proc_pool

    before = proc_pool.ProcPool
    livekit_class = livekit_jobs.livekit_proc_pool()
    livekit_jobs.install_job_pool_selector()
    try:
        selector: Any = proc_pool.ProcPool
        assert selector is not livekit_class
        assert selector.original is livekit_class

        class Entry:
            openrtc_job_pool = staticmethod(lambda **kw: ("ours", kw["job_entrypoint_fnc"]))

        entry = Entry()
        assert selector(job_entrypoint_fnc=entry) == ("ours", entry)
        livekit_jobs.restore_job_pool()
        assert proc_pool.ProcPool is livekit_class
    finally:
        setattr(proc_pool, "ProcPool", before)  # noqa: B010  (mypy: assigning to a class)


def test_telemetry_pieces_used_by_in_loop_jobs() -> None:
    from livekit.agents.telemetry import loop_monitor, metrics, traces

    assert callable(traces._resource), _fail("telemetry.traces._resource")
    assert callable(metrics.job_started), _fail("telemetry.metrics.job_started")
    assert callable(metrics.job_ended), _fail("telemetry.metrics.job_ended")
    assert callable(loop_monitor.get_monitor), _fail("loop_monitor.get_monitor")
    assert hasattr(loop_monitor.EventLoopMonitor, "set_report_context"), _fail(
        "EventLoopMonitor.set_report_context"
    )


def test_providers_are_event_emitters_with_a_listener_table() -> None:
    from livekit import rtc
    from livekit.agents import llm, stt, tts, vad

    for base in (llm.LLM, stt.STT, tts.TTS, vad.VAD):
        assert issubclass(base, rtc.EventEmitter), _fail(f"{base.__name__} as an EventEmitter")
    source = inspect.getsource(rtc.EventEmitter.__init__)
    assert "self._events" in source, _fail("rtc.EventEmitter._events")


def test_shutdown_goes_through_the_on_shutdown_callback() -> None:
    assert "self._on_shutdown = on_shutdown" in inspect.getsource(JobContext.__init__), _fail(
        "JobContext._on_shutdown"
    )
    assert "self._on_shutdown(reason)" in inspect.getsource(JobContext.shutdown), _fail(
        "JobContext.shutdown calling _on_shutdown"
    )


def test_on_shutdown_requested_calls_back_first_then_livekit() -> None:
    calls: list[str] = []

    class Ctx:
        def _on_shutdown(self, reason: str) -> None:
            calls.append(f"livekit {reason}")

        def shutdown(self, reason: str = "user requested") -> None:
            self._on_shutdown(reason)

    ctx: Any = Ctx()
    _livekit.on_shutdown_requested(ctx, lambda reason: calls.append(f"ours {reason}"))
    ctx.shutdown("done")
    assert calls == ["ours done", "livekit done"]


def test_the_console_deprecation_goes_through_the_console_singleton(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from livekit.agents.cli import _legacy

    assert hasattr(_legacy.AgentsConsole, "get_instance"), _fail("AgentsConsole.get_instance")
    params = inspect.signature(_legacy.AgentsConsole.print).parameters
    assert {"child", "tag", "tag_style"} <= set(params), _fail("AgentsConsole.print's signature")
    assert 'tag="Deprecated"' in inspect.getsource(_legacy), _fail("the console's deprecation")
    console = _legacy.AgentsConsole.get_instance()
    shown: list[str] = []
    monkeypatch.setattr(
        console, "print", lambda child, *, tag="", tag_style=None: shown.append(tag)
    )
    _livekit.hide_console_deprecation()
    console.print("use lk", tag="Deprecated")
    console.print("starting", tag="Agents")
    assert shown == ["Agents"]


def test_an_unstarted_session_keeps_its_activity_and_room_io_in_these_attributes() -> None:
    from livekit.agents import AgentSession

    source = inspect.getsource(AgentSession)
    for name in ("self._started", "self._activity", "self._room_io"):
        assert name in source, _fail(f"AgentSession.{name[5:]}")
    close = inspect.getsource(AgentSession._aclose_locked)
    assert "if not self._started" in close, _fail("aclose() of a session that never started")


def test_job_executors_close_through_the_proc_pool_with_their_job_and_status() -> None:
    from livekit.agents.ipc import job_executor, proc_pool

    assert "process_closed" in get_args(proc_pool.EventTypes)
    assert {"running_job", "status"} <= set(dir(job_executor.JobExecutor))
    assert job_executor.JobStatus.FAILED.name == "FAILED"
    source = inspect.getsource(AgentServer.run)
    assert "self._proc_pool = ipc.proc_pool.ProcPool(" in source


def test_the_production_port_is_the_agent_servers_default() -> None:
    default = getattr(AgentServer, "_default_port", None)
    assert default is not None and hasattr(default, "prod_default"), _fail(
        "AgentServer._default_port (a ServerEnvOption with prod_default)"
    )
    assert _livekit.production_port() == default.prod_default == 8081


def test_production_logging_is_livekits_json_on_stdout() -> None:
    import logging

    from livekit.agents.cli import log

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        _livekit.setup_production_logging("INFO")
        added = [h for h in root.handlers if h not in handlers]
        assert len(added) == 1, _fail("cli.log.setup_logging (one handler added to the root)")
        assert isinstance(added[0].formatter, log.JsonFormatter), _fail(
            "cli.log.setup_logging's production formatter"
        )
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)


def _livekit_class(runner: type[Any]) -> type[Any]:
    """livekit's class under a fixed runner class (the first of its bases that is livekit's)."""
    return next(c for c in runner.__mro__ if c.__module__.startswith("livekit."))


@contextlib.contextmanager
def _livekit_runners() -> Iterator[None]:
    """livekit's own runner classes in their modules for the test, whatever was there before."""
    from livekit.agents.ipc import job_proc_executor, job_thread_executor

    places = [(job_thread_executor, "ThreadJobExecutor"), (job_proc_executor, "ProcJobExecutor")]
    before = [getattr(module, name) for module, name in places]
    try:
        for (module, name), current in zip(places, before, strict=True):
            original = _livekit_class(current)
            setattr(module, name, original)
        yield
    finally:
        for (module, name), current in zip(places, before, strict=True):
            setattr(module, name, current)


def test_runners_are_built_through_their_modules_with_these_attributes() -> None:
    from livekit.agents.ipc import job_thread_executor

    with _livekit_runners():
        livekit_thread_runner = job_thread_executor.ThreadJobExecutor
    spawn = inspect.getsource(livekit_jobs.livekit_proc_pool()._proc_spawn_task)
    for built in ("job_thread_executor.ThreadJobExecutor(", "job_proc_executor.ProcJobExecutor("):
        assert built in spawn, _fail(f"how ProcPool builds runners ({built})")
    drain = inspect.getsource(AgentServer.drain)
    assert "await proc.join()" in drain, _fail("AgentServer.drain's loop over runners")
    start = inspect.getsource(livekit_thread_runner._start)
    assert "self._join_fut" in start and "self._main_atask" in start, _fail(
        "ThreadJobExecutor._start (its _join_fut and _main_atask)"
    )
    close = inspect.getsource(livekit_thread_runner.aclose)
    for name in ("_shutdown_ack_fut", "_shutting_down_fut"):
        assert f"self.{name}" in close, _fail(f"what ThreadJobExecutor.aclose waits on ({name})")
    main = inspect.getsource(livekit_thread_runner._main_task)
    assert "await self._initialize_fut" in main, _fail("ThreadJobExecutor._main_task")


def _thread_runner(initialize: Callable[[Any], None]) -> Any:
    from livekit.agents.ipc import job_thread_executor

    async def entrypoint(ctx: JobContext) -> None:
        return None

    return job_thread_executor.ThreadJobExecutor(
        initialize_process_fnc=initialize,
        job_entrypoint_fnc=entrypoint,
        session_end_fnc=None,
        simulation_end_fnc=None,
        initialize_timeout=10,
        close_timeout=5,
        session_end_timeout=5,
        inference_executor=None,
        ping_interval=2.5,
        high_ping_threshold=0.5,
        http_proxy=None,
        loop=asyncio.get_running_loop(),
    )


def test_the_fixes_replace_both_runner_classes_once() -> None:
    from livekit.agents.ipc import job_proc_executor, job_thread_executor

    with _livekit_runners():
        livekit_classes = (job_thread_executor.ThreadJobExecutor, job_proc_executor.ProcJobExecutor)
        livekit_jobs.install_runner_fixes()
        livekit_jobs.install_runner_fixes()  # once is enough; a second changes nothing
        fixed = (job_thread_executor.ThreadJobExecutor, job_proc_executor.ProcJobExecutor)
        for ours, theirs in zip(fixed, livekit_classes, strict=True):
            assert _livekit_class(ours) is theirs and ours.__name__ == theirs.__name__


async def test_a_thread_runner_closed_while_it_initializes_closes() -> None:
    with _livekit_runners():
        livekit_jobs.install_runner_fixes()
        runner = _thread_runner(lambda proc: time.sleep(0.5))
        await runner.start()
        initializing = asyncio.create_task(runner.initialize())
        await asyncio.sleep(0.1)
        initializing.cancel()  # what ProcPool does to its spawn tasks when the worker stops
        with pytest.raises(asyncio.CancelledError):
            await initializing
        # livekit's own class never returns here (it waits for a message nobody reads).
        await asyncio.wait_for(runner.aclose(), 10)


async def test_join_of_an_ended_runner_lets_the_loop_run() -> None:
    with _livekit_runners():
        livekit_jobs.install_runner_fixes()
        runner = _thread_runner(lambda proc: None)
        await runner.start()
        await runner.initialize()
        await runner.aclose()
        # livekit's drain awaits join() in a loop until the pool forgets the runner, which
        # takes a turn of the loop: a join() that never yields would spin that loop forever.
        turns: list[int] = []
        asyncio.get_running_loop().call_soon(turns.append, 1)
        await runner.join()
        assert turns == [1]


def test_the_memory_monitor_kills_on_the_sample_the_process_runner_reads() -> None:
    from livekit.agents.ipc import supervised_proc

    monitor = inspect.getsource(supervised_proc.SupervisedProc._memory_monitor_task)
    for said in (
        "self._sample_memory_mb",
        "memory_mb > self._opts.memory_limit_mb",
        "await self._send_kill_signal()",
    ):
        assert said in monitor, _fail(f"SupervisedProc._memory_monitor_task ({said})")
    sample = inspect.signature(supervised_proc.SupervisedProc._sample_memory_mb)
    assert list(sample.parameters) == ["self"], _fail("SupervisedProc._sample_memory_mb")


async def test_a_process_runner_past_its_memory_limit_says_why_it_is_killed() -> None:
    import multiprocessing

    from livekit.agents.ipc import job_proc_executor

    async def entrypoint(ctx: JobContext) -> None:
        return None

    with _livekit_runners():
        livekit_jobs.install_runner_fixes()
        runner = job_proc_executor.ProcJobExecutor(
            initialize_process_fnc=lambda proc: None,
            job_entrypoint_fnc=entrypoint,
            session_end_fnc=None,
            simulation_end_fnc=None,
            inference_executor=None,
            initialize_timeout=10,
            close_timeout=5,
            session_end_timeout=5,
            memory_warn_mb=0,
            memory_limit_mb=1,  # any process is past it
            ping_interval=2.5,
            ping_timeout=60,
            high_ping_threshold=0.5,
            http_proxy=None,
            mp_ctx=multiprocessing.get_context("forkserver"),
            loop=asyncio.get_running_loop(),
        )
    assert livekit_jobs.job_error(runner) == ""
    runner._pid = os.getpid()  # what the monitor samples: this process, for the test
    memory_mb, metric = runner._sample_memory_mb()
    assert livekit_jobs.job_error(runner) == (
        f"job process killed for memory: it reached {memory_mb:.0f} MB ({metric}), "
        "over job_memory_limit_mb=1"
    )


def test_job_status_goes_out_through_update_job_status_and_the_message_queue() -> None:
    run = inspect.getsource(AgentServer.run)
    assert "self._update_job_status(proc)" in run, _fail("AgentServer.run's job status hook")
    update = inspect.getsource(AgentServer._update_job_status)
    for said in ("proc.running_job", "proc.status", "await self._queue_msg(msg)", 'error=""'):
        assert said in update, _fail(f"AgentServer._update_job_status ({said})")
    assert inspect.iscoroutinefunction(AgentServer._queue_msg), _fail("AgentServer._queue_msg")


class _Session:
    """Stands in for an AgentSession whose ``run`` a test drives: what ``run_turn`` reads."""

    def __init__(self, run: Any = None, raises: bool = False) -> None:
        self._global_run_state: Any = None
        self._run = run
        self._raises = raises

    def run(self, *, user_input: str) -> Any:
        self._global_run_state = self._run
        if self._raises:
            raise RuntimeError("AgentSession isn't running")
        return self._run


async def test_a_run_the_session_registers_then_refuses_is_given_up() -> None:
    from livekit.agents import AgentSession

    session: AgentSession[None] = AgentSession()
    with pytest.raises(RuntimeError, match="isn't running"):
        session.run(user_input="hi")  # livekit's own: registered, then refused
    assert session._global_run_state is not None, _fail("AgentSession.run's run state")
    assert not session._global_run_state.done()
    closing: AgentSession[None] = AgentSession()
    with pytest.raises(RuntimeError, match="isn't running"):
        await _livekit.run_turn(closing, "hi")
    assert closing._global_run_state is not None and closing._global_run_state.done()


@pytest.mark.parametrize("cut_first", [True, False], ids=["cut-first", "cut-as-it-fails"])
async def test_a_cut_wait_for_a_run_leaves_no_error_behind(cut_first: bool) -> None:
    from livekit.agents.voice.run_result import RunResult

    loop = asyncio.get_running_loop()
    lost: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: lost.append(context))
    try:
        run: RunResult[None] = RunResult(output_type=None)
        assert isinstance(getattr(run, "_done_fut", None), asyncio.Future), _fail(
            "RunResult._done_fut (the future a session fails a run through)"
        )
        waiting = asyncio.ensure_future(_livekit.run_turn(_Session(run), "hi"))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        if cut_first:  # the caller's turn is cut, then the session closes (as it does)
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            assert run.done()
            if not run._done_fut.done():
                run._done_fut.set_exception(RuntimeError("session closed"))
        else:  # the session fails the run, and the turn is cut before the caller sees it
            run._done_fut.set_exception(RuntimeError("session closed"))
            await asyncio.sleep(0)
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
        del run, waiting
        await asyncio.sleep(0)  # the cancelled wait lets go of the run
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert not lost, lost


def test_a_closing_session_fails_only_a_run_not_done() -> None:
    from livekit.agents.voice import agent_session

    source = inspect.getsource(agent_session)
    guarded = (
        "if self._global_run_state and not self._global_run_state.done():\n"
        "                    self._global_run_state._done_fut.set_exception("
    )
    assert guarded in source, _fail(
        "how a closing session fails its run (it must skip a run already done)"
    )


async def test_a_run_waited_for_gives_its_end_or_its_error() -> None:
    from livekit.agents.voice.run_result import RunResult

    ended: RunResult[None] = RunResult(output_type=None)
    ended._done_fut.set_result(None)
    assert await _livekit.run_turn(_Session(ended), "hi") is ended  # type: ignore[arg-type]
    failed: RunResult[None] = RunResult(output_type=None)
    failed._done_fut.set_exception(RuntimeError("session closed"))
    with pytest.raises(RuntimeError, match="session closed"):
        await _livekit.run_turn(_Session(failed), "hi")  # type: ignore[arg-type]
