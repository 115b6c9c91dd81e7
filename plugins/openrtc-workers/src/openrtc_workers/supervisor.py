"""The supervisor: forks the workers after prewarm, replaces the dead, recycles the bloated,
drains them all when asked to stop.

One thread, no event loop, no LiveKit connection: it waits on the workers' report pipes and
a signal wake-up pipe with a selector, and reaps its children on SIGCHLD. Each worker is a
forked copy of it that runs the core's ``run_worker`` (a normal OpenRTC worker with its own
LiveKit registration) in a process group of its own, so a terminal's Ctrl-C reaches the
supervisor alone and it decides what the workers get.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import selectors
import signal
import sys
import time
import traceback
from typing import Any, Final

import attrs

from openrtc_core import RunContext, drain_when_parent_dies, exit_reason, tree_pss_mib

from .plan import WorkerPlan
from .policy import RestartPolicy
from .reports import (
    EXITED,
    GAVE_UP,
    READY,
    REGISTERED,
    RELEASED,
    STARTED,
    TAKEN,
    UNHEALTHY,
    Reporter,
    ReportReader,
    status_writer,
)
from .signals import SignalInbox

logger = logging.getLogger("openrtc.workers")

CRASHED_IN_WORKER: Final = 70
"""Exit status of a worker whose own code raised out of ``run_worker`` (EX_SOFTWARE)."""
_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
PORT_OFFSET_ENV: Final = "OPENRTC_PORT_OFFSET"
"""Added to every worker's port slot: a controller gives each generation running at the
same time its own range of health ports."""


@attrs.define(eq=False)
class Worker:
    """One worker process, as the supervisor knows it."""

    index: int
    pid: int
    reports: ReportReader
    port_slot: int
    """Its health port is the configured one plus this."""
    started_at: float = attrs.field(factory=time.monotonic)
    registered: str = ""
    """Its LiveKit worker id, once it registered."""
    calls: dict[str, str] = attrs.field(factory=dict)
    """Live calls: job id -> agent."""
    taken: int = 0
    retiring: str = ""
    """Why it was asked to drain and exit ("" while it serves)."""
    unhealthy: bool = False
    """It said it cannot recover by itself: it may exit non-zero, leaving what it held."""

    def describe(self, count: int) -> str:
        return f"worker {self.index}/{count} (pid {self.pid})"


@attrs.define(eq=False)
class Slot:
    """One of the N places a worker runs in; a dead worker's replacement takes its slot."""

    index: int
    crashes: int = 0
    """Crashes right after start, in a row."""
    restart_at: float | None = None
    given_up: bool = False


class WorkerSupervisor:
    """Runs ``plan.count`` workers of one ``openrtc start`` (see the module's docstring)."""

    def __init__(
        self, context: RunContext, plan: WorkerPlan, policy: RestartPolicy | None = None
    ) -> None:
        self.context = context
        self.plan = plan
        self.policy = policy or RestartPolicy.from_env()
        self.slots = [Slot(index) for index in range(1, self.plan.count + 1)]
        self.workers: dict[int, Worker] = {}
        """Every live worker process by pid, serving or retiring."""
        self._selector = selectors.DefaultSelector()
        self._inbox = SignalInbox(*_STOP_SIGNALS, signal.SIGCHLD)
        self._stopping = False
        self._forced = False
        self._failed_exits = 0
        self._next_memory_check = 0.0
        self._controller = status_writer()
        """The controller's pipe, when a controller runs this supervisor."""
        self._ready = False
        offset = os.environ.get(PORT_OFFSET_ENV, "").strip()
        self._port_offset = int(offset) if offset.isdigit() else 0

    # -- the main loop -------------------------------------------------------------------------

    def run(self) -> int:
        said = self.context.prewarm()
        logger.info(
            "supervisor (pid %d): %s; starting %d worker(s)%s",
            os.getpid(),
            said,
            self.plan.count,
            self._limits(),
        )
        with self._inbox.installed(self._selector):
            for slot in self.slots:
                self._start(slot)
            while self.workers or not (self._stopping or self._all_given_up()):
                self._wait()
                self._handle_signals()
                self._reap()
                self._check_memory()
                self._restart_due()
        return self._status()

    def _limits(self) -> str:
        limits = []
        if self.plan.max_memory_mb is not None:
            limits.append(f"memory above {self.plan.max_memory_mb:g} MiB")
        if self.plan.max_sessions is not None:
            limits.append(f"{self.plan.max_sessions} calls taken")
        return f"; a worker is replaced after {' or '.join(limits)}" if limits else ""

    def _all_given_up(self) -> bool:
        return all(slot.given_up for slot in self.slots)

    def _status(self) -> int:
        if self._all_given_up() and not self._stopping:
            logger.error("no worker is left running: every slot crash-looped; exiting")
            return 1
        if self._forced or self._failed_exits:
            return 1
        logger.info("all workers drained; supervisor exiting")
        return 0

    def _wait(self) -> None:
        now = time.monotonic()
        due = [slot.restart_at for slot in self.slots if slot.restart_at is not None]
        if self.plan.max_memory_mb is not None and not self._stopping:
            due.append(self._next_memory_check)
        timeout = max(0.0, min(due) - now) if due else None
        for key, _ in self._selector.select(timeout):
            if key.fd == self._inbox.read_fd:
                self._inbox.woke()
            else:
                self._read_reports(key.data)

    def _handle_signals(self) -> None:
        for sig in self._inbox.take():
            if sig == signal.SIGCHLD:
                continue  # reaped after every wake-up
            if not self._stopping:
                self._stop_gracefully(signal.Signals(sig).name)
            elif not self._forced:
                self._stop_now(signal.Signals(sig).name)

    # -- starting workers ----------------------------------------------------------------------

    def _port_slot(self, index: int) -> int:
        """Worker `index`'s port slot: its own (``index - 1``), or while retiring workers of
        the same index still hold that, the first free one after it in steps of the worker
        count (``count + index - 1``, ``2 * count + index - 1``, ...)."""
        taken = {w.port_slot for w in self.workers.values() if w.index == index}
        first = self._port_offset + index - 1
        return next(slot for slot in itertools.count(first, self.plan.count) if slot not in taken)

    def _start(self, slot: Slot) -> None:
        slot.restart_at = None
        port_slot = self._port_slot(slot.index)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            self._run_child(slot.index, port_slot, write_end)  # never returns
        os.close(write_end)
        os.set_blocking(read_end, False)
        worker = Worker(
            index=slot.index, pid=pid, reports=ReportReader(read_end), port_slot=port_slot
        )
        self.workers[pid] = worker
        self._selector.register(read_end, selectors.EVENT_READ, data=worker)
        logger.info("started %s", worker.describe(self.plan.count))
        self._tell(STARTED, worker=slot.index, pid=pid)

    def _run_child(self, index: int, port_slot: int, report_fd: int) -> None:
        """In the forked process: become worker `index`, run it, exit with its status."""
        code = CRASHED_IN_WORKER
        try:
            self._leave_supervisor()
            reporter = Reporter(report_fd)
            code = self.context.run_worker(index, self.plan.count, port_slot, plugins=[reporter])
            reporter.report_cut_calls()
        except BaseException:
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)

    def _leave_supervisor(self) -> None:
        """Drop what belongs to the supervisor; drain when it dies (parent-death signal)."""
        supervisor = os.getppid()
        os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        for key in list(self._selector.get_map().values()):
            os.close(key.fd)
        self._selector.close()
        os.close(self._inbox.write_fd)
        if self._controller is not None:
            os.close(self._controller.fd)
        drain_when_parent_dies(supervisor)

    # -- reports -------------------------------------------------------------------------------

    def _read_reports(self, worker: Worker) -> None:
        events = worker.reports.read()
        if worker.reports.ended and worker.reports.fd in self._selector.get_map():
            self._selector.unregister(worker.reports.fd)  # else it reads as ready forever
        for event in events:
            kind = event.get("event")
            job = str(event.get("job", ""))
            if isinstance(kind, str):
                fields = {key: value for key, value in event.items() if key != "event"}
                self._tell(kind, **{**fields, "worker": worker.index, "pid": worker.pid})
            if kind == REGISTERED:
                worker.registered = str(event.get("id", ""))
                logger.info(
                    "%s registered with LiveKit as %s",
                    worker.describe(self.plan.count),
                    worker.registered,
                )
                self._check_ready()
            elif kind == TAKEN and job:
                worker.calls[job] = str(event.get("agent", ""))
                worker.taken += 1
                limit = self.plan.max_sessions
                if limit is not None and worker.taken >= limit:
                    self._recycle(worker, f"it has taken {worker.taken} calls (limit {limit})")
            elif kind == RELEASED and job:
                worker.calls.pop(job, None)
            elif kind == UNHEALTHY:
                worker.unhealthy = True
                self._recycle(worker, f"it cannot recover by itself: {event.get('reason', '')}")

    def _check_ready(self) -> None:
        """Tell the controller, once, when every slot has a worker registered with LiveKit."""
        if self._ready:
            return
        serving = {w.index: w.registered for w in self.workers.values() if not w.retiring}
        if all(serving.get(slot.index) for slot in self.slots):
            self._ready = True
            self._tell(READY, workers=[serving[slot.index] for slot in self.slots])

    def _tell(self, event: str, **fields: Any) -> None:
        if self._controller is not None:
            self._controller.say(event, **fields)

    # -- workers that exit ---------------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is not None:
                self._exited(worker, status)

    def _exited(self, worker: Worker, status: int) -> None:
        self._read_reports(worker)  # what it said just before it went
        if worker.reports.fd in self._selector.get_map():
            self._selector.unregister(worker.reports.fd)
        os.close(worker.reports.fd)
        slot = self.slots[worker.index - 1]
        code = os.waitstatus_to_exitcode(status)
        name, reason = worker.describe(self.plan.count), exit_reason(code)
        clean = code == 0
        self._tell(
            EXITED,
            worker=worker.index,
            pid=worker.pid,
            reason=reason,
            retiring=worker.retiring,
            lost=sorted(worker.calls),
        )
        if worker.retiring:
            # An unhealthy worker's stuck tasks may keep it from a clean exit: expected.
            if not clean and not worker.unhealthy:
                self._failed_exits += 1
            log = logger.info if (clean or worker.unhealthy) and not worker.calls else logger.error
            log(
                "%s exited (%s) after it was asked to stop because %s; it took %d call(s)%s",
                name,
                reason,
                worker.retiring,
                worker.taken,
                _lost(worker),
            )
            return
        ran_s = time.monotonic() - worker.started_at
        logger.error("%s died unexpectedly (%s) after %.1f s%s", name, reason, ran_s, _lost(worker))
        if self._stopping:
            self._failed_exits += 1
            return
        quick = ran_s < self.policy.quick_crash_s
        slot.crashes = slot.crashes + 1 if quick else 1
        if quick and slot.crashes >= self.policy.crash_loop:
            slot.given_up = True
            self._tell(GAVE_UP, worker=slot.index, reason=reason)
            logger.error(
                "worker %d crashed %d times in a row within %g s of starting (last: %s); "
                "not starting it again",
                slot.index,
                slot.crashes,
                self.policy.quick_crash_s,
                reason,
            )
            return
        delay = self.policy.delay_s(slot.crashes)
        slot.restart_at = time.monotonic() + delay
        logger.info("starting worker %d again in %.1f s", slot.index, delay)

    def _restart_due(self) -> None:
        if self._stopping:
            return
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                self._start(slot)

    # -- recycling and stopping ----------------------------------------------------------------

    def _check_memory(self) -> None:
        limit = self.plan.max_memory_mb
        now = time.monotonic()
        if limit is None or self._stopping or now < self._next_memory_check:
            return
        self._next_memory_check = now + self.policy.memory_check_s
        for worker in [w for w in self.workers.values() if not w.retiring]:
            used = tree_pss_mib(worker.pid)
            if used is not None and used > limit:
                self._recycle(worker, f"its memory is {used:.0f} MiB (limit {limit:g} MiB)")

    def _recycle(self, worker: Worker, reason: str) -> None:
        """Drain `worker` (it takes no new call, finishes its calls, exits) and start its
        replacement now, so the capacity stays."""
        if worker.retiring or self._stopping:
            return
        self._retire(worker, reason)
        logger.info(
            "replacing %s: %s; it finishes its %d live call(s) first",
            worker.describe(self.plan.count),
            reason,
            len(worker.calls),
        )
        self._start(self.slots[worker.index - 1])

    def _retire(self, worker: Worker, reason: str) -> None:
        worker.retiring = reason
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGTERM)  # livekit's start: drain, then exit

    def _stop_gracefully(self, signal_name: str) -> None:
        self._stopping = True
        live = sum(len(worker.calls) for worker in self.workers.values())
        logger.info(
            "%s: draining %d worker(s) with %d live call(s); send it again to stop at once",
            signal_name,
            len(self.workers),
            live,
        )
        for slot in self.slots:
            slot.restart_at = None
        for worker in self.workers.values():
            if not worker.retiring:
                self._retire(worker, f"the supervisor got {signal_name}")

    def _stop_now(self, signal_name: str) -> None:
        self._forced = True
        logger.warning("%s again: stopping every worker at once", signal_name)
        for worker in self.workers.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(worker.pid, signal.SIGKILL)


def _lost(worker: Worker) -> str:
    if not worker.calls:
        return "; no call was live"
    calls = ", ".join(f"{job} ({agent or 'unrouted'})" for job, agent in worker.calls.items())
    return f"; {len(worker.calls)} live call(s) lost: {calls}"
