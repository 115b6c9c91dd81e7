"""``openrtc simulate --workers N``: the real supervisor of ``openrtc start --workers N``, run
as a subprocess against the loopback dispatch server.

The supervisor is ``python -m openrtc_testing.supervised`` (``openrtc start`` with the
simulation plugin in every worker, so each swaps providers that need keys as the in-process
worker does). Its output (the supervisor's and the workers' JSON log lines) goes to a log
file; what went wrong is read back from it: the ``error:`` line a failed start prints, the
last lines of the log, the reason a worker gave for refusing a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, BinaryIO, Final, TypeVar

import attrs

from openrtc_core import exit_reason

from .dispatch import Dispatch, LoopbackDispatchServer

SUPERVISED_MODULE: Final = "openrtc_testing.supervised"
PARENT_ENV: Final = "OPENRTC_SIMULATE_PARENT"
"""The pid of the process that started the supervisor: it drains (SIGTERM) when that one
dies, however it died, so no supervisor outlives a killed ``openrtc simulate``."""
REGISTER_TIMEOUT_S: Final = 120.0
"""How long the workers have to register: the supervisor imports the pool, prewarms, forks."""
DRAIN_TIMEOUT_S: Final = 60.0
"""How long the supervisor has to drain its workers after SIGTERM (the calls are over)."""
KILL_TIMEOUT_S: Final = 10.0
TAIL_LINES: Final = 15
_TAIL_BYTES: Final = 64 * 1024
_LINE_CHARS: Final = 300
_POLL_S: Final = 0.1

T = TypeVar("T")


class SupervisorFailed(Exception):
    """The supervisor could not start its workers, or stopped before the calls were done."""


@attrs.frozen(kw_only=True)
class SupervisorSpec:
    """What to run: TARGET with `workers` workers, loaded as ``openrtc simulate`` loads it."""

    target: str
    workers: int
    isolation: str | None = None
    tenants: str | None = None
    reload: bool = False
    control: str | None = None
    """Where a controller (openrtc-deploy) listens, so ``openrtc deploy`` reaches it."""

    def argv(self) -> list[str]:
        """The supervisor's command line."""
        args = [sys.executable, "-m", SUPERVISED_MODULE, self.target]
        if self.isolation:
            args += ["--isolation", self.isolation]
        if self.tenants:
            args += ["--tenants", self.tenants]
        args += ["--workers", str(self.workers)]
        if self.reload:
            args.append("--reload")
        if self.control is not None:
            args += ["--control", self.control]
        return args

    def describe(self) -> str:
        return f"the supervisor (openrtc start --workers {self.workers})"


class SupervisedWorkers:
    """One supervisor subprocess: started, waited for, stopped (see :func:`supervised_workers`)."""

    def __init__(
        self,
        spec: SupervisorSpec,
        dispatch: LoopbackDispatchServer,
        *,
        agent_name: str,
        log_path: Path | None,
    ) -> None:
        self.spec = spec
        self.dispatch = dispatch
        self.agent_name = agent_name
        self.log_path = log_path
        """Where its output goes; None: to this process's terminal."""
        self.process: asyncio.subprocess.Process | None = None
        self.forced = False
        """Whether it had to be stopped harder than asked (it did not exit in time)."""
        self.cut = False
        """Whether it was asked to stop at once, cutting its workers' calls."""

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the supervisor is not started")
        return self.process.pid

    @property
    def status(self) -> int | None:
        """Its return code once it exited (negative: killed by that signal)."""
        return None if self.process is None else self.process.returncode

    def environment(self) -> dict[str, str]:
        # Lines reach the log as they are written.
        env = {**os.environ, **self.dispatch.worker_env(), "PYTHONUNBUFFERED": "1"}
        env[PARENT_ENV] = str(os.getpid())
        return env

    async def start(self) -> None:
        log: BinaryIO | None = None
        if self.log_path is not None:
            log = self.log_path.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.spec.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=None if log is None else subprocess.STDOUT,
                env=self.environment(),
                # Its own session: a terminal's Ctrl-C reaches simulate, which stops the
                # supervisor itself, not both (a second signal would stop it at once).
                start_new_session=True,
            )
        finally:
            if log is not None:
                log.close()

    def registered(self) -> int:
        """How many of its workers are registered with the dispatch server now."""
        return sum(not w.closed and w.agent_name == self.agent_name for w in self.dispatch.workers)

    async def wait_registered(self, timeout: float = REGISTER_TIMEOUT_S) -> None:
        """Wait until all its workers registered; :class:`SupervisorFailed` if it exits first
        or they take longer than `timeout`."""
        deadline = time.monotonic() + timeout
        while self.registered() < self.spec.workers:
            if self.status is not None:
                raise SupervisorFailed(self.failure() or f"{self.spec.describe()} exited")
            if time.monotonic() > deadline:
                raise SupervisorFailed(
                    f"{self.spec.describe()}: {self.registered()} of {self.spec.workers} "
                    f"workers registered within {timeout:g} s"
                )
            await asyncio.sleep(_POLL_S)

    async def while_running(self, work: Awaitable[T]) -> T:
        """Await `work`; if the supervisor exits before it is done, cancel it and raise
        :class:`SupervisorFailed`. Cancelled, this cancels `work` too."""
        assert self.process is not None
        task = asyncio.ensure_future(work)
        exited = asyncio.ensure_future(self.process.wait())
        try:
            await asyncio.wait({task, exited}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await _cancelled(task)
            raise
        finally:
            exited.cancel()
        if task.done():
            return task.result()
        await _cancelled(task)
        raise SupervisorFailed(
            f"{self.failure() or self.spec.describe() + ' exited'} while the calls ran"
        )

    async def stop(self, *, at_once: bool = False) -> None:
        """SIGTERM (drain every worker) and wait; if it does not exit in time, a second stop
        signal (it stops its workers at once), then SIGKILL.

        `at_once` sends the second stop signal right away: the calls are cut. It is SIGINT,
        not SIGTERM again: two pending SIGTERMs would merge into one.
        """
        process = self.process
        if process is None or process.returncode is not None:
            return
        self.cut = self.cut or at_once
        steps: list[tuple[tuple[signal.Signals, ...], float]] = [
            ((signal.SIGTERM,), DRAIN_TIMEOUT_S),
            ((signal.SIGINT,), KILL_TIMEOUT_S),
            ((signal.SIGKILL,), KILL_TIMEOUT_S),
        ]
        if at_once:
            steps[:2] = [((signal.SIGTERM, signal.SIGINT), KILL_TIMEOUT_S)]
        for signals, timeout in steps:
            for sig in signals:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)
            try:
                await asyncio.wait_for(process.wait(), timeout)
                return
            except TimeoutError:
                self.forced = True

    def failure(self) -> str | None:
        """What went wrong, in one line; None while it runs or when it drained and exited 0."""
        status = self.status
        # Stopped at once as asked, it exits 1 (calls were cut): that is no failure.
        if status is None or ((status == 0 or self.cut) and not self.forced):
            return None
        said = error_line(self.log_path) if self.log_path is not None else None
        if said:
            return f"{said} (supervisor: {exit_reason(status)})"
        if self.forced:
            asked = (
                f"{KILL_TIMEOUT_S:g} s of being told to stop at once"
                if self.cut
                else f"{DRAIN_TIMEOUT_S:g} s of SIGTERM and was stopped at once"
            )
            return f"{self.spec.describe()} did not exit within {asked}; {exit_reason(status)}"
        return f"{self.spec.describe()} exited ({exit_reason(status)})"


async def _cancelled(task: asyncio.Future[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def supervised_workers(
    spec: SupervisorSpec,
    dispatch: LoopbackDispatchServer,
    *,
    agent_name: str,
    log_path: Path | None,
    register_timeout: float = REGISTER_TIMEOUT_S,
) -> AsyncIterator[SupervisedWorkers]:
    """Start the supervisor against `dispatch` and wait until its workers registered; on exit
    stop it (a drain) and wait for it. Left with an exception (a signal cut the calls), stop
    it at once: no caller waits for its calls any more. Its exit status is then
    ``.status``, and ``.failure()`` says what went wrong, if anything."""
    run = SupervisedWorkers(spec, dispatch, agent_name=agent_name, log_path=log_path)
    await run.start()
    try:
        await run.wait_registered(register_timeout)
        yield run
    except BaseException:
        await run.stop(at_once=True)
        raise
    finally:
        await run.stop()


# -- reading the log ---------------------------------------------------------------------------


def _last_bytes(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - _TAIL_BYTES))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def readable(line: str) -> str:
    """A log line as a person reads it: a JSON record as ``LEVEL name [worker]: message``
    (and the exception's last line), anything else as it is; cut at a few hundred chars."""
    text = line.rstrip()
    record: Any = None
    if text.startswith("{"):
        with contextlib.suppress(ValueError):
            record = json.loads(text)
    if isinstance(record, dict) and "message" in record:
        worker = f" [worker {record['worker']}]" if record.get("worker") else ""
        text = f"{record.get('level', '')} {record.get('name', '')}{worker}: {record['message']}"
        exc = record.get("exc_info")
        if isinstance(exc, str) and exc.strip():
            text += f" ({exc.strip().splitlines()[-1]})"
    return text if len(text) <= _LINE_CHARS else text[: _LINE_CHARS - 1] + "…"


def log_tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last `lines` non-empty lines of the log, readable."""
    found = [line for line in _last_bytes(path).splitlines() if line.strip()]
    return [readable(line) for line in found[-lines:]]


def error_line(path: Path) -> str | None:
    """The last ``error: ...`` line the supervisor printed (what ``openrtc start`` says when
    it cannot start), without the ``error:``; None if there is none."""
    said = [
        line.strip()[len("error:") :].strip()
        for line in _last_bytes(path).splitlines()
        if line.startswith("error:")
    ]
    return said[-1] if said else None


_REJECTING: Final = re.compile(r"rejecting job (?P<job>\S+) in room .*?: (?P<reason>.*)", re.S)
_BY_PLUGIN: Final = re.compile(r"^refused by [^:]*: ")


class LogRefusals:
    """The workers' stated reason for each job they refused, read from the supervisor's log
    (their ``rejecting job ...`` lines), as :class:`~openrtc_testing.simulate.WorkerRefusals`
    reads it from the in-process worker's logger."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.reasons: dict[str, str] = {}

    def read(self) -> None:
        """Take in the lines written since the last read."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for raw in lines:
            self._take(raw)

    def _take(self, raw: bytes) -> None:
        if b"rejecting job" not in raw:
            return
        try:
            record = json.loads(raw)
        except ValueError:
            return
        if not isinstance(record, dict):
            return
        found = _REJECTING.fullmatch(str(record.get("message", "")))
        if found is not None:
            reason = _BY_PLUGIN.sub("", found["reason"], count=1)
            self.reasons[str(record.get("job_id") or found["job"])] = reason

    def stated(self, d: Dispatch) -> str:
        """The reason a worker gave for refusing `d` (its last offer); "" if none was seen."""
        if not d.rejected_by:
            return ""
        self.read()
        return self.reasons.pop(d.job_id, "")
