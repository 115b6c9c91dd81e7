"""A real controller (``openrtc start`` with openrtc-deploy, simulation on) in a subprocess,
against a loopback dispatch server, and ``openrtc deploy`` run as its users run it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from openrtc_core import VERSION_ENV
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.dispatch import Dispatch
from openrtc_testing.fleet import Fleet, started_fleet
from openrtc_testing.worker import dispatch_until_accepted, simulated_call_metadata

TESTS = Path(__file__).resolve().parent
TARGET = "deploy_pools:pool"
START_TIMEOUT_S = 120.0
TAIL_CHARS = 6000


@attrs.define
class Deployed:
    """The controller process, its log, its control socket, and the loopback server."""

    lk: LoopbackDispatchServer
    proc: asyncio.subprocess.Process
    log: Path
    state: Path
    control: Path
    env: dict[str, str]
    fleet: Fleet

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def messages(self, logger: str = "openrtc.deploy") -> list[str]:
        found = []
        for line in self.output().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("name") == logger:
                    found.append(str(record.get("message", "")))
        return found

    def set_code(self, *, reply: str | None = None, broken: str | None = None) -> None:
        """What the next generation loads: its reply, or how it is broken ("" mends it)."""
        if reply is not None:
            (self.state / "reply").write_text(reply)
        if broken is not None:
            (self.state / "break").write_text(broken)

    def live_workers(self) -> int:
        return sum(1 for w in self.lk.workers if not w.closed)

    async def until(self, condition: Any, timeout: float, what: str) -> None:
        await self.fleet.until(condition, timeout, what, chars=TAIL_CHARS)

    def tail(self) -> str:
        return self.output()[-TAIL_CHARS:]

    async def call(
        self, room: str, *, hold_s: float = 0.0, turns: Sequence[str] = ("hello",)
    ) -> Dispatch:
        """Dispatch one simulated call until a worker accepts it."""
        d = await dispatch_until_accepted(
            self.lk, room, job_metadata=simulated_call_metadata(turns=turns, hold_s=hold_s)
        )
        assert d.accepted, f"call {room} not accepted: {d.error}\n{self.tail()}"
        return d

    async def report(self, job_id: str, timeout: float = 90.0) -> dict[str, Any]:
        return await self.lk.wait_for_report(job_id, timeout=timeout)

    async def openrtc(self, *args: str, timeout: float = 180.0) -> tuple[int, str, str]:
        """Run ``openrtc ARGS`` against this controller: exit status, stdout, stderr."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "openrtc_core",
            *args,
            env={**self.env, "OPENRTC_CONTROL": str(self.control)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def deploy(self, *args: str, timeout: float = 180.0) -> tuple[int, str, str]:
        return await self.openrtc("deploy", *args, timeout=timeout)

    async def status(self) -> dict[str, Any]:
        code, out, err = await self.openrtc("deploy", "--status", "--json")
        assert code == 0, err
        status: dict[str, Any] = json.loads(out)
        return status

    async def ask(self, data: bytes, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Send `data` as it is on one control connection: every line the controller sends
        back until it closes the connection."""
        raw = await asyncio.to_thread(self._exchange, data, timeout)
        return [json.loads(line) for line in raw.splitlines()]

    def _exchange(self, data: bytes, timeout: float) -> bytes:
        # A plain socket: the controller may answer and close before taking all of `data`
        # (a connection over the cap is answered at once). asyncio would treat the failed
        # write as fatal and drop the answer already received; here it is still read.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.control))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(data)
            chunks: list[bytes] = []
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            return b"".join(chunks)

    async def status_now(self) -> dict[str, Any]:
        """The controller's status, over the socket directly (no ``openrtc`` to start)."""
        *_, answer = await self.ask(b'{"op": "status"}\n')
        assert answer.get("ok"), answer
        status: dict[str, Any] = answer["status"]
        return status

    async def until_status(self, condition: Any, timeout: float, what: str) -> dict[str, Any]:
        """The first status that meets `condition`, polled; the controller must answer every
        time (its control socket stays up)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.returncode is not None:
                raise AssertionError(f"the controller exited waiting for {what}:\n{self.tail()}")
            status = await self.status_now()
            if condition(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s: {status}\n{self.tail()}")
            await asyncio.sleep(0.05)

    async def stop(self, timeout: float = 120.0) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout)


def reply_of(report: dict[str, Any]) -> str:
    """What the agent answered in the call's first turn ("v1 here")."""
    turns = report.get("turns") or [{}]
    return str(turns[0].get("reply", ""))


@contextlib.asynccontextmanager
async def deployed(
    tmp_path: Path,
    *args: str,
    version: str = "v1",
    env: dict[str, str] | None = None,
) -> AsyncIterator[Deployed]:
    """``openrtc start deploy_pools:pool ARGS`` under the controller, generation 1 at
    `version`, its workers registered; killed at the end if the test did not stop it."""
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    control = tmp_path / "run" / "control.sock"
    log = tmp_path / "controller.log"
    overrides: dict[str, str | None] = {
        "DEPLOY_TEST_STATE": str(state),
        VERSION_ENV: version,
        **(env or {}),
        "OPENRTC_SUPERVISOR": None,
    }
    async with (
        LoopbackDispatchServer() as lk,
        started_fleet(lk, tmp_path, env=overrides, pythonpath=[TESTS]) as fleet,
    ):
        proc = await fleet.start(
            sys.executable,
            "-m",
            "openrtc_testing.supervised",
            TARGET,
            "--control",
            str(control),
            *args,
            log=log,
        )
        yield Deployed(
            lk=lk, proc=proc, log=log, state=state, control=control, env=fleet.env, fleet=fleet
        )
