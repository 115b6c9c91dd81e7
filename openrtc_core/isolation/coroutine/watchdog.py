"""Event-loop watchdog: measures loop lag and names the session whose task blocked the loop.

Coroutine isolation runs every session on one event loop, so one synchronous call in one
agent (``time.sleep``, a blocking HTTP client in a tool) delays every other call. The watchdog
finds it the way a profiler would, without patching asyncio:

* a heartbeat scheduled on the loop records when it last ran;
* a watchdog thread notices when the heartbeat is overdue, and while the loop is still stuck
  asks which task is running; tasks are tagged with their session at creation through the
  loop's task factory, so the running task names its job and agent;
* when the late heartbeat finally runs, the incident is logged once, with its duration;
* a stall spent mostly in the garbage collector is reported as such, not blamed on whichever
  session's task happened to allocate the object that triggered the collection.

The recent lag also feeds the load the worker reports to LiveKit, so new calls go elsewhere
before the loop saturates.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import heapq
import logging
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import attrs

from ...faults import ContainingTaskFactory
from ...registry import SessionTag

logger = logging.getLogger("openrtc.watchdog")


_TAGS: weakref.WeakKeyDictionary[asyncio.Task[Any], SessionTag] = weakref.WeakKeyDictionary()


def tag_of(task: asyncio.Task[Any] | None) -> SessionTag | None:
    return _TAGS.get(task) if task is not None else None


# Per job, so that settling a job's tasks when it ends does not walk every session's tasks.
_BY_JOB: dict[str, weakref.WeakSet[asyncio.Task[Any]]] = {}


def tasks_of(job_id: str) -> list[asyncio.Task[Any]]:
    """The tasks created on behalf of job `job_id` that still exist."""
    return list(_BY_JOB.get(job_id, ()))


def forget_job(job_id: str) -> None:
    """Stop indexing the tasks of a job that has ended and been settled."""
    _BY_JOB.pop(job_id, None)


_MODULES: weakref.WeakKeyDictionary[asyncio.Task[Any], str] = weakref.WeakKeyDictionary()


def module_of(task: asyncio.Task[Any]) -> str:
    """The module whose coroutine a session's task runs ("" for an untagged task)."""
    return _MODULES.get(task, "")


class _TaggingTaskFactory(ContainingTaskFactory):
    """Contains ``SystemExit`` / ``KeyboardInterrupt`` in a session's tasks (see
    :func:`~openrtc_core.faults.contained`) and remembers which session created each task."""

    def created(
        self, task: asyncio.Task[Any], tag: SessionTag, coro: Coroutine[Any, Any, Any]
    ) -> None:
        frame = getattr(coro, "cr_frame", None)
        _TAGS[task] = tag
        _MODULES[task] = str(frame.f_globals.get("__name__", "")) if frame is not None else ""
        _BY_JOB.setdefault(tag.job_id, weakref.WeakSet()).add(task)


def install_task_tagging(loop: asyncio.AbstractEventLoop) -> None:
    """Tag new tasks on `loop` with the session they belong to (idempotent)."""
    current = loop.get_task_factory()
    if isinstance(current, _TaggingTaskFactory):
        return
    if isinstance(current, ContainingTaskFactory):  # contains already; tags too from now on
        current = current.previous
    # typeshed knows only the (loop, coro) form; 3.11 also passes context= when given.
    factory: Any = _TaggingTaskFactory(current)
    loop.set_task_factory(factory)


def drop_cancelled_timers(loop: asyncio.AbstractEventLoop) -> int:
    """Take cancelled timers out of `loop`'s schedule now; return how many there were.

    A cancelled timer stays in asyncio's heap until it is due, or until cancelled timers
    are more than half the heap. It keeps the context it was scheduled in, and in a job's
    context that is livekit's JobContext with its whole AgentSession. So one 60 s
    ``wait_for`` in livekit's job shutdown, or one 5-minute aiohttp timeout in a tool, kept
    an ended call's session in memory, and in every full garbage collection, for that
    long, as long as other calls kept the heap busy. asyncio's own cleanup, done early.
    Loops that are not asyncio's pure-Python one (uvloop) are left alone.
    """
    if not isinstance(loop, asyncio.BaseEventLoop):
        return 0
    scheduled: list[asyncio.TimerHandle] | None = getattr(loop, "_scheduled", None)
    if not scheduled:
        return 0
    kept = [handle for handle in scheduled if not handle.cancelled()]
    dropped = len(scheduled) - len(kept)
    if dropped:
        for handle in scheduled:
            if handle.cancelled():
                handle._scheduled = False  # type: ignore[attr-defined]
        heapq.heapify(kept)
        loop._scheduled = kept  # type: ignore[attr-defined]
        loop._timer_cancelled_count = 0  # type: ignore[attr-defined]
    return dropped


def _always() -> bool:
    return True


@attrs.frozen
class Incident:
    """One stretch of time the loop could not run its timers."""

    duration_s: float
    session: SessionTag | None
    task_name: str
    gc_s: float = 0.0
    """How much of the stall the garbage collector took."""
    others: tuple[SessionTag, ...] = ()
    """Other sessions whose tasks held the loop in the same stall, in turn."""

    @property
    def by_gc(self) -> bool:
        return self.gc_s >= self.duration_s / 2


@attrs.define
class LoopWatchdog:
    """Heartbeat + watchdog thread over one loop. Start and stop it on that loop."""

    threshold_s: float = 0.1
    tick_s: float = 0.02
    window: int = 500
    calls_live: Callable[[], bool] = _always
    """Whether any call is live; a stall outside every session while none is, is not one."""
    lags: collections.deque[float] = attrs.field(init=False)
    busy: collections.deque[tuple[float, float]] = attrs.field(init=False)
    """Per tick: (wall seconds, CPU seconds the loop's thread used in them)."""
    incidents: collections.deque[Incident] = attrs.field(
        init=False, factory=lambda: collections.deque(maxlen=100)
    )
    _loop: asyncio.AbstractEventLoop | None = attrs.field(init=False, default=None)
    _last_tick: float = attrs.field(init=False, default=0.0)
    _handle: asyncio.TimerHandle | None = attrs.field(init=False, default=None)
    _thread: threading.Thread | None = attrs.field(init=False, default=None)
    _stop: threading.Event = attrs.field(init=False, factory=threading.Event)
    _suspects: dict[tuple[SessionTag | None, str], int] = attrs.field(init=False, factory=dict)
    """Who was running, sampled each tick while the loop is late: (session, task) -> samples."""
    _gc_s: float = attrs.field(init=False, default=0.0)
    _gc_began: float = attrs.field(init=False, default=0.0)
    _last_cpu: float = attrs.field(init=False, default=0.0)

    def __attrs_post_init__(self) -> None:
        self.lags = collections.deque(maxlen=self.window)
        self.busy = collections.deque(maxlen=self.window)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        install_task_tagging(self._loop)
        self._last_tick = time.monotonic()
        self._last_cpu = time.thread_time()
        self._handle = self._loop.call_later(self.tick_s, self._tick)
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch, name="openrtc-loop-watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
        if self._thread is not None:
            self._thread.join(timeout=1)

    def sustained_lag_s(self, seconds: float = 1.0) -> float:
        """Mean lag over the last `seconds`: high only while the loop stays saturated, so a
        single stall does not mark the worker full."""
        count = max(1, int(seconds / self.tick_s))
        if len(self.lags) < 2 * count:
            return 0.0  # the worker's start-up (imports, models, registering) is not load
        recent = list(self.lags)[-count:]
        return sum(recent) / len(recent)

    def utilisation(self, seconds: float = 1.0) -> float:
        """The share of the last `seconds` the loop's thread spent running (0..1).

        Lag alone misses a loop kept busy by tasks that yield often (``await sleep(0)`` in a
        loop): timers still fire on time, yet nothing else gets much of the CPU.
        """
        count = max(1, int(seconds / self.tick_s))
        if len(self.busy) < 2 * count:
            return 0.0  # the worker's own start-up (connecting, registering) is not load
        recent = list(self.busy)[-count:]
        wall = sum(w for w, _ in recent)
        return min(1.0, sum(c for _, c in recent) / wall) if wall > 0 else 0.0

    def _tick(self) -> None:
        now = time.monotonic()
        cpu = time.thread_time()  # the loop's thread: this runs on it
        self.busy.append((now - self._last_tick, cpu - self._last_cpu))
        self._last_cpu = cpu
        lag = max(0.0, now - self._last_tick - self.tick_s)
        self.lags.append(lag)
        if lag >= self.threshold_s:
            self._report(lag)
        self._suspects = {}
        self._gc_s = 0.0
        self._last_tick = now
        assert self._loop is not None
        self._handle = self._loop.call_later(self.tick_s, self._tick)

    def _watch(self) -> None:
        # Sample the running task while the loop is still stuck; the loop thread reports.
        while not self._stop.wait(self.tick_s):
            overdue = time.monotonic() - self._last_tick - self.tick_s
            if overdue >= self.threshold_s / 2 and self._loop:
                task = asyncio.current_task(self._loop)
                name = task.get_name() if task is not None else "a callback outside any task"
                suspects = self._suspects
                suspects[(tag_of(task), name)] = suspects.get((tag_of(task), name), 0) + 1

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        # Collections in any thread stop the loop's thread too (they hold the GIL).
        if phase == "start":
            self._gc_began = time.perf_counter()
        else:
            self._gc_s += time.perf_counter() - self._gc_began

    def _report(self, lag: float) -> None:
        sampled = list(self._suspects.items())  # in the order they held the loop
        tag, task_name = max(sampled, key=lambda item: item[1])[0] if sampled else (None, "?")
        # Sessions that held the loop in turn during one stall, each with its share.
        shares: dict[SessionTag, int] = {}
        for (session, _), samples in sampled:
            if session is not None:
                shares[session] = shares.get(session, 0) + samples
        in_turn = list(shares)
        blamed = sorted(in_turn, key=lambda session: -shares[session])
        tag = blamed[0] if blamed else tag
        incident = Incident(
            duration_s=lag,
            session=tag,
            task_name=task_name,
            gc_s=self._gc_s,
            others=tuple(blamed[1:]),
        )
        self.incidents.append(incident)
        if incident.by_gc:
            # With no call live (a collection the worker chose to run then), nobody waited.
            (logger.warning if self.calls_live() else logger.debug)(
                "event loop blocked for %.0f ms, %.0f ms of it by Python's garbage collector "
                "(every session on this worker waited); many live objects make full "
                "collections long",
                lag * 1000,
                incident.gc_s * 1000,
            )
        elif tag is not None:
            total = sum(shares.values()) or 1
            who = (
                f"agent {tag.agent} (job {tag.job_id})"
                if len(blamed) == 1
                else ", then ".join(
                    f"agent {s.agent} (job {s.job_id}, ~{lag * shares[s] / total * 1000:.0f} ms)"
                    for s in in_turn
                )
            )
            logger.warning(
                "event loop blocked for %.0f ms by %s; every session on this worker waited. "
                "Move blocking calls off the loop (asyncio.to_thread).",
                lag * 1000,
                who,
                extra={"job_id": tag.job_id, "agent": tag.agent, "tenant": tag.tenant},
            )
        else:
            # With no call live nobody waited (the worker starting up, say): not a warning.
            log = logger.warning if self.calls_live() else logger.debug
            log(
                "event loop blocked for %.0f ms outside any session (task %s)",
                lag * 1000,
                task_name,
            )
