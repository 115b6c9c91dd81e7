"""The controller never goes down on its own: every malformed request gets an error line, and
a generation that dies is replaced. A real controller, real generations, the loopback
dispatch server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from deploy_harness import Deployed, deployed, reply_of

from openrtc_deploy.control import IDLE_TIMEOUT_S, MAX_CONNECTIONS, MAX_REQUEST_BYTES

pytestmark = pytest.mark.asyncio

MALFORMED = [
    (b"[" * 10_000 + b"\n", "nested too deeply"),
    (b'{"op": "deploy", "version": ' + b"[" * 5_000 + b"]" * 5_000 + b"}\n", "nested too deeply"),
    (b'{"op": "deploy", "version": ' + b"[" * 900 + b"]" * 900 + b"}\n", "version: give"),
    (b"not json\n", "not JSON"),
    (b"\xff\xfe\n", "not JSON"),
    (b"\n", "not JSON"),
    (b"[1, 2]\n", "a JSON list"),
    (b'"status"\n', "a JSON str"),
    (b"{}\n", "no op: give one of status, ready"),
    (b'{"op": "reboot"}\n', "unknown op 'reboot'"),
    (b'{"op": ["status"]}\n', "unknown op a JSON list"),
    (b'{"op": "' + b"x" * 5_000 + b'"}\n', "unknown op 'xxxx"),
    (b'{"op": "status", "then": "drain"}\n', "takes no other field"),
    (b'{"op": "deploy", "force": true}\n', "takes only version, ready_timeout, wait"),
    (b'{"op": "deploy", "ready_timeout": NaN}\n', "ready_timeout NaN: give a number"),
    (b'{"op": "deploy", "ready_timeout": -1}\n', "ready_timeout -1: give a number"),
    (b'{"op": "deploy", "ready_timeout": 0}\n', "more than 0"),
    (b'{"op": "deploy", "ready_timeout": Infinity}\n', "at most 86400"),
    (b'{"op": "deploy", "ready_timeout": 1e999}\n', "at most 86400"),
    (b'{"op": "deploy", "ready_timeout": "10"}\n', "give a number of seconds"),
    (b'{"op": "deploy", "ready_timeout": true}\n', "give a number of seconds"),
    (b'{"op": "deploy", "version": 12}\n', "version: give a non-empty string"),
    (b'{"op": "deploy", "version": ""}\n', "version: give a non-empty string"),
    (b'{"op": "deploy", "version": "two words\\n"}\n', "a deployment version is"),
    (b'{"op": "deploy", "wait": "yes"}\n', "wait: give true or false"),
]


def _refused(answers: list[dict[str, Any]], says: str) -> None:
    assert len(answers) == 1, answers
    answer = answers[0]
    assert answer["done"] is True and answer["ok"] is False, answer
    assert says in answer["message"] and "\n" not in answer["message"], answer


def _connected(run: Deployed) -> socket.socket:
    """A connection to the control socket, once the controller's backlog took it (a
    non-blocking connect to a full backlog fails with EAGAIN, which asyncio takes for done)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(run.control))
    sock.setblocking(False)
    return sock


async def test_malformed_requests_get_an_error_line_and_the_controller_keeps_serving(
    tmp_path: Path,
) -> None:
    async with deployed(tmp_path, "--workers", "1") as run:
        await run.until(lambda: run.live_workers() >= 1, 120, "generation 1's worker")
        for data, says in MALFORMED:
            _refused(await run.ask(data), says)
            assert run.proc.returncode is None, f"{data[:40]!r} ended it:\n{run.tail()}"

        # A line over the cap, and one that never ends: answered, not held.
        _refused(await run.ask(b"x" * (MAX_REQUEST_BYTES + 4096)), "at most 65536 bytes")
        _refused(await run.ask(b'{"op": "status"'), "no request line within 10 s")

        # Pipelined requests on one connection: the first is answered, the rest cost nothing.
        answers = await run.ask(b'{"op": "status"}\n' * 5_000)
        assert len(answers) == 1 and answers[0]["ok"] and answers[0]["status"], answers[:2]

        # Connections up to the cap are kept; the next is turned away at once, with a line;
        # the idle ones are answered and closed after the idle timeout.
        idle = [
            await asyncio.open_unix_connection(sock=await asyncio.to_thread(_connected, run))
            for _ in range(MAX_CONNECTIONS)
        ]
        opened = time.monotonic()
        while (answers := await run.ask(b'{"op": "status"}\n'))[0]["ok"]:
            assert time.monotonic() < opened + 30, "connections over the cap were served"
            await asyncio.sleep(0.05)  # until the controller has accepted the idle ones
        _refused(answers, f"{MAX_CONNECTIONS} control connections open")
        for reader, writer in idle:
            said = await asyncio.wait_for(reader.read(), IDLE_TIMEOUT_S * 6)
            assert b"no request line within" in said, said
            writer.close()
        assert time.monotonic() - opened >= IDLE_TIMEOUT_S - 1  # held until the timeout
        assert (await run.status_now())["ready"] is True

        run.set_code(reply="v2")
        code, out, err = await run.deploy("--version", "v2")
        assert code == 0, out + err
        after = await run.call("after-the-fuzz")
        assert reply_of(await run.report(after.job_id)) == "v2 here"
        assert await run.stop() == 0, run.tail()


async def _killed(run: Deployed, pids: list[int]) -> float:
    """SIGKILL `pids`; when."""
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return time.monotonic()


async def _first_serving(run: Deployed) -> dict[str, Any]:
    """Generation 1 once the controller has promoted it (its workers may register first)."""
    status = await run.until_status(_serving(1), 60, "generation 1 serving")
    first: dict[str, Any] = status["generations"][0]
    return first


def _serving(number: int) -> Any:
    return lambda s: any(
        g["generation"] == number and g["state"] == "serving" for g in s["generations"]
    )


@pytest.mark.parametrize("kill", ["supervisor", "generation"])
async def test_a_killed_generation_is_replaced_by_the_last_good_code(
    tmp_path: Path, kill: str
) -> None:
    """SIGKILL of the serving generation's supervisor alone (the OOM killer's pick; its
    workers are left draining on their own), or of it and its workers."""
    async with deployed(tmp_path, "--workers", "1") as run:
        await run.until(lambda: run.live_workers() >= 1, 120, "generation 1's worker")
        held = await run.call("held", hold_s=20.0)
        first = await _first_serving(run)
        workers = [w["pid"] for w in first["workers"]]
        killed = await _killed(run, [first["pid"], *(workers if kill == "generation" else [])])
        gone = await run.until_status(
            lambda s: s["generations"][0]["state"] == "exited", 60, "generation 1 reaped"
        )
        if kill == "supervisor":  # its worker drains the call on its own
            assert gone["generations"][0]["orphans"] == [
                {"worker": 1, "pid": workers[0], "live_calls": 1}
            ]
        status = await run.until_status(_serving(2), 120, "generation 2 serving")
        serving_s = time.monotonic() - killed
        after = await run.call("after-the-kill")
        accepted_s = time.monotonic() - killed
        said = [m for m in run.messages() if "it replaces generation 1 (v1)" in m]
        print(
            f"\nSIGKILL ({kill}) to the replacement serving: {serving_s:.2f} s (polled), "
            f"to a call accepted: {accepted_s:.2f} s; controller: {said}"
        )
        report = await run.report(after.job_id)
        assert (report["deploy"], reply_of(report)) == ("v1", "v1 here")

        assert status["restarts"] == 1
        (restart,) = status["last_restarts"]
        assert (restart["generation"], restart["replacement"], restart["delay_s"]) == (1, 2, 0.0)
        dead, replacement = status["generations"]
        assert dead["exit"] == "killed by SIGKILL" and replacement["restart_of"] == 1
        if kill == "supervisor":
            assert (await run.report(held.job_id))["outcome"] == "completed"
            await run.until(
                lambda: any(
                    "left draining when its supervisor died, exited (exit status 0); its calls "
                    "ended" in m
                    for m in run.messages()
                ),
                60,
                "the orphaned worker to exit",
            )
        else:
            await run.until_status(
                lambda s: held.job_id in s["generations"][0]["lost"], 60, "the call named lost"
            )
        code, out, _ = await run.openrtc("deploy", "--status")
        assert code == 0 and "restarts: 1" in out, out
        assert await run.stop() == 0, run.tail()


async def test_generations_that_keep_dying_are_restarted_with_growing_delays(
    tmp_path: Path,
) -> None:
    async with deployed(tmp_path, "--workers", "1") as run:
        await run.until(lambda: run.live_workers() >= 1, 120, "generation 1's worker")
        first = await _first_serving(run)
        run.set_code(broken="import")  # every replacement dies as it starts
        await _killed(run, [first["pid"]])
        status = await run.until_status(lambda s: s.get("restarts", 0) >= 5, 180, "five restarts")
        restarts = status["last_restarts"][:5]
        assert [r["delay_s"] for r in restarts] == [0.0, 0.5, 1.0, 2.0, 4.0], restarts
        started = {g["generation"]: g["started_at"] for g in status["generations"]}
        for restart in restarts:
            if restart["replacement"] in started:  # no sooner than its delay
                assert started[restart["replacement"]] >= restart["at"] + restart["delay_s"] - 0.01
        assert status["state"] == "restarting" and status["ready"] is False
        assert any("generations keep dying: 5 deaths" in m for m in run.messages())

        run.set_code(broken="")  # mended: the next restart serves, with no one asking
        await run.until_status(lambda s: s["state"] == "serving", 180, "a generation serving")
        after = await run.call("after-the-crash-loop")
        assert reply_of(await run.report(after.job_id)) == "v1 here"
        assert await run.stop() == 0, run.tail()


async def test_a_deploy_s_starting_generation_takes_over_when_the_serving_one_dies(
    tmp_path: Path,
) -> None:
    """The serving generation dies while a deploy's generation starts: that one takes over
    when ready, and no third generation starts beside it."""
    async with deployed(tmp_path, "--workers", "1") as run:
        await run.until(lambda: run.live_workers() >= 1, 120, "generation 1's worker")
        first = await _first_serving(run)
        run.set_code(reply="v2")
        (run.state / "prewarm_s").write_text("6")
        (run.state / "prewarm_for").write_text("v2")
        deploy = asyncio.create_task(run.deploy("--version", "v2"))
        await run.until_status(
            lambda s: any(g["version"] == "v2" for g in s["generations"]), 60, "v2 starting"
        )
        await _killed(run, [first["pid"]])
        code, out, err = await deploy
        assert code == 0, out + err
        assert "generation 1 (v1) died (killed by SIGKILL); generation 2 (v2)" in out, out
        status = await run.status_now()
        states = [(g["version"], g["state"]) for g in status["generations"]]
        assert states == [("v1", "exited"), ("v2", "serving")], states
        assert status["last_restarts"][0]["replacement"] == 2
        after = await run.call("after")
        assert reply_of(await run.report(after.job_id)) == "v2 here"
        assert await run.stop() == 0, run.tail()
