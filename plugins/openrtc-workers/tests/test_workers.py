"""The supervisor with real worker processes against the loopback dispatch server.

Each test starts ``openrtc start worker_pools:pool --workers N`` (simulation on) in a
subprocess: the real supervisor, real forked workers, each registered on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from pathlib import Path

import pytest
from supervisor_harness import Supervised, supervised
from worker_pools import BALLAST_ENV, CRASH_ENV, CRASH_STATUS, ISOLATION_ENV

pytestmark = pytest.mark.asyncio

REPORT_TIMEOUT_S = 60.0


def registrations(handle: Supervised) -> int:
    return sum("registered with LiveKit" in m for m in handle.messages())


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def reports(handle: Supervised, jobs: list[str]) -> dict[str, dict[str, object]]:
    found = {}
    for job in jobs:
        found[job] = await handle.lk.wait_for_report(job, timeout=REPORT_TIMEOUT_S)
    return found


async def test_calls_spread_over_the_workers_and_sigterm_drains_them_all(tmp_path: Path) -> None:
    async with supervised(tmp_path, "--workers", "2") as handle:
        await handle.wait_for_workers(2)
        assert len(handle.worker_pids()) == 2
        # Calls still live when SIGTERM comes: the drain lets every one finish.
        jobs = [await handle.call(f"room-{n}", hold_s=3.0) for n in range(6)]
        await asyncio.sleep(0.5)
        status = await handle.stop()
        done = await reports(handle, jobs)
    assert status == 0, handle.output()[-3000:]
    assert {r["outcome"] for r in done.values()} == {"completed"}
    served = {r["worker"] for r in done.values()}
    assert served == {1, 2}, done
    pids = {r["pid"] for r in done.values()}
    assert len(pids) == 2
    messages = handle.messages()
    registered = [m for m in messages if "registered with LiveKit as AW_" in m]
    assert len(registered) == 2, messages
    assert any("draining 2 worker(s)" in m for m in messages), messages
    assert any("all workers drained" in m for m in messages), messages
    # The logs name the worker of each record its workers write.
    accepted = [
        r for r in handle.records() if str(r.get("message", "")).startswith("accepting job")
    ]
    assert {r.get("worker") for r in accepted} == {"1/2", "2/2"}
    assert {r.get("worker_pid") for r in accepted} == pids


async def test_a_killed_worker_loses_only_its_calls_and_is_replaced(tmp_path: Path) -> None:
    async with supervised(tmp_path, "--workers", "2") as handle:
        await handle.wait_for_workers(2)
        jobs = [await handle.call(f"room-{n}", hold_s=20.0) for n in range(6)]
        await handle.until(
            lambda: all(handle.lk.dispatches[j].worker_id for j in jobs), 30, "assignments"
        )
        victim = handle.worker_pids()[0]
        before = {w.worker_id for w in handle.live_workers()}
        os.kill(victim, signal.SIGKILL)
        await handle.until(lambda: len(handle.live_workers()) == 1, 30, "the dead worker's leave")
        dead = (before - {w.worker_id for w in handle.live_workers()}).pop()
        lost = {j for j in jobs if handle.lk.dispatches[j].worker_id == dead}
        kept = set(jobs) - lost
        assert lost and kept
        # The replacement registers; new calls land on it as on the other worker.
        await handle.wait_for_workers(2)
        assert victim not in handle.worker_pids()
        done = await reports(handle, sorted(kept))
        fresh = [await handle.call(f"after-{n}") for n in range(4)]
        after = await reports(handle, fresh)
        messages = handle.messages()
        status = await handle.stop()
    assert {r["outcome"] for r in done.values()} == {"completed"}
    assert not lost & set(handle.lk.reports), "a lost call reported as if it ran on"
    died = [m for m in messages if "died unexpectedly (killed by SIGKILL)" in m]
    assert len(died) == 1, messages
    assert f"{len(lost)} live call(s) lost" in died[0]
    for job in lost:
        assert f"{job} (desk)" in died[0]
    for job in kept:
        assert job not in died[0]
    assert len({r["pid"] for r in after.values()}) == 2  # both workers, the new one too
    assert victim not in {r["pid"] for r in after.values()}
    assert status == 0, handle.output()[-3000:]


async def test_a_crash_loop_stops_with_a_clear_error(tmp_path: Path) -> None:
    env = {CRASH_ENV: "start", "OPENRTC_RESTART_DELAY": "0.05"}
    async with supervised(tmp_path, "--workers", "2", env=env) as handle:
        status = await asyncio.wait_for(handle.proc.wait(), 180)
        messages = handle.messages()
    assert status == 1
    given_up = [m for m in messages if "not starting it again" in m]
    assert len(given_up) == 2, messages
    assert f"exit status {CRASH_STATUS}" in given_up[0]
    assert "crashed 5 times in a row" in given_up[0]
    assert any("no worker is left running" in m for m in messages), messages
    restarts = [m for m in messages if m.startswith("starting worker 1 again")]
    assert [m.split(" in ")[1] for m in restarts] == ["0.1 s", "0.1 s", "0.2 s", "0.4 s"]


async def test_a_worker_over_its_call_limit_is_replaced_without_cutting_a_call(
    tmp_path: Path,
) -> None:
    async with supervised(tmp_path, "--workers", "1", "--max-worker-sessions", "3") as handle:
        await handle.wait_for_workers(1)
        first = handle.worker_pids()
        jobs = [await handle.call(f"room-{n}", hold_s=4.0) for n in range(3)]
        # The third call retires the worker: a replacement registers while it drains.
        await handle.until(lambda: len(handle.lk.workers) >= 2, 60, "the replacement")
        later = [await handle.call(f"later-{n}") for n in range(2)]
        done = await reports(handle, jobs)
        after = await reports(handle, later)
        await handle.until(lambda: first[0] not in handle.worker_pids(), 60, "the retiree's exit")
        messages = handle.messages()
        status = await handle.stop()
    assert {r["outcome"] for r in done.values()} == {"completed"}
    assert {r["pid"] for r in done.values()} == set(first)
    assert {r["outcome"] for r in after.values()} == {"completed"}
    assert not {r["pid"] for r in after.values()} & set(first)
    assert any("it has taken 3 calls (limit 3)" in m for m in messages), messages
    retired = [m for m in messages if "after it was asked to stop" in m]
    assert retired and "exit status 0" in retired[0] and "no call was live" in retired[0]
    assert status == 0


async def test_a_worker_over_its_memory_limit_is_replaced_without_cutting_a_call(
    tmp_path: Path,
) -> None:
    # A worker is ~120 MiB PSS here; a call holding 300 MiB takes it over 260.
    args = ("--workers", "1", "--max-worker-memory", "260")
    async with supervised(tmp_path, *args, env={BALLAST_ENV: "300"}) as handle:
        await handle.wait_for_workers(1)
        first = handle.worker_pids()
        jobs = [await handle.call(f"room-{n}", hold_s=5.0) for n in range(2)]
        await handle.until(lambda: len(handle.lk.workers) >= 2, 60, "the replacement")
        done = await reports(handle, jobs)
        await handle.until(lambda: first[0] not in handle.worker_pids(), 60, "the retiree's exit")
        messages = handle.messages()
        status = await handle.stop()
    assert {r["outcome"] for r in done.values()} == {"completed"}
    assert any("its memory is" in m and "(limit 260 MiB)" in m for m in messages), messages
    assert status == 0


async def test_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    async with supervised(tmp_path, "--workers", "2") as handle:
        await handle.wait_for_workers(2)
        pids = handle.worker_pids()
        await handle.call("long", hold_s=60.0)
        handle.proc.send_signal(signal.SIGINT)
        await handle.until(lambda: any("draining" in m for m in handle.messages()), 30, "the drain")
        handle.proc.send_signal(signal.SIGINT)
        status = await asyncio.wait_for(handle.proc.wait(), 30)
        messages = handle.messages()
    assert status == 1
    assert any("stopping every worker at once" in m for m in messages), messages
    assert not any(alive(pid) for pid in pids)


@pytest.mark.parametrize("isolation", ["process", "thread"])
async def test_other_isolation_backends_run_under_the_supervisor(
    tmp_path: Path, isolation: str
) -> None:
    env = {ISOLATION_ENV: isolation}
    async with supervised(tmp_path, "--workers", "2", env=env) as handle:
        await handle.wait_for_workers(2)
        pids = handle.worker_pids()
        jobs = [await handle.call(f"room-{n}") for n in range(4)]
        done = await reports(handle, jobs)
        status = await handle.stop()
    assert {r["outcome"] for r in done.values()} == {"completed"}
    # Each call ran in a job process of the worker LiveKit gave it to, which names it.
    index_of = {
        r["id"]: int(str(r["worker"]).partition("/")[0])
        for r in handle.records()
        if r.get("message") == "registered worker"
    }
    for job, report in done.items():
        assert report["worker"] == index_of[handle.lk.dispatches[job].worker_id]
        if isolation == "process":
            assert report["pid"] not in pids  # a job process, not the worker itself
        else:
            assert report["pid"] in pids  # a thread of the worker
    messages = handle.messages()
    assert any(f"prewarm runs in each job process (isolation={isolation!r})" in m for m in messages)
    assert status == 0


AGENT_MODULE = """
from livekit.agents import Agent

from openrtc_core import AgentPool
from openrtc_testing import ScriptedLLM

TAG = "v1"


class Desk(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Answer.")

    async def llm_node(self, chat_ctx, tools, model_settings):
        yield f"{TAG} reply"


pool = AgentPool(llm=ScriptedLLM(), turn_handling={"turn_detection": None})
pool.add("desk", Desk, default=True)
"""


async def test_every_worker_reloads_a_saved_agent(tmp_path: Path) -> None:
    pytest.importorskip("openrtc_reload", reason="reload comes with openrtc-reload")
    app = tmp_path / "project" / "desk_app.py"
    app.parent.mkdir()
    app.write_text(AGENT_MODULE)
    async with supervised(tmp_path, "--workers", "2", "--reload", target=str(app)) as handle:
        await handle.wait_for_workers(2)
        before = await reports(handle, [await handle.call(f"before-{n}") for n in range(2)])
        app.write_text(AGENT_MODULE.replace('TAG = "v1"', 'TAG = "v2"'))
        await handle.until(
            lambda: sum("reload applied" in m for m in handle.messages("openrtc.reload")) >= 2,
            60,
            "both workers' reloads",
        )
        after = await reports(handle, [await handle.call(f"after-{n}") for n in range(4)])
        status = await handle.stop()
    assert {r["turns"][0]["reply"] for r in before.values()} == {"v1 reply"}  # type: ignore[index]
    assert {r["turns"][0]["reply"] for r in after.values()} == {"v2 reply"}  # type: ignore[index]
    assert {r["worker"] for r in after.values()} == {1, 2}
    assert status == 0


def free_ports(count: int) -> int:
    """A port p with p, p + 1, ... p + count - 1 free now."""
    for _ in range(50):
        with contextlib.ExitStack() as held:
            first = held.enter_context(socket.socket())
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            try:
                for n in range(1, count):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", port + n))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no {count} adjacent free ports")


async def test_a_replacement_gets_its_own_port_while_its_predecessor_drains(
    tmp_path: Path,
) -> None:
    port = free_ports(3)
    env = {"OPENRTC_HTTP_PORT": str(port)}
    args = ("--workers", "1", "--max-worker-sessions", "1")
    async with supervised(tmp_path, *args, env=env) as handle:
        await handle.wait_for_workers(1)
        first = await handle.call("long", hold_s=4.0)
        # The worker drains its call holding port P; its replacement listens on P + 1.
        await handle.until(lambda: len(handle.live_workers()) == 2, 60, "the replacement")
        second = await handle.call("next", hold_s=4.0)
        done = await reports(handle, [first, second])
        # That one retires in turn while the first still drains: the third takes P + 2.
        await handle.until(lambda: registrations(handle) >= 3, 60, "the third worker")
        messages = handle.messages()
        status = await handle.stop()
    assert {r["outcome"] for r in done.values()} == {"completed"}
    assert not [m for m in messages if "died unexpectedly" in m], messages
    listening = [
        r["message"] for r in handle.records() if "HTTP server listening" in str(r.get("message"))
    ]
    assert listening[:3] == [f"HTTP server listening on :{p}" for p in range(port, port + 3)]
    assert status == 0


async def test_a_worker_holding_a_task_that_will_not_stop_is_replaced(tmp_path: Path) -> None:
    # One worker under the supervisor: a recycling limit it never reaches makes it supervise.
    async with supervised(tmp_path, "--workers", "1", "--max-worker-sessions", "1000") as handle:
        await handle.wait_for_workers(1)
        first = handle.worker_pids()
        # Its call ends; the task it left behind goes on after it is cancelled.
        done = await reports(handle, [await handle.call("swallower-1")])
        await handle.until(lambda: first[0] not in handle.worker_pids(), 90, "the stuck exit")
        await handle.until(lambda: registrations(handle) >= 2, 90, "the replacement")
        after = await reports(handle, [await handle.call("room-after")])
        messages = handle.messages()
        status = await handle.stop()
    assert {r["outcome"] for r in done.values()} == {"completed"}
    assert {r["outcome"] for r in after.values()} == {"completed"}
    assert not {r["pid"] for r in after.values()} & set(first)
    replacing = [m for m in messages if m.startswith("replacing worker 1/1")]
    assert replacing and "cannot recover by itself" in replacing[0], messages
    assert "task swallows-cancel (_swallow_cancel at" in replacing[0]
    retired = [m for m in messages if "after it was asked to stop" in m]
    assert retired and "exit status 1" in retired[0] and "no call was live" in retired[0]
    assert status == 0, handle.output()[-3000:]
