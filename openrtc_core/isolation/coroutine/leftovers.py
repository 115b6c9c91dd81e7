"""Tasks that outlive what started them: named, cancelled, and never waited on forever.

An agent that starts a task and forgets it leaves it running after its call ends; coroutine
isolation cancels such tasks (``isolation/coroutine/job.py``). A task that catches
``CancelledError`` and goes on survives that, and at worker close livekit cancels every task
left in the loop and then waits for all of them without a time limit: one such task kept a
core busy and the worker from exiting. Here a cancelled task gets :data:`STOP_GRACE_S` to
stop; one that does not is named (its task name, its coroutine and where it runs, the session
it belongs to) and left behind, and a worker that owns its loop exits without it.

A task is attributed to the session whose context created it (the watchdog's task tags). One
created in another context (an empty ``contextvars.Context()``) carries no tag: it is named
"unattributed", found at close by comparing the loop's tasks with what the worker knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Collection
from types import CoroutineType, FrameType, GeneratorType
from typing import Any, Final

from ...logfields import bounded
from .watchdog import tag_of

logger = logging.getLogger("openrtc.leftovers")

STOP_GRACE_S: Final = 5.0
"""How long a cancelled task gets to stop before it is named as one that will not."""
STUCK_EXIT_STATUS: Final = 1
"""The exit status of a worker that left tasks behind at close."""
UNATTRIBUTED: Final = "unattributed (started outside any session's context)"
_FRAMEWORK: Final = ("openrtc_core.", "asyncio.")


def owner_of(task: asyncio.Task[Any]) -> str:
    """The session `task` belongs to, in words, or :data:`UNATTRIBUTED`."""
    tag = tag_of(task)
    if tag is None:
        return UNATTRIBUTED
    return f"agent {bounded(tag.agent)} (job {tag.job_id})"


def _awaited(coro: Any) -> Any:
    """What a suspended coroutine or generator waits on (None at the bottom)."""
    if isinstance(coro, CoroutineType):
        return coro.cr_await
    if isinstance(coro, GeneratorType):
        return coro.gi_yieldfrom
    return None


def where(task: asyncio.Task[Any]) -> str:
    """`task`'s coroutine and where it is now: ``_spin at /app/agents.py:40``.

    The first coroutine down the await chain that is not the framework's own (the
    containment wrapper, ``asyncio.sleep``): the code that started the task.
    """
    chain: list[tuple[Any, FrameType]] = []
    coro: Any = task.get_coro()
    while coro is not None and len(chain) < 100:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            chain.append((coro, frame))
        coro = _awaited(coro)
    if not chain:
        return "a finished coroutine"
    own = [c for c in chain if not str(c[1].f_globals.get("__name__", "")).startswith(_FRAMEWORK)]
    coro, frame = (own or chain)[0]
    name = getattr(coro, "__qualname__", type(coro).__name__)
    return f"{name} at {frame.f_code.co_filename}:{frame.f_lineno}"


def describe(task: asyncio.Task[Any]) -> str:
    """One task in words: its name, its coroutine and where it runs, whose it is."""
    return f"task {bounded(task.get_name())} ({where(task)}), {owner_of(task)}"


async def cancel_and_wait(
    tasks: Collection[asyncio.Task[Any]], grace_s: float = STOP_GRACE_S
) -> list[asyncio.Task[Any]]:
    """Cancel `tasks` and give them `grace_s` to stop; the ones still running."""
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=grace_s)
    return [task for task in pending if not task.done()]


async def stop_leftover_tasks(*, owns_loop: bool, grace_s: float = STOP_GRACE_S) -> None:
    """At worker close: cancel the tasks still in the loop, name those that will not stop.

    A worker that owns its loop (``openrtc start``) cancels every task but this one (livekit
    would next, and then wait for them without a limit); when some will not stop it logs why
    and exits at once with :data:`STUCK_EXIT_STATUS`. A server run in someone else's loop
    (tests, an embedding application) only cancels the tasks of its sessions, and names the
    ones that will not stop.
    """
    current = asyncio.current_task()
    tasks = [
        task
        for task in asyncio.all_tasks()
        if task is not current and (owns_loop or tag_of(task) is not None)
    ]
    stuck = await cancel_and_wait(tasks, grace_s)
    for task in stuck:
        logger.error(
            "%s is still running %.0f s after the worker cancelled it at close: it catches "
            "CancelledError and goes on. Let CancelledError through (re-raise it).",
            describe(task),
            grace_s,
            extra=_fields(task),
        )
    if stuck and owns_loop:
        logger.error(
            "exiting now with status %d without waiting for %d task(s) that will not stop "
            "(waiting would hang this worker forever)",
            STUCK_EXIT_STATUS,
            len(stuck),
        )
        _exit_now(STUCK_EXIT_STATUS)


def _fields(task: asyncio.Task[Any]) -> dict[str, str]:
    tag = tag_of(task)
    if tag is None:
        return {"task": bounded(task.get_name())}
    return {"task": bounded(task.get_name()), "job_id": tag.job_id, "agent": bounded(tag.agent)}


def _exit_now(status: int) -> None:
    """Exit the process now: logs and output flushed, nothing else run."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed stream has nothing to flush
            stream.flush()
    os._exit(status)
