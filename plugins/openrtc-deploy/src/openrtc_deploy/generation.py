"""One generation: a fresh ``openrtc start`` of the code on disk, run as openrtc-workers'
supervisor, whose status lines say when each worker registered and each call came and went.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import enum
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from openrtc_core import VERSION_ENV, VERSION_FLAG, DeployVersion, exit_reason
from openrtc_workers import (
    CUT,
    EXITED,
    GAVE_UP,
    PORT_OFFSET_ENV,
    READY,
    REGISTERED,
    RELEASED,
    STARTED,
    STATUS_FD_ENV,
    TAKEN,
    ReportReader,
    drain_when_parent_dies,
)

GENERATION_ENV: Final = "OPENRTC_GENERATION"
"""Set in each generation the controller runs: 1, 2, ..."""
LOG_TAIL_LINES: Final = 60
_EXCEPTION_LINE: Final = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")
_PR_SET_CHILD_SUBREAPER: Final = 36


class State(enum.Enum):
    STARTING = "starting"
    """Its workers load, prewarm and register; the previous generation still serves."""
    SERVING = "serving"
    DRAINING = "draining"
    """Takes no new call; finishes those it has, then exits."""
    EXITED = "exited"
    FAILED = "failed"
    """Never served: it did not start, or was given up (it drains what it took)."""


@attrs.define(eq=False)
class GenerationWorker:
    index: int
    pid: int
    registered: str = ""


@attrs.define(eq=False)
class Generation:
    """A generation's process and what its status lines said."""

    number: int
    version: DeployVersion
    process: subprocess.Popen[bytes]
    status: ReportReader
    log: LogTee
    port_offset: int
    state: State = State.STARTING
    started_at: float = attrs.field(factory=time.monotonic)
    started_wall: float = attrs.field(factory=time.time)
    ready_at: float | None = None
    drain_started_at: float | None = None
    drain_calls: int = 0
    """Live calls when its drain began."""
    exited_at: float | None = None
    exit: str = ""
    failure: str = ""
    workers: dict[int, GenerationWorker] = attrs.field(factory=dict)
    calls: dict[str, str] = attrs.field(factory=dict)
    """Live calls: job id -> agent."""
    taken: int = 0
    cut: dict[str, str] = attrs.field(factory=dict)
    """Calls its drain timeout ended, or that were still live when it exited."""
    lost: dict[str, str] = attrs.field(factory=dict)
    """Calls of a worker that died."""
    gave_up: str = ""
    restart_of: int | None = None
    """The number of the generation that died, when this one was started to replace it."""
    disk: str | None = None
    """The version of the code on disk (git commit or content hash) when it started."""
    call_pids: dict[str, int] = attrs.field(factory=dict)
    """Live calls: job id -> the pid of the worker that holds it."""
    orphans: dict[int, int] = attrs.field(factory=dict)
    """Workers left running when its supervisor died (pid -> worker index): they drain
    their calls on their own (their parent-death signal), as the controller's children."""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.state not in (State.EXITED, State.FAILED) or self.exited_at is None

    def name(self) -> str:
        return f"generation {self.number} ({self.version.value})"

    def read_status(self) -> list[str]:
        """Apply the status lines available now; the events of note, in words."""
        notes = []
        for event in self.status.read():
            note = self._apply(event)
            if note:
                notes.append(note)
        return notes

    def _apply(self, event: Mapping[str, Any]) -> str:
        kind = event.get("event")
        index = int(event.get("worker", 0) or 0)
        pid = int(event.get("pid", 0) or 0)
        job, agent = str(event.get("job", "")), str(event.get("agent", ""))
        if kind == STARTED:
            self.workers[index] = GenerationWorker(index, pid)
        elif kind == REGISTERED:
            worker = self.workers.setdefault(index, GenerationWorker(index, pid))
            worker.registered = str(event.get("id", ""))
            return f"{self.name()}: worker {index} (pid {pid}) registered as {worker.registered}"
        elif kind == READY:
            return READY
        elif kind == TAKEN and job:
            self.calls[job] = agent
            self.call_pids[job] = pid
            self.taken += 1
        elif kind == RELEASED and job:
            self.calls.pop(job, None)
            self.call_pids.pop(job, None)
        elif kind == CUT and job:
            self.calls.pop(job, None)
            self.call_pids.pop(job, None)
            self.cut[job] = agent
        elif kind == EXITED:
            for lost in event.get("lost", []) or []:
                if lost in self.calls:
                    self.lost[str(lost)] = self.calls.pop(lost)
            gone = self.workers.get(index)
            if gone is not None and gone.pid == pid:
                del self.workers[index]
        elif kind == GAVE_UP:
            self.gave_up = f"worker {index} crash-looped ({event.get('reason', '')})"
            return GAVE_UP
        return ""

    def registered_count(self) -> int:
        return sum(1 for worker in self.workers.values() if worker.registered)

    def signal(self, sig: int) -> None:
        if self.exited_at is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, sig)

    def exited(self, status: int, *, died: bool = False) -> None:
        """Its supervisor exited with `status`. Its workers still running (it was killed) are
        kept as :attr:`orphans` with their calls. The calls of workers gone are lost when it
        `died` (unexpectedly), else its drain cut them (named by id)."""
        self.read_status()
        self.log.read()
        self.exited_at = time.monotonic()
        self.exit = exit_reason(os.waitstatus_to_exitcode(status))
        self.orphans = {w.pid: w.index for w in self.workers.values() if is_child(w.pid)}
        for job in [j for j in self.calls if self.call_pids.get(j) not in self.orphans]:
            (self.lost if died else self.cut)[job] = self.calls.pop(job)
            self.call_pids.pop(job, None)
        self.status.ended = True
        with contextlib.suppress(OSError):
            os.close(self.status.fd)
        if self.log.ended:
            self.log.close()  # else its orphans (or their job processes) still write to it
        if self.state is not State.FAILED:
            self.state = State.EXITED

    def orphan_exited(self, pid: int, status: int) -> dict[str, str]:
        """Orphan `pid` exited with `status`: the calls it held, now lost unless it exited
        cleanly (its drain finished them)."""
        self.orphans.pop(pid, None)
        held = {j: a for j, a in self.calls.items() if self.call_pids.get(j) == pid}
        for job in held:
            self.calls.pop(job)
            self.call_pids.pop(job, None)
        if os.waitstatus_to_exitcode(status) == 0:
            return {}
        self.lost.update(held)
        return held

    def as_dict(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "generation": self.number,
            "version": self.version.value,
            "version_source": self.version.source,
            "state": self.state.value,
            "pid": self.pid,
            "started_at": self.started_wall,
            "ready_s": None if self.ready_at is None else round(self.ready_at - self.started_at, 3),
            "workers": [
                {
                    "worker": w.index,
                    "pid": w.pid,
                    "registered": bool(w.registered),
                    "id": w.registered,
                }
                for w in sorted(self.workers.values(), key=lambda w: w.index)
            ],
            "live_calls": len(self.calls),
            "calls_taken": self.taken,
            "drain": None
            if self.drain_started_at is None
            else {
                "for_s": round((self.exited_at or now) - self.drain_started_at, 3),
                "calls_at_start": self.drain_calls,
                "calls_left": len(self.calls),
            },
            "cut": sorted(self.cut),
            "lost": sorted(self.lost),
            "exit": self.exit,
            "failure": self.failure,
            "restart_of": self.restart_of,
            "orphans": [
                {
                    "worker": index,
                    "pid": pid,
                    "live_calls": sum(1 for p in self.call_pids.values() if p == pid),
                }
                for pid, index in sorted(self.orphans.items())
            ],
        }


class LogTee:
    """A generation's stderr: copied to ours as it comes, the last lines kept for a reason."""

    def __init__(self, fd: int, out: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.out = out
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._partial = b""
        self.ended = False

    def read(self) -> None:
        while not self.ended:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.ended = True
                return
            with contextlib.suppress(OSError):
                _write_all(self.out, chunk)
            *lines, self._partial = (self._partial + chunk).split(b"\n")
            self.tail.extend(line.decode(errors="replace") for line in lines)

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
            self.ended = True

    def reason(self) -> str:
        """The error its last lines state: an ``error:`` line, a JSON log record at level
        ERROR, or an exception's last line; "" when none."""
        exception = ""
        for line in reversed(self.tail):
            text = line.strip()
            if text.startswith("error:"):
                return text.removeprefix("error:").strip()
            if text.startswith("{"):
                with contextlib.suppress(ValueError, AttributeError):
                    record = json.loads(text)
                    if str(record.get("level", "")).upper() in ("ERROR", "CRITICAL"):
                        return str(record.get("message", "")).strip()
            if not exception and _EXCEPTION_LINE.match(text):
                exception = text
        return exception


def adopt_orphans() -> bool:
    """Make this process the child subreaper of its descendants (Linux): a worker whose
    generation's supervisor died becomes our child, so we can wait for it and know when its
    calls are over. Whether the kernel agreed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def is_child(pid: int) -> bool:
    """Whether `pid` is a child of this process not yet waited for (running or not)."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except (ChildProcessError, OSError):
        return False
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def generation() -> int | None:
    """The generation the controller runs this process in (:data:`GENERATION_ENV`); None
    when none does, or the value is not a positive number."""
    raw = os.environ.get(GENERATION_ENV, "").strip()
    return int(raw) if raw.isdecimal() and int(raw) > 0 else None


def spawn(
    number: int,
    version: DeployVersion,
    command: Sequence[str],
    *,
    port_offset: int,
) -> Generation:
    """Start generation `number`: `command` again, with the deploy version last (it wins over
    one the command gave) and a pipe for openrtc-workers' status lines (which makes its
    supervisor run the generation, even of one worker)."""
    status_read, status_write = os.pipe()
    log_read, log_write = os.pipe()
    env = {
        **os.environ,
        GENERATION_ENV: str(number),
        VERSION_ENV: version.value,
        STATUS_FD_ENV: str(status_write),
        PORT_OFFSET_ENV: str(port_offset),
    }
    try:
        process = subprocess.Popen(
            [*command, VERSION_FLAG, version.value],
            env=env,
            stdin=subprocess.DEVNULL,
            stderr=log_write,
            pass_fds=(status_write,),
            process_group=0,  # a terminal's Ctrl-C reaches the controller, which decides
            preexec_fn=drain_when_parent_dies,  # SIGTERM (a drain) when the controller dies
        )
    finally:
        os.close(status_write)
        os.close(log_write)
    os.set_blocking(status_read, False)
    return Generation(
        number=number,
        version=version,
        process=process,
        status=ReportReader(status_read),
        log=LogTee(log_read, sys.stderr.fileno()),
        port_offset=port_offset,
    )
