"""A real supervisor (``openrtc start --workers N`` with simulation on) in a subprocess,
against a loopback dispatch server, for the tests to drive."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from openrtc_core import child_pids
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.dispatch import WorkerConnection
from openrtc_testing.fleet import Fleet, started_fleet
from openrtc_testing.worker import dispatch_until_accepted, simulated_call_metadata

TESTS = Path(__file__).resolve().parent
TARGET = "worker_pools:pool"
START_TIMEOUT_S = 120.0


@attrs.define
class Supervised:
    """The supervisor process, its log, and the loopback server its workers register with."""

    lk: LoopbackDispatchServer
    proc: asyncio.subprocess.Process
    log: Path
    fleet: Fleet

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records written so far (other lines skipped)."""
        found = []
        for line in self.output().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    found.append(record)
        return found

    def messages(self, logger: str = "openrtc.workers") -> list[str]:
        return [str(r.get("message", "")) for r in self.records() if r.get("name") == logger]

    def live_workers(self) -> list[WorkerConnection]:
        return [w for w in self.lk.workers if not w.closed]

    def worker_pids(self) -> list[int]:
        """The supervisor's worker processes (its direct children)."""
        return child_pids(self.proc.pid)

    async def wait_for_workers(self, count: int, timeout: float = START_TIMEOUT_S) -> None:
        """Until `count` workers are registered with the loopback server."""
        await self.fleet.registered(count, timeout)

    async def until(self, condition: Any, timeout: float, what: str) -> None:
        """Until `condition()` holds; fails with the log once the supervisor exited."""
        await self.fleet.until(condition, timeout, what)

    async def call(
        self, room: str, *, hold_s: float = 0.0, turns: Sequence[str] = ("hello",)
    ) -> str:
        """Dispatch one simulated call; its job id once a worker accepted it."""
        d = await dispatch_until_accepted(
            self.lk, room, job_metadata=simulated_call_metadata(turns=turns, hold_s=hold_s)
        )
        assert d.accepted, f"call {room} not accepted: {d.error}"
        return d.job_id

    async def stop(self, timeout: float = 90.0) -> int:
        """SIGTERM (drain), and the exit status. A supervisor still running after `timeout`
        fails the test with the stacks of the workers it still waits for."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(asyncio.shield(self.proc.wait()), timeout)
        except TimeoutError:
            for pid in self.worker_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR2)  # worker_pools logs its stacks
            await asyncio.sleep(2)
            raise AssertionError(
                f"the supervisor did not exit within {timeout} s of SIGTERM:\n"
                f"{self.output()[-20000:]}"
            ) from None


@contextlib.asynccontextmanager
async def supervised(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, target: str = TARGET
) -> AsyncIterator[Supervised]:
    """Start ``openrtc start TARGET ARGS`` (default: worker_pools:pool) with simulation on;
    kill it at the end if the test did not stop it."""
    # openrtc-workers' own supervisor, even where openrtc-deploy's controller is installed
    # (it would run these workers as one of its generations).
    overrides: dict[str, str | None] = {"OPENRTC_DISABLE_PLUGINS": "deploy", **(env or {})}
    log = tmp_path / "supervisor.log"
    async with (
        LoopbackDispatchServer() as lk,
        started_fleet(lk, tmp_path, env=overrides, pythonpath=[TESTS]) as fleet,
    ):
        proc = await fleet.start(
            sys.executable, "-m", "openrtc_testing.supervised", target, *args, log=log
        )
        yield Supervised(lk=lk, proc=proc, log=log, fleet=fleet)
