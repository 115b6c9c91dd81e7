"""openrtc-deploy end to end: a real controller, real generations of real workers, the
loopback dispatch server, and ``openrtc deploy`` run as a user runs it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import sys
import time
from pathlib import Path
from typing import Self

import pytest
from deploy_harness import Deployed, deployed, reply_of

from openrtc_core import VERSION_ENV
from openrtc_testing.dispatch import Dispatch

pytestmark = pytest.mark.asyncio
TESTS = Path(__file__).resolve().parent


class Background:
    """A loop (`_loop`) running beside the test while the ``async with`` block runs."""

    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _loop(self) -> None:
        raise NotImplementedError


class Prober(Background):
    """Short calls dispatched every `every_s` while a deploy runs: each one's time, and the
    call once a worker took it."""

    def __init__(self, run: Deployed, every_s: float = 0.15) -> None:
        self.run = run
        self.every_s = every_s
        self.calls: list[tuple[float, Dispatch]] = []

    async def _loop(self) -> None:
        n = 0
        while True:
            n += 1
            sent = time.monotonic()
            self.calls.append((sent, await self.run.call(f"probe-{n}")))
            await asyncio.sleep(self.every_s)


async def test_twenty_live_calls_finish_on_v1_and_new_calls_go_to_v2(tmp_path: Path) -> None:
    async with deployed(tmp_path, "--workers", "2") as run:
        await run.until(lambda: run.live_workers() >= 2, 120, "generation 1's workers")
        live = [await run.call(f"live-{i}", hold_s=10.0) for i in range(20)]
        run.set_code(reply="v2")
        began = time.monotonic()
        async with Prober(run) as prober:
            code, out, err = await run.deploy("--version", "v2")
            ready = time.monotonic()
            assert code == 0, out + err
            assert "generation 2 (v2) is serving" in out
            await asyncio.sleep(2.0)
        gap = run.lk.longest_unavailable(began)
        print(f"\nlargest gap with no worker available: {gap * 1000:.0f} ms")
        assert gap == 0.0

        for d in live:
            report = await run.report(d.job_id)
            assert report["outcome"] == "completed", report
            assert (report["deploy"], reply_of(report)) == ("v1", "v1 here")
        probes = [(sent, await run.report(d.job_id), d) for sent, d in prober.calls]
        assert all(report["outcome"] == "completed" for _, report, _ in probes)
        assert all(d.offers == 1 for _, _, d in probes), "a probe call found no taker"
        after = [report for sent, report, _ in probes if sent >= ready]
        assert after and all(r["deploy"] == "v2" and reply_of(r) == "v2 here" for r in after)

        status = await run.status()
        first, second = status["generations"]
        assert first["state"] in ("draining", "exited")
        assert second["state"] == "serving" and second["version"] == "v2"
        assert await run.stop() == 0, run.tail()
        final = [m for m in run.messages() if "generation 1 (v1) finished draining" in m]
        assert final and "none cut" in final[0]


async def test_a_deploy_under_process_isolation(tmp_path: Path) -> None:
    env = {"DEPLOY_TEST_ISOLATION": "process"}
    async with deployed(tmp_path, "--workers", "1", env=env) as run:
        await run.until(lambda: run.live_workers() >= 1, 120, "generation 1's worker")
        live = [await run.call(f"live-{i}", hold_s=6.0) for i in range(3)]
        run.set_code(reply="v2")
        code, out, err = await run.deploy("--version", "v2")
        assert code == 0, out + err
        after = await run.call("after")
        report = await run.report(after.job_id)
        assert (report["deploy"], reply_of(report)) == ("v2", "v2 here")
        for d in live:
            report = await run.report(d.job_id)
            assert (report["outcome"], report["deploy"]) == ("completed", "v1")
        assert await run.stop() == 0, run.tail()


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        ("import", "does not import"),
        ("prewarm", "prewarm fails"),
        ("register", "not ready within 8 s: 0 of 1 worker(s) registered"),
    ],
)
async def test_a_broken_generation_is_torn_down_and_the_old_one_keeps_serving(
    tmp_path: Path, broken: str, reason: str
) -> None:
    async with deployed(tmp_path, "--workers", "1") as run:
        await run.until(lambda: run.live_workers() >= 1, 120, "generation 1's worker")
        held = await run.call("held", hold_s=6.0)
        run.set_code(reply="v2", broken=broken)
        code, out, err = await run.deploy("--version", "v2", "--timeout", "8")
        assert code == 1, out + err
        assert reason in err and "generation 1 (v1) keeps serving" in err, err

        after = await run.call("after-the-failed-deploy")
        assert reply_of(await run.report(after.job_id)) == "v1 here"
        assert (await run.report(held.job_id))["outcome"] == "completed"
        status = await run.status()
        states = {g["generation"]: (g["state"], g["failure"]) for g in status["generations"]}
        assert states[1] == ("serving", "")
        assert states[2][0] == "failed" and reason in states[2][1]
        assert status["ready"] is True

        run.set_code(broken="")  # mended: the next deploy goes through
        code, out, err = await run.deploy("--version", "v3")
        assert code == 0, out + err
        mended = await run.call("after-the-fix")
        assert reply_of(await run.report(mended.job_id)) == "v2 here"
        assert await run.stop() == 0, run.tail()


async def test_calls_still_live_at_the_drain_timeout_are_reported_by_id(tmp_path: Path) -> None:
    async with deployed(tmp_path, "--workers", "1", "--drain-timeout", "2") as run:
        await run.until(lambda: run.live_workers() >= 1, 120, "generation 1's worker")
        long_calls = [await run.call(f"long-{i}", hold_s=60.0) for i in range(3)]
        code, out, err = await run.deploy("--version", "v2", "--wait")
        assert code == 1, out + err
        for d in long_calls:
            assert d.job_id in err
        assert "cut" in err
        status = await run.status()
        first = status["generations"][0]
        assert first["state"] == "exited"
        assert sorted(first["cut"]) == sorted(d.job_id for d in long_calls)
        logged = [m for m in run.messages() if "drain timeout cut 3" in m]
        assert logged and all(d.job_id in logged[0] for d in long_calls)
        # The cut calls were reported when the deploy drained generation 1; stopping now
        # drains generation 2, which cuts none.
        assert await run.stop() == 0, run.tail()


class Holding(Background):
    """How many generations held live calls, sampled from ``--status`` while it runs."""

    def __init__(self, run: Deployed) -> None:
        self.run = run
        self.samples: list[int] = []

    async def _loop(self) -> None:
        while True:
            status = await self.run.status()
            self.samples.append(sum(1 for g in status["generations"] if g["live_calls"]))
            await asyncio.sleep(0.2)


def _imports(run: Deployed, reply: str) -> int:
    """How many processes have imported the code that replies `reply`."""
    loaded = run.state / "loaded"
    return loaded.read_text().split().count(reply) if loaded.exists() else 0


async def until_generation(run: Deployed, version: str, state: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        status = await run.status()
        if any(g["version"] == version and g["state"] == state for g in status["generations"]):
            return
        assert time.monotonic() < deadline, f"no {state} generation {version}:\n{run.tail()}"
        await asyncio.sleep(0.1)


async def test_a_deploy_while_the_new_generation_starts_replaces_it(tmp_path: Path) -> None:
    async with deployed(tmp_path, "--workers", "1") as run:
        await run.until(lambda: run.live_workers() >= 1, 120, "generation 1's worker")
        live = [await run.call(f"live-{i}", hold_s=8.0) for i in range(4)]
        async with Holding(run) as holding, Prober(run, every_s=0.3) as prober:
            run.set_code(reply="v2")
            (run.state / "prewarm_s").write_text("30")  # generation 2 is still starting
            (run.state / "prewarm_for").write_text("v2")
            first = asyncio.create_task(run.deploy("--version", "v2"))
            await until_generation(run, "v2", "starting")
            await run.until(lambda: _imports(run, "v2") >= 1, 60, "v2's import")
            run.set_code(reply="v3")
            code2, out2, err2 = await run.deploy("--version", "v3")
            ready = time.monotonic()
            code1, _out1, err1 = await first
            await asyncio.sleep(1.0)
        assert code2 == 0, out2 + err2
        assert code1 == 1 and "a later deploy replaced it before it was ready" in err1, _out1 + err1
        for d in live:
            report = await run.report(d.job_id)
            assert (report["outcome"], report["deploy"]) == ("completed", "v1")
        probes = [(sent, await run.report(d.job_id)) for sent, d in prober.calls]
        assert all(report["outcome"] == "completed" for _, report in probes)
        assert all(r["deploy"] == "v3" for sent, r in probes if sent >= ready)
        assert max(holding.samples) <= 2, holding.samples
        states = [(g["version"], g["state"]) for g in (await run.status())["generations"]]
        assert states[1:] == [("v2", "failed"), ("v3", "serving")], states
        assert await run.stop() == 0, run.tail()


async def test_a_deploy_while_the_old_generation_drains_waits_for_it(tmp_path: Path) -> None:
    async with deployed(tmp_path, "--workers", "1") as run:
        await run.until(lambda: run.live_workers() >= 1, 120, "generation 1's worker")
        # Held well past both deploys: each `openrtc deploy` takes 2-4 s on a quiet machine,
        # and over 20 s at a load of 6 (the parallel suite on 2 cores), which a 25-s hold
        # did not outlast.
        live = [await run.call(f"live-{i}", hold_s=60.0) for i in range(4)]
        async with Holding(run) as holding:
            run.set_code(reply="v2")
            code, out, err = await run.deploy("--version", "v2")
            assert code == 0, out + err
            run.set_code(reply="v3")
            code, out, err = await run.deploy("--version", "v3")
            assert code == 0, out + err
        # Generation 1 still held its calls: the third waited, never three at once.
        assert "waiting for generation 1 (v1) to finish" in out, out
        assert max(holding.samples) <= 2, holding.samples
        for d in live:
            report = await run.report(d.job_id)
            assert (report["outcome"], report["deploy"]) == ("completed", "v1")
        after = await run.call("after")
        assert reply_of(await run.report(after.job_id)) == "v3 here"
        assert await run.stop() == 0, run.tail()


async def test_a_deploy_before_the_first_generation_is_ready_replaces_it(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    # Slow for v1's code only: generation 2 needs nothing rewritten in time, so however
    # loaded the machine, generation 1 is still starting when the deploy arrives.
    (tmp_path / "state" / "prewarm_s").write_text("30")
    (tmp_path / "state" / "prewarm_for").write_text("v1")
    async with deployed(tmp_path, "--workers", "1") as run:
        await run.until(run.control.exists, 60, "the control socket")
        # Two imports of v1: the controller's and generation 1's. Only then may the code on
        # disk change, or generation 1 would load v2's.
        await run.until(lambda: _imports(run, "v1") >= 2, 60, "generation 1's import")
        run.set_code(reply="v2")
        code, out, err = await run.deploy("--version", "v2")
        assert code == 0, out + err
        after = await run.call("after")
        assert reply_of(await run.report(after.job_id)) == "v2 here"
        status = await run.status()
        states = [(g["version"], g["state"]) for g in status["generations"]]
        assert states == [("v1", "failed"), ("v2", "serving")], states
        assert await run.stop() == 0, run.tail()  # replacing it was no failure


async def test_a_deploy_during_a_worker_crash_restart(tmp_path: Path) -> None:
    async with deployed(tmp_path, "--workers", "2") as run:
        await run.until(lambda: run.live_workers() >= 2, 120, "generation 1's workers")
        status = await run.status()
        victim = status["generations"][0]["workers"][0]["pid"]
        os.kill(victim, signal.SIGKILL)
        run.set_code(reply="v2")
        code, out, err = await run.deploy("--version", "v2")
        assert code == 0, out + err
        after = await run.call("after")
        assert reply_of(await run.report(after.job_id)) == "v2 here"
        await run.until(
            lambda: "generation 1 (v1) finished draining" in " ".join(run.messages()),
            60,
            "generation 1 to finish",
        )
        assert await run.stop() == 0, run.tail()


async def test_sighup_deploys_and_the_control_socket_is_private(tmp_path: Path) -> None:
    async with deployed(tmp_path, "--workers", "1") as run:
        await run.until(lambda: run.live_workers() >= 1, 120, "generation 1's worker")
        await run.until(run.control.exists, 30, "the control socket")
        mode = stat.S_IMODE(run.control.stat().st_mode)
        assert stat.S_ISSOCK(run.control.stat().st_mode) and mode == 0o600

        code, out, _ = await run.openrtc("deploy", "--status")
        assert code == 0 and "generation 1 v1 (env): serving" in out, out
        probe = [sys.executable, "-m", "openrtc_deploy.probe"]
        for op in ("ready", "alive"):
            done = await asyncio.create_subprocess_exec(
                *probe, op, "--control", str(run.control), env=run.env
            )
            assert await done.wait() == 0

        run.set_code(reply="v2")
        os.kill(run.proc.pid, signal.SIGHUP)

        async def serving_two() -> bool:
            status = await run.status()
            return any(
                g["generation"] == 2 and g["state"] == "serving" for g in status["generations"]
            )

        deadline = time.monotonic() + 120
        while not await serving_two():
            assert time.monotonic() < deadline, run.tail()
            await asyncio.sleep(0.2)
        after = await run.call("after-sighup")
        report = await run.report(after.job_id)
        assert reply_of(report) == "v2 here"
        assert report["deploy"] not in ("", "v1")  # resolved from the code on disk

        second = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "openrtc_testing.supervised",
            "deploy_pools:pool",
            "--control",
            str(run.control),
            env=run.env,
            stderr=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        _, said = await asyncio.wait_for(second.communicate(), 120)
        assert second.returncode == 1
        assert "another openrtc controller is running there" in said.decode()

        drain = await asyncio.create_subprocess_exec(
            *probe,
            "drain",
            "--control",
            str(run.control),
            env=run.env,
            stdout=asyncio.subprocess.PIPE,
        )
        drained, _ = await asyncio.wait_for(drain.communicate(), 120)
        assert drain.returncode == 0, drained.decode()
        assert "every call finished" in drained.decode()
        assert await asyncio.wait_for(run.proc.wait(), 60) == 0, run.tail()
        assert not run.control.exists()


async def test_a_deploy_rehearsed_under_openrtc_simulate(tmp_path: Path) -> None:
    """``openrtc simulate --workers 2`` prints its control socket; a deploy against it moves
    the later calls to the new version, and the JSON says which version served each."""
    state = tmp_path / "state"
    state.mkdir()
    # v1 answers no turn until the deploy is done: its first calls are still live then, and
    # the later ones must start on v2, however long the deploy takes on a loaded machine.
    (state / "hold_turns_for").write_text("v1")
    figures = tmp_path / "figures.json"
    tests = TESTS
    env = {
        **os.environ,
        "COLUMNS": "400",  # the control socket's line unwrapped
        "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")]),
        "DEPLOY_TEST_STATE": str(state),
        VERSION_ENV: "v1",
    }
    env.pop("OPENRTC_SUPERVISOR", None)
    simulate = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openrtc_core",
        "simulate",
        str(tests / "deploy_pools.py"),
        "--workers",
        "2",
        "--calls",
        "60",
        "--concurrency",
        "6",
        "--hold",
        "1",
        "--json",
        str(figures),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert simulate.stdout is not None
    said: list[str] = []
    command = ""
    while not command:
        line = (await asyncio.wait_for(simulate.stdout.readline(), 120)).decode()
        assert line, "".join(said)
        said.append(line)
        if "openrtc deploy --control " in line:
            command = line.split("openrtc deploy --control ", 1)[1].strip()
    await _until_serving(command, env)
    (state / "reply").write_text("v2")
    deploy = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openrtc_core",
        "deploy",
        "--control",
        command,
        "--version",
        "v2",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    deployed_said, _ = await asyncio.wait_for(deploy.communicate(), 120)
    assert deploy.returncode == 0, deployed_said.decode()
    (state / "open").touch()
    rest, _ = await asyncio.wait_for(simulate.communicate(), 300)
    assert simulate.returncode == 0, "".join(said) + rest.decode()
    calls = json.loads(figures.read_text())["calls"]
    assert all(call["outcome"] == "completed" for call in calls)
    versions = [call["deploy"] for call in calls]
    assert set(versions) == {"v1", "v2"}, versions
    # Calls start in order: once v2 serves, no later call goes back to v1.
    assert versions.index("v2") > versions.index("v1")
    assert "v1" not in versions[len(versions) - versions[::-1].index("v2") :]


async def _until_serving(control: str, env: dict[str, str], timeout: float = 120.0) -> None:
    """Until the controller at `control` says a generation serves (probe ``ready``)."""
    deadline = time.monotonic() + timeout
    while True:
        probe = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "openrtc_deploy.probe",
            "ready",
            "--control",
            control,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        if await probe.wait() == 0:
            return
        assert time.monotonic() < deadline, "no generation served in time"
        await asyncio.sleep(0.2)
