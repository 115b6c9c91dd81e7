"""Contract tests for ``openrtc_core._livekit.cycles``: the livekit names it relies on to
break the reference cycles a call leaves, and that each break frees what it should."""

from __future__ import annotations

import ast
import asyncio
import gc
import inspect
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from livekit.agents import AgentSession, JobContext
from test_livekit_contract import _fail

from openrtc_core._livekit import cycles


def _body(func: Callable[..., Any]) -> list[ast.stmt]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    node = tree.body[0]
    assert isinstance(node, ast.AsyncFunctionDef)
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return body


class _DropOurLines(ast.NodeTransformer):
    """Our copy of ``Chan.recv`` minus what it adds: an import, and ``del g``."""

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        return None

    def visit_Delete(self, node: ast.Delete) -> None:
        return None


def test_chan_recv_is_livekits_own_plus_one_line() -> None:
    ours = ast.Module(body=_body(cycles._chan_recv), type_ignores=[])
    ours = _DropOurLines().visit(ours)
    livekit = ast.Module(body=_body(cycles.livekit_chan_recv()), type_ignores=[])
    assert ast.dump(ours) == ast.dump(livekit), _fail(
        "utils.aio.Chan.recv (copied into _livekit/cycles.py with `del g` added)"
    )


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _cyclic_garbage() -> list[object]:
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    found = list(gc.garbage)
    gc.garbage.clear()
    gc.set_debug(0)
    return found


def _recv_frames(garbage: list[object]) -> list[object]:
    """Frames of a channel's ``recv`` (livekit's or ours) among `garbage`."""
    codes = {cycles.livekit_chan_recv().__code__, cycles._chan_recv.__code__}
    return [obj for obj in garbage if inspect.isframe(obj) and obj.f_code in codes]


async def _closed_while_waiting() -> None:
    """A reader waits on a channel that closes, and ends, as livekit's readers do."""
    from livekit.agents.utils import aio

    ch: aio.Chan[int] = aio.Chan()

    async def read() -> None:
        async for _ in ch:
            pass

    reader = asyncio.ensure_future(read())
    await asyncio.sleep(0)
    ch.close()
    await reader


async def test_a_closed_channel_leaves_no_cycle_once_installed(collector_off: None) -> None:
    from livekit.agents.utils.aio.channel import Chan

    cycles.install_acyclic_channels()
    cycles.install_acyclic_channels()  # idempotent
    assert Chan.recv is cycles._chan_recv
    assert cycles.livekit_chan_recv() is not cycles._chan_recv
    await _closed_while_waiting()
    assert not _recv_frames(_cyclic_garbage())


async def test_livekits_recv_leaves_the_cycle_this_removes(collector_off: None) -> None:
    """What the replacement is for: livekit's own recv leaves frame, future and exception in
    a cycle every time a channel closes under a waiting receiver."""
    from livekit.agents.utils.aio.channel import Chan

    installed = Chan.recv
    Chan.recv = cycles.livekit_chan_recv()  # type: ignore[method-assign]
    try:
        await _closed_while_waiting()
    finally:
        Chan.recv = installed  # type: ignore[method-assign]
    assert _recv_frames(_cyclic_garbage())


class _Owner:
    """Holds the task running on it, as livekit's session objects hold theirs."""

    task: asyncio.Task[None] | None = None


async def _cancelled_and_failed() -> list[asyncio.Task[None]]:
    async def sleeper(owner: _Owner) -> None:
        owner.task = asyncio.current_task()
        await asyncio.sleep(3600)

    async def failer(owner: _Owner) -> None:
        owner.task = asyncio.current_task()
        raise ValueError("the call's task failed")

    tasks = [asyncio.ensure_future(sleeper(_Owner())), asyncio.ensure_future(failer(_Owner()))]
    await asyncio.sleep(0)
    tasks[0].cancel()
    await asyncio.wait(tasks)
    return tasks


async def test_finished_tasks_let_go_of_their_exceptions(collector_off: None) -> None:
    tasks = await _cancelled_and_failed()
    cycles.release_task_exceptions(tasks)
    del tasks
    assert not [obj for obj in _cyclic_garbage() if isinstance(obj, BaseException)]


async def test_finished_tasks_otherwise_keep_them_in_cycles(collector_off: None) -> None:
    tasks = await _cancelled_and_failed()
    for task in tasks:  # retrieved (as settle_tasks does), not released
        task.cancelled() or task.exception()
    del tasks, task
    kinds = {type(obj) for obj in _cyclic_garbage() if isinstance(obj, BaseException)}
    assert {asyncio.CancelledError, ValueError} <= kinds


def test_release_ended_job_reads_these_names() -> None:
    from livekit.agents.ipc.job_proc_lazy_main import _JobProc
    from livekit.agents.voice import agent_activity, events, speech_handle

    assert "self._primary_agent_session" in inspect.getsource(JobContext), _fail(
        "JobContext._primary_agent_session"
    )
    session = inspect.getsource(AgentSession)
    for name in ("self._activity", "self._next_activity", "self._recorded_events"):
        assert name in session, _fail(f"AgentSession.{name[5:]}")
    assert "speech_handle" in events.SpeechCreatedEvent.model_fields, _fail(
        "SpeechCreatedEvent.speech_handle"
    )
    for cls in (JobContext, AgentSession, agent_activity.AgentActivity, speech_handle.SpeechHandle):
        assert "__slots__" not in vars(cls), _fail(f"{cls.__name__} keeps a __dict__")
    params = list(inspect.signature(_JobProc._shutdown_job).parameters)
    assert params == ["self", "job_entry_task", "shutdown_info"], _fail(
        "_JobProc._shutdown_job(job_entry_task, shutdown_info)"
    )
    source = inspect.getsource(_JobProc._shutdown_job)
    assert source.index("_primary_agent_session") < source.index("session.aclose()"), _fail(
        "_JobProc._shutdown_job closes the session after reading it"
    )
    closing = inspect.getsource(AgentSession)
    assert "self._activity = None" in closing, _fail("AgentSession forgets its activity")


def test_release_leaves_a_subclass_of_livekits_session_alone() -> None:
    class Runner:
        pass

    class MySession(AgentSession):  # type: ignore[type-arg]
        pass

    session = object.__new__(MySession)
    session.__dict__["mine"] = 1
    ctx = object.__new__(JobContext)
    ctx.__dict__["_primary_agent_session"] = session
    runner = Runner()
    runner.__dict__["_job_ctx"] = ctx
    cycles.release_ended_job(runner)
    assert vars(session) == {"mine": 1}
    assert vars(ctx) == {} and vars(runner) == {}


def _local_dataclasses(function: Callable[..., Any]) -> list[str]:
    """Classes declared inside `function` and decorated with the bare name ``dataclass``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(isinstance(d, ast.Name) and d.id == "dataclass" for d in node.decorator_list)
    ]


def test_each_reply_declares_its_segment_dataclass_through_the_modules_name() -> None:
    from livekit.agents.voice import agent_activity

    reply = agent_activity.AgentActivity._pipeline_reply_task_impl
    assert "_SpeechSegment" in _local_dataclasses(reply), _fail(
        "AgentActivity._pipeline_reply_task_impl declares `@dataclass class _SpeechSegment`"
    )
    # The decorator is looked up in the module's globals on every reply: replacing the
    # module's `dataclass` reaches it.
    assert reply.__globals__ is vars(agent_activity)
    assert "dataclass" in vars(agent_activity), _fail("agent_activity imports `dataclass`")


def _declare(dataclass: Callable[..., Any], default: object = None) -> type:
    @dataclass
    class Segment:
        text: str
        tts: object = default

    return Segment


def test_a_local_dataclass_is_made_once_and_reused() -> None:
    from dataclasses import dataclass, fields

    reused = cycles.ReusedLocalDataclasses(dataclass)
    first = _declare(reused)
    assert _declare(reused) is first
    assert [f.name for f in fields(first)] == ["text", "tts"]
    assert first("hi") == first("hi", None) and first("hi").tts is None
    assert _declare(reused, default=0) is not first  # other fields: a class of its own


def test_classes_with_more_than_fields_go_to_the_real_dataclass() -> None:
    from dataclasses import dataclass

    reused = cycles.ReusedLocalDataclasses(dataclass)

    def with_method(value: int) -> type:
        @reused
        class Segment:
            text: str

            def value(self) -> int:
                return value  # closes over the call that declared it

        return Segment

    assert with_method(1)("a").value() == 1 and with_method(2)("a").value() == 2

    def frozen() -> type:
        @reused(frozen=True)
        class Segment:
            text: str

        return Segment

    assert frozen() is not frozen()

    class TopLevel:  # not declared in a function: nothing to reuse
        text: str

    TopLevel.__qualname__ = "TopLevel"
    assert reused(TopLevel)("a").text == "a"


def _segment_dataclasses() -> set[int]:
    return {
        id(obj)
        for obj in gc.get_objects()
        if isinstance(obj, type)
        and obj.__qualname__.endswith("<locals>._SpeechSegment")
        and "__dataclass_fields__" in vars(obj)
    }


async def _replies(count: int) -> None:
    from livekit.agents import Agent

    from openrtc_testing import ScriptedLLM

    async with AgentSession[None](llm=ScriptedLLM(default_reply="ok")) as session:
        await session.start(Agent(instructions="Answers."))
        for _ in range(count):
            await session.run(user_input="hello")


async def test_replies_share_one_segment_class_once_installed(collector_off: None) -> None:
    from livekit.agents.voice import agent_activity

    cycles.install_reused_reply_classes()
    cycles.install_reused_reply_classes()  # idempotent
    installed = vars(agent_activity)["dataclass"]
    assert isinstance(installed, cycles.ReusedLocalDataclasses)
    assert not isinstance(installed.original, cycles.ReusedLocalDataclasses)
    before = _segment_dataclasses()
    await _replies(4)
    assert len(_segment_dataclasses() - before) <= 1


async def test_livekit_makes_a_segment_class_per_reply(collector_off: None) -> None:
    """What the reuse is for: without it every reply declares a new dataclass (about 30
    objects in reference cycles, for a full collection to walk and free)."""
    from livekit.agents.voice import agent_activity

    module = vars(agent_activity)
    installed = module["dataclass"]
    module["dataclass"] = getattr(installed, "original", installed)
    try:
        before = _segment_dataclasses()
        await _replies(4)
    finally:
        module["dataclass"] = installed
    assert len(_segment_dataclasses() - before) >= 4
