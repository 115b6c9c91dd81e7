"""Fault containment: an exception in one agent's own code ends that session, and only it.

livekit catches exceptions raised by agent code running inside a session (``on_enter``, a
``*_node`` override, a tool) and logs them with their traceback; the call then goes on in an
undefined state. A worker hosting many calls should instead end the one whose code failed,
with a failed status and one line naming the job, the agent and the error.

Errors inside livekit or a provider plugin (a network error after retries, say) are livekit's
to handle and are left alone: only a traceback that passes through the agent's own code
counts, that is, code outside the installed libraries and the standard library, or in the
module that defines the agent.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import site
import sysconfig
import weakref
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from .registry import CURRENT_SESSION, SessionTag

_PATHS = sysconfig.get_paths()
LIBRARY_ROOTS = tuple(
    str(Path(p).resolve())
    for p in {
        _PATHS["stdlib"],
        _PATHS["purelib"],
        _PATHS["platlib"],
        site.getusersitepackages(),
        *site.getsitepackages(),
    }
)
_FRAMEWORK = ("livekit.", "openrtc_", "asyncio.", "opentelemetry.")


def _user_frames(tb: TracebackType | None, user_modules: frozenset[str]) -> bool:
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        filename = str(Path(tb.tb_frame.f_code.co_filename).resolve())
        if module in user_modules:
            return True
        if not module.startswith(_FRAMEWORK) and not filename.startswith(LIBRARY_ROOTS):
            return True
        tb = tb.tb_next
    return False


class WatchedSession(Protocol):
    """What the fault watcher needs of a running session (``entrypoint.SessionRun``)."""

    @property
    def job_id(self) -> str: ...

    @property
    def user_modules(self) -> frozenset[str]: ...

    def fail(self, error: str) -> None: ...

    def fault(self, exc: BaseException, error: str) -> None: ...


class SessionFaults(logging.Handler):
    """Watches livekit's error logs for exceptions from agent code, per running session."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self._runs: weakref.WeakValueDictionary[str, WatchedSession] = weakref.WeakValueDictionary()
        self._installed = False

    def watch(self, run: WatchedSession) -> None:
        if not self._installed:
            logging.getLogger("livekit.agents").addHandler(self)
            self._installed = True
        self._runs[run.job_id] = run

    def fail(self, job_id: str, error: str) -> None:
        """Fail the running session of `job_id`, if this process runs it."""
        run = self._runs.get(job_id)
        if run is not None:
            run.fail(error)

    def emit(self, record: logging.LogRecord) -> None:
        if not record.exc_info or record.exc_info[1] is None:
            return
        from livekit.agents import get_job_context

        ctx = get_job_context(required=False)
        run = self._runs.get(ctx.job.id) if ctx is not None else None
        if run is None:
            return
        _, exc, tb = record.exc_info
        if _user_frames(tb, run.user_modules):
            run.fault(exc, f"{type(exc).__name__}: {exc} ({record.getMessage()})")


FAULTS = SessionFaults()


async def contained(coro: Coroutine[Any, Any, Any], job_id: str) -> Any:
    """Run a session's coroutine; ``sys.exit()`` or ``KeyboardInterrupt`` from its code fails
    that session (job `job_id`), naming the cause, instead of leaving the event loop.

    asyncio lets both out of the event loop: in a worker's shared loop (coroutine isolation)
    every live call would go with it; in a job's own loop (thread and process isolation) the
    job's thread or process died unreported, and its call hung until the caller gave up. Here
    they become an ordinary exception of this task, and the session whose code raised them
    fails, like any exception in an agent's code.
    """
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as exc:
        error = f"{type(exc).__name__}({', '.join(map(repr, exc.args))}) raised by agent code"
        FAULTS.fail(job_id, error)
        task = asyncio.current_task()
        if task is not None:
            # Said once, as the session's failure: a task nobody awaits (``on_enter``) would
            # log it again as "exception was never retrieved".
            task.add_done_callback(_retrieved)
        raise RuntimeError(f"{error}; only this session ends") from exc


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class ContainingTaskFactory:
    """A loop's task factory that runs every task a session creates in :func:`contained`
    (tasks created while :data:`CURRENT_SESSION` names it); other tasks are left alone."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def __call__(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any],
        **kwargs: Any,
    ) -> asyncio.Task[Any]:
        context: contextvars.Context | None = kwargs.get("context")
        tag = context.run(CURRENT_SESSION.get) if context is not None else CURRENT_SESSION.get()
        task = self._create(loop, coro if tag is None else contained(coro, tag.job_id), kwargs)
        if tag is not None:
            self.created(task, tag, coro)
        return task

    def _create(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], kwargs: Any
    ) -> asyncio.Task[Any]:
        if self.previous is not None:
            task: asyncio.Task[Any] = self.previous(loop, coro, **kwargs)
            return task
        return asyncio.Task(coro, loop=loop, **kwargs)

    def created(
        self, task: asyncio.Task[Any], tag: SessionTag, coro: Coroutine[Any, Any, Any]
    ) -> None:
        """Called for each session task it created (`coro` is the session's own coroutine);
        a subclass records what it needs."""


def contain_exits(loop: asyncio.AbstractEventLoop) -> None:
    """Contain ``sys.exit()`` and ``KeyboardInterrupt`` in the sessions run on `loop` (see
    :func:`contained`); a loop whose factory already does (coroutine isolation's) is kept."""
    current = loop.get_task_factory()
    if isinstance(current, ContainingTaskFactory):
        return
    # typeshed knows only the (loop, coro) form; 3.11 also passes context= when given.
    factory: Any = ContainingTaskFactory(current)
    loop.set_task_factory(factory)
