"""Reference cycles livekit-agents leaves behind every call, broken where OpenRTC reaches them.

A call's objects that only reference cycles keep alive wait for a full garbage collection,
and a full collection stops the worker's loop for every session it serves (docs/soak.md).
livekit's session machinery leaves about 1,000 such objects a call. What is here breaks the
cycles at their source (a channel's receive) or once the call has ended (the job's objects),
so that reference counting frees them the moment the call is over, and stops each reply
from declaring a new class (:class:`ReusedLocalDataclasses`).

Part of :mod:`openrtc_core._livekit`, which re-exports every name here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def _chan_recv(self: Any) -> Any:
    """``utils.aio.Chan.recv`` (utils/aio/channel.py) minus one cycle per closed channel.

    When the channel closes, ``close()`` sets a ``ChanClosed`` on each waiting receiver's
    future and the ``await`` re-raises it: the exception's traceback holds this frame,
    whose local ``g`` holds the future, which holds the exception. Every channel a session
    closes while something waits on it (about ten a call) left that cycle, with whatever
    the frame referenced. Dropping ``g`` before re-raising is the only change.
    """
    from livekit.agents.utils.aio.channel import ChanClosed

    while self.empty() and not self._close_ev.is_set():
        g = self._loop.create_future()
        self._gets.append(g)

        try:
            await g
        except ChanClosed:
            del g
            raise
        except BaseException:
            g.cancel()
            with contextlib.suppress(ValueError):
                self._gets.remove(g)

            if not self.empty() and not g.cancelled():
                self._wakeup_next(self._gets)

            raise

    return self.recv_nowait()


_chan_recv.openrtc_acyclic = True  # type: ignore[attr-defined]


def livekit_chan_recv() -> Any:
    """livekit's own ``Chan.recv``, whichever is installed (for the contract test)."""
    from livekit.agents.utils.aio.channel import Chan

    recv = Chan.recv
    return getattr(recv, "openrtc_replaced", recv)


def install_acyclic_channels() -> None:
    """Make every livekit channel's ``recv`` the one above (idempotent)."""
    from livekit.agents.utils.aio.channel import Chan

    if getattr(Chan.recv, "openrtc_acyclic", False):
        return
    _chan_recv.openrtc_replaced = Chan.recv  # type: ignore[attr-defined]
    Chan.recv = _chan_recv  # type: ignore[method-assign]


def release_task_exceptions(tasks: list[asyncio.Task[Any]]) -> None:
    """Let the finished `tasks` of an ended call drop the exceptions they ended with.

    A task keeps the exception it ended with (``CancelledError`` for a cancelled one) and the
    exception keeps its traceback, whose frames hold the task's own objects: the task's
    session, through them the task itself. Both were reported already (livekit logs what
    it must; :func:`~openrtc_core.isolation.coroutine.job.settle_tasks` retrieved the rest).
    A cancelled task hands its ``CancelledError`` over to whoever asks for its result
    (asyncio's C futures keep it only until then); for an exception, its traceback and
    those of the exceptions chained to it are cleared.
    """
    for task in tasks:
        if not task.done():
            continue
        try:
            task.result()
        except BaseException as exc:  # every kind is released the same way
            _clear_tracebacks(exc)
            del exc


def _clear_tracebacks(exc: BaseException) -> None:
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        pending.extend((current.__context__, current.__cause__))


def release_ended_job(job_proc: Any) -> None:
    """Take apart what livekit built for a call that is over, so reference counting frees it.

    livekit's objects of one call reference each other in cycles no single change removes:
    every task the session starts keeps a copy of the job's context, which holds the
    ``JobContext`` (``_JobContextVar``), which holds the ``AgentSession`` (through
    ``_primary_agent_session``, its shutdown callbacks, its log filter), which holds the
    tasks; the session's ``_recorded_events`` hold ``SpeechHandle`` s whose done callbacks
    are methods of the ``RunResult`` s that hold them; the agent activity
    (``openrtc_activity``, remembered by the job runner as the session closed, see
    :func:`.jobs.job_proc_class`) holds its audio recognition and tool executor, which hold
    it. With about 700 objects hanging off them, all of it waited for a full collection.

    Called once the job is over and every task it started has finished: then nothing of
    livekit's uses these objects again, and emptying their attribute dicts breaks every
    cycle through them. Only livekit's own classes are emptied, never a subclass (an
    application's ``AgentSession`` subclass keeps its attributes; its call's cycles are left
    to the collector).
    """
    from livekit.agents import AgentSession, JobContext
    from livekit.agents.voice.agent_activity import AgentActivity
    from livekit.agents.voice.speech_handle import SpeechHandle

    parts: list[Any] = [job_proc]
    activity = getattr(job_proc, "openrtc_activity", None)
    if type(activity) is AgentActivity:
        parts.append(activity)
    ctx = getattr(job_proc, "_job_ctx", None)
    if type(ctx) is JobContext:
        session = ctx._primary_agent_session
        if type(session) is AgentSession:
            parts.extend(
                handle
                for event in session._recorded_events
                if type(handle := getattr(event, "speech_handle", None)) is SpeechHandle
            )
            parts.extend(
                part
                for part in (session._activity, session._next_activity)
                if type(part) is AgentActivity
            )
            parts.append(session)
        parts.append(ctx)
    for part in parts:
        vars(part).clear()


_CLASS_BODY_NAMES = frozenset(
    {"__module__", "__qualname__", "__annotations__", "__dict__", "__weakref__", "__doc__"}
)


def _plain_fields(cls: type) -> tuple[tuple[str, object, object], ...] | None:
    """The fields of `cls` as ``(name, annotation, default)``, if its body declares fields
    and nothing else (no method, nothing that could close over the enclosing call); else None.
    """
    body = vars(cls)
    annotations: dict[str, object] = body.get("__annotations__", {})
    if not set(body) <= _CLASS_BODY_NAMES | set(annotations):
        return None
    missing = object()
    defaults = [body.get(name, missing) for name in annotations]
    if any(callable(default) for default in defaults):
        return None
    return tuple(
        (name, annotation, None if default is missing else ("default", default))
        for (name, annotation), default in zip(annotations.items(), defaults, strict=True)
    )


class ReusedLocalDataclasses:
    """``dataclass`` for a livekit module that declares dataclasses inside its methods.

    livekit's ``AgentActivity`` declares ``@dataclass class _SpeechSegment`` inside
    ``_pipeline_reply_task_impl`` (``_MsgOutput`` for realtime models), so every reply makes
    a new class: a type, its three generated methods, their fields, about 30 objects in
    reference cycles (a class refers to itself through its ``__mro__`` and descriptors) that
    only a full collection frees, and ``typing``'s cache of ``Chan[_SpeechSegment]`` kept up
    to 128 dead ones alive in an idle worker. Measured in ``python -m benchmarks.soak
    --live-census``: 320 such classes, 10,000 of the 65,000 objects a full collection walked
    with 50 calls live.

    Here the first class of each local name is made a dataclass once and handed back for
    every later declaration whose fields are the same (name, annotation, default), as long
    as the body declares fields and nothing else: instances behave the same, only the class
    is shared. Anything else goes to the real ``dataclass``.
    """

    def __init__(self, original: Callable[..., Any]) -> None:
        self.original = original
        self.made: dict[str, tuple[tuple[tuple[str, object, object], ...], type]] = {}

    def __call__(self, cls: type | None = None, /, **options: Any) -> Any:
        if cls is None or options or "<locals>" not in cls.__qualname__:
            return self.original(cls, **options)
        fields = _plain_fields(cls)
        if fields is None:
            return self.original(cls)
        known = self.made.get(cls.__qualname__)
        if known is not None and known[0] == fields:
            return known[1]
        made: type = self.original(cls)
        self.made[cls.__qualname__] = (fields, made)
        return made


def install_reused_reply_classes() -> None:
    """Make ``agent_activity``'s ``dataclass`` a :class:`ReusedLocalDataclasses` (idempotent)."""
    from livekit.agents.voice import agent_activity

    module = vars(agent_activity)
    if isinstance(module["dataclass"], ReusedLocalDataclasses):
        return
    module["dataclass"] = ReusedLocalDataclasses(module["dataclass"])
