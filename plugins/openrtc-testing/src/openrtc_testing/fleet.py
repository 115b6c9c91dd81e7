"""Worker processes a test starts against a loopback dispatch server, and waits for.

A `Fleet` starts OS processes (a plain worker, a supervisor with its workers, a deploy
controller, several single workers) with what they need to register with the server, each
writing to a log file of its own, in a session of its own. It waits on conditions, never on
time: until so many workers are registered, or until any other condition holds, failing with
the processes' logs as soon as one of them has exited, or at a deadline. At the end of
`started_fleet` it kills every process it started and all their descendants::

    async with LoopbackDispatchServer() as lk, started_fleet(lk, tmp_path) as fleet:
        await fleet.start(sys.executable, "-m", "openrtc_testing.supervised", "pools:pool")
        await fleet.registered(2)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

from openrtc_core import process_tree

from .dispatch import LoopbackDispatchServer, WorkerConnection

__all__ = ["REGISTER_TIMEOUT_S", "Fleet", "started_fleet"]

REGISTER_TIMEOUT_S = 120.0
"""How long `Fleet.registered` waits by default: a worker imports livekit and may prewarm
models, which takes seconds, and far longer on a busy machine."""
TAIL_CHARS = 4000
"""How much of each process's log a failure shows."""
POLL_S = 0.05


class Fleet:
    """The processes one test started against `lk`, their logs under `logs`."""

    def __init__(
        self,
        lk: LoopbackDispatchServer,
        logs: Path,
        *,
        env: Mapping[str, str | None] | None = None,
        pythonpath: Sequence[Path] = (),
    ) -> None:
        """`env` is laid over this process's environment and the server's (a None value
        removes a variable); `pythonpath` goes before any ``PYTHONPATH`` already set."""
        self.lk = lk
        self.logs = logs
        self.env = _environment(lk, env, pythonpath)
        self.processes: list[asyncio.subprocess.Process] = []
        self.log_files: list[Path] = []

    async def start(
        self,
        *command: str,
        log: Path | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str | None] | None = None,
    ) -> asyncio.subprocess.Process:
        """Start `command` with the fleet's environment (and `env` over it), output to `log`
        (default ``worker-N.log`` under the fleet's folder). Its stdin is a pipe that closes
        when the fleet is killed, for a process that exits with its test."""
        log = log or self.logs / f"worker-{len(self.processes)}.log"
        environment = dict(self.env)
        for name, value in (env or {}).items():
            _set(environment, name, value)
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *command,
                cwd=cwd,
                env=environment,
                stdin=asyncio.subprocess.PIPE,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own group: kill() finds all it starts
            )
        self.processes.append(process)
        self.log_files.append(log)
        return process

    def output(self, index: int = 0) -> str:
        """All that process `index` (in start order) has written so far."""
        return self.log_files[index].read_text(errors="replace")

    def tails(self, chars: int = TAIL_CHARS) -> str:
        """The end of every process's log, each headed by its pid and exit status."""
        parts = []
        for index, process in enumerate(self.processes):
            status = "running" if process.returncode is None else f"exit {process.returncode}"
            parts.append(f"--- {self.log_files[index].name} (pid {process.pid}, {status}) ---")
            parts.append(self.output(index)[-chars:])
        return "\n".join(parts)

    def live_workers(self) -> list[WorkerConnection]:
        """The workers registered with the server and still connected."""
        return [w for w in self.lk.workers if not w.closed]

    async def until(
        self, condition: Callable[[], object], timeout: float, what: str, chars: int = TAIL_CHARS
    ) -> None:
        """Poll `condition` until it holds. Fails, with the logs, once a started process has
        exited or when `timeout` seconds pass first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            exited = [p.pid for p in self.processes if p.returncode is not None]
            if exited:
                raise AssertionError(
                    f"process(es) {exited} exited while waiting for {what}:\n{self.tails(chars)}"
                )
            if loop.time() > deadline:
                raise AssertionError(f"no {what} within {timeout:g} s:\n{self.tails(chars)}")
            await asyncio.sleep(POLL_S)

    async def registered(
        self, count: int | None = None, timeout: float = REGISTER_TIMEOUT_S
    ) -> None:
        """Until `count` workers (default: one per started process) are registered."""
        wanted = len(self.processes) if count is None else count
        await self.until(
            lambda: len(self.live_workers()) >= wanted, timeout, f"{wanted} registered worker(s)"
        )

    async def kill(self) -> None:
        """SIGKILL every started process and all its descendants, and reap the started ones."""
        for process in self.processes:
            if process.returncode is None:
                for pid in process_tree(process.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            # What forked since the tree was read, or outlived a process that exited, is still
            # in its session's group (unless it made a group of its own: the tree had it).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            if process.stdin is not None:
                process.stdin.close()
            await process.wait()


@contextlib.asynccontextmanager
async def started_fleet(
    lk: LoopbackDispatchServer,
    logs: Path,
    *,
    env: Mapping[str, str | None] | None = None,
    pythonpath: Sequence[Path] = (),
) -> AsyncIterator[Fleet]:
    """A `Fleet` (see its arguments) whose processes are all killed when the block ends."""
    fleet = Fleet(lk, logs, env=env, pythonpath=pythonpath)
    try:
        yield fleet
    finally:
        await fleet.kill()


def _environment(
    lk: LoopbackDispatchServer,
    env: Mapping[str, str | None] | None,
    pythonpath: Sequence[Path],
) -> dict[str, str]:
    environment = {**os.environ, **lk.worker_env(), "PYTHONUNBUFFERED": "1"}
    if pythonpath:
        paths = [str(p) for p in pythonpath]
        if environment.get("PYTHONPATH"):
            paths.append(environment["PYTHONPATH"])
        environment["PYTHONPATH"] = os.pathsep.join(paths)
    for name, value in (env or {}).items():
        _set(environment, name, value)
    return environment


def _set(environment: dict[str, str], name: str, value: str | None) -> None:
    if value is None:
        environment.pop(name, None)
    else:
        environment[name] = value
