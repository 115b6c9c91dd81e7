"""Coroutine isolation through the real AgentServer: density, containment, caps, drain."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import weakref
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import pytest
import pytest_asyncio
from e2e_pools import CAPPED_POOL, COROUTINE_POOL, SPUN
from livekit.agents import AgentServer
from livekit.protocol import agent as agent_pb

from openrtc_core.isolation.coroutine.job import LEFTOVER_GRACE_S
from openrtc_core.isolation.coroutine.jobpool import TIMER_SWEEP_S
from openrtc_core.isolation.coroutine.watchdog import drop_cancelled_timers
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.worker import (
    dispatch_until_accepted,
    running_worker,
    simulate_call,
    simulated_call_metadata,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

DONE = (agent_pb.JS_SUCCESS, agent_pb.JS_FAILED)


SERVERS: dict[str, AgentServer] = {}


class PeakJobs:
    """Samples how many jobs a worker runs at once while the block runs."""

    def __init__(self, server: AgentServer, interval_s: float = 0.05) -> None:
        self.server = server
        self.interval_s = interval_s
        self.value = 0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        while True:
            self.value = max(self.value, len(self.server.active_jobs))
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> PeakJobs:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Wait for `check()` to hold; fail naming `what` after a deadline meant for loaded CI."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


def replies(job_id: str) -> int:
    """How many replies the session of `job_id` gave so far (0 before it is built)."""
    live = COROUTINE_POOL.sessions.get(job_id)
    if live is None or live.session is None:
        return 0
    items = live.session.history.items
    return sum(1 for item in items if getattr(item, "role", None) == "assistant")


def is_running(pool: Any, job_id: str) -> bool:
    """The session of `job_id` started and its scripted caller is on the line."""
    live = pool.sessions.get(job_id)
    return live is not None and live.state.value == "running"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def lk() -> AsyncIterator[LoopbackDispatchServer]:
    async with (
        LoopbackDispatchServer() as server,
        running_worker(COROUTINE_POOL, server, shutdown_process_timeout=2.0) as worker,
    ):
        SERVERS["main"] = worker
        yield server


async def test_jobs_run_in_the_worker_process_with_one_prewarm(
    lk: LoopbackDispatchServer,
) -> None:
    d, report = await simulate_call(lk, "support-1", turns=["hello"])
    assert report["outcome"] == "completed"
    assert report["pid"] == os.getpid()
    assert await d.wait_for_status(*DONE) == agent_pb.JS_SUCCESS


async def test_a_simulated_call_draws_no_livekit_connection_warning(
    lk: LoopbackDispatchServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="livekit.agents"):
        d, report = await simulate_call(lk, "support-quiet", turns=["hello"])
        await d.wait_for_status(*DONE)
    assert report["outcome"] == "completed"
    assert "without establishing a connection" not in caplog.text


async def test_two_hundred_concurrent_sessions_complete_in_one_process(
    lk: LoopbackDispatchServer,
) -> None:
    # Each caller holds the line until terminated, so all 200 are live at once however
    # slowly a loaded machine starts them (a fixed hold made the peak a matter of timing).
    held = simulated_call_metadata(turns=["hello", "order?"], hold_s=3600)
    calls = await asyncio.gather(
        *(dispatch_until_accepted(lk, f"support-{i}", job_metadata=held) for i in range(200))
    )
    assert all(d.accepted for d in calls), [d.error for d in calls if not d.accepted]
    await until(
        lambda: all(replies(d.job_id) >= 2 for d in calls), "every call answered both turns"
    )
    live = {j.job.id for j in _server(lk).active_jobs}
    assert {d.job_id for d in calls} <= live  # all 200 live at the same time, in this process
    # One at a time: 200 shutdowns at once on a loaded machine outrun this worker's 2 s
    # shutdown cut-off (what test_a_hanging_shutdown_is_cut_off_after_the_timeout tests).
    reports = []
    for d in calls:
        await lk.terminate(d.job_id)
        reports.append(await lk.wait_for_report(d.job_id))
    assert [r["outcome"] for r in reports] == ["ended"] * 200
    assert all(len(r["turns"]) == 2 for r in reports)
    assert {r["pid"] for r in reports} == {os.getpid()}
    for d in calls:
        assert await d.wait_for_status(*DONE) == agent_pb.JS_SUCCESS


async def test_on_enter_failure_ends_only_that_session(
    lk: LoopbackDispatchServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="openrtc.worker"):
        bad, good = await asyncio.gather(
            dispatch_until_accepted(
                lk, "enter-boom-1", job_metadata=simulated_call_metadata(turns=["hi"], hold_s=1)
            ),
            simulate_call(lk, "support-ok-1", turns=["hi", "hello"]),
        )
        assert await bad.wait_for_status(*DONE) == agent_pb.JS_FAILED
    assert good[1]["outcome"] == "completed"
    lines = [r.getMessage() for r in caplog.records if r.__dict__.get("job_id") == bad.job_id]
    assert any("enter-boom" in line and "on_enter exploded" in line for line in lines), lines
    # The caller is told the cause, not the "session is closing" that followed from it.
    report = await lk.wait_for_report(bad.job_id)
    assert report["outcome"] == "failed"
    assert "on_enter exploded" in report["error"]


async def test_llm_node_failure_mid_call_ends_only_that_session(
    lk: LoopbackDispatchServer,
) -> None:
    (bad, bad_report), (_, good_report) = await asyncio.gather(
        simulate_call(lk, "node-boom-1", turns=["hello", "now explode", "never said"]),
        simulate_call(lk, "support-ok-2", turns=["hi", "hello"]),
    )
    assert bad_report["outcome"] == "failed"
    assert "llm_node exploded" in bad_report["error"]
    assert len(bad_report["turns"]) == 1  # the first turn was answered
    assert await bad.wait_for_status(*DONE) == agent_pb.JS_FAILED
    assert good_report["outcome"] == "completed"


async def test_a_call_whose_tool_raises_is_reported_failed_and_takes_no_more_turns(
    lk: LoopbackDispatchServer,
) -> None:
    d, report = await simulate_call(lk, "tool-boom-1", turns=["hello", "refund please", "more"])
    assert await d.wait_for_status(*DONE) == agent_pb.JS_FAILED
    # The caller's outcome is the session's: failed, with the tool's exception.
    assert report["outcome"] == "failed"
    assert "refund tool exploded for 42" in report["error"]
    assert [t["user"] for t in report["turns"]] in (["hello"], ["hello", "refund please"])


async def test_tasks_an_agent_leaves_behind_are_cancelled_and_named_once(
    lk: LoopbackDispatchServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="openrtc.coroutine"):
        d, report = await simulate_call(lk, "spinner-1", turns=["hi"])
        assert report["outcome"] == "completed"
        assert await d.wait_for_status(*DONE) == agent_pb.JS_SUCCESS
        (spun,) = [task for task in SPUN if not task.done()]  # still spinning after the call
        await until(spun.done, "the leftover task cancelled", timeout=LEFTOVER_GRACE_S + 30)
    assert spun.cancelled()
    named = [r.getMessage() for r in caplog.records if "left 1 task(s)" in r.getMessage()]
    assert len(named) == 1, named
    assert "agent spinner" in named[0] and "spin-forever" in named[0] and d.job_id in named[0]


async def test_a_blocking_agent_is_named_and_others_go_on(
    lk: LoopbackDispatchServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="openrtc.watchdog"):
        (blocker, _), (_, other) = await asyncio.gather(
            simulate_call(lk, "blocker-1", turns=["please block now"]),
            simulate_call(lk, "support-ok-3", turns=["hi"], hold_s=1.0),
        )
    assert other["outcome"] == "completed"
    named = [r.getMessage() for r in caplog.records if r.__dict__.get("job_id") == blocker.job_id]
    assert named, [r.getMessage() for r in caplog.records]
    assert all("agent blocker" in message for message in named)
    blocked_ms = [int(message.split("blocked for ")[1].split(" ms")[0]) for message in named]
    # The 500 ms stall is named exactly once (a lower bound only: a loaded machine stretches
    # it, and may add short stalls of its own while the blocker's task runs).
    assert len([ms for ms in blocked_ms if ms >= 450]) == 1, named


async def test_a_hanging_shutdown_is_cut_off_after_the_timeout(
    lk: LoopbackDispatchServer,
) -> None:
    d, report = await simulate_call(lk, "hanger-1", turns=["hi"])
    assert report["outcome"] == "completed"
    # shutdown_process_timeout=2.0 for this worker: the job is cut off, not left hanging.
    assert await d.wait_for_status(*DONE, timeout=15) == agent_pb.JS_FAILED
    assert d.job_id not in {j.job.id for j in _server(lk).active_jobs}


async def test_termination_ends_that_job_alone(lk: LoopbackDispatchServer) -> None:
    long_call = await dispatch_until_accepted(
        lk, "support-long", job_metadata=simulated_call_metadata(turns=["hi"], hold_s=60)
    )
    _, other = await asyncio.gather(
        _terminate_soon(lk, long_call.job_id),
        simulate_call(lk, "support-ok-4", turns=["hi"], hold_s=0.5),
    )
    report = await lk.wait_for_report(long_call.job_id, timeout=20)
    assert report["outcome"] == "ended"
    assert await long_call.wait_for_status(*DONE, timeout=20) == agent_pb.JS_SUCCESS
    assert other[1]["outcome"] == "completed"


async def _terminate_soon(lk: LoopbackDispatchServer, job_id: str) -> tuple[None, dict[str, str]]:
    # Once the call is up (a fixed sleep raced the job's start on a loaded machine).
    await until(lambda: is_running(COROUTINE_POOL, job_id), f"{job_id} running")
    await lk.terminate(job_id)
    return None, {}


def _server(lk: LoopbackDispatchServer) -> AgentServer:
    return SERVERS["main"]


async def test_max_sessions_is_never_exceeded_under_a_burst() -> None:
    async with LoopbackDispatchServer() as lk, running_worker(CAPPED_POOL, lk) as server:
        async with PeakJobs(server, interval_s=0.01) as peak:
            # Held until terminated: no call ends and frees a slot during the burst, however
            # long a loaded machine takes to answer all 20 offers.
            burst = await asyncio.gather(
                *(
                    lk.dispatch(
                        f"support-{i}",
                        agent_name="capped",
                        job_metadata=simulated_call_metadata(turns=["hi"], hold_s=3600),
                    )
                    for i in range(20)
                )
            )
            accepted = [d for d in burst if d.accepted]
            rejected = [d for d in burst if not d.accepted]
            for d in accepted:
                await until(partial(is_running, CAPPED_POOL, d.job_id), f"{d.job_id} running")
            for d in accepted:
                await lk.terminate(d.job_id)
                assert (await lk.wait_for_report(d.job_id))["outcome"] == "ended"
        assert len(accepted) == 5
        assert all(not d.terminate for d in rejected)
        assert peak.value <= 5


async def test_drain_finishes_calls_in_flight_and_turns_new_ones_away() -> None:
    async with LoopbackDispatchServer() as lk, running_worker(CAPPED_POOL, lk) as server:
        worker = lk.workers[0]
        calls = await asyncio.gather(
            *(
                dispatch_until_accepted(
                    lk,
                    f"support-d{i}",
                    agent_name="capped",
                    job_metadata=simulated_call_metadata(turns=["hi"], hold_s=1.5),
                )
                for i in range(3)
            )
        )
        assert all(d.accepted for d in calls)
        drain = asyncio.create_task(server.drain(timeout=30))
        await worker.wait_for_status(agent_pb.WS_FULL, timeout=30)
        late = await lk.dispatch(
            "support-late",
            agent_name="capped",
            job_metadata=simulated_call_metadata(turns=["hi"]),
        )
        assert not late.accepted
        assert not late.terminate
        await drain
        # The drain returned only after every call in flight finished and reported.
        assert all(d.job_id in lk.reports for d in calls)
        reports = [lk.reports[d.job_id] for d in calls]
        assert [r["outcome"] for r in reports] == ["completed"] * 3


async def test_a_failing_factory_fails_only_its_job_and_is_logged_once(
    lk: LoopbackDispatchServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        (bad, bad_report), (_, good) = await asyncio.gather(
            simulate_call(lk, "factory-boom-1", turns=["hi"]),
            simulate_call(lk, "support-ok-5", turns=["hi"]),
        )
        assert await bad.wait_for_status(*DONE) == agent_pb.JS_FAILED
    assert bad_report["outcome"] == "failed"
    assert "cannot build an agent for room factory-boom-1" in bad_report["error"]
    assert good["outcome"] == "completed"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    ours = [r for r in errors if "cannot build an agent" in r.getMessage()]
    # One line naming agent, job and the exception, with the traceback once; livekit does
    # not log it again as an unhandled exception of the job task.
    assert len(ours) == 1, [r.getMessage() for r in errors]
    assert "factory-boom" in ours[0].getMessage() and bad.job_id in ours[0].getMessage()
    assert (
        sum(r.exc_info is not None for r in errors if r.__dict__.get("job_id") == bad.job_id) == 1
    )
    assert not any("unhandled exception" in r.getMessage() for r in errors)


async def test_the_registry_holds_live_sessions_and_forgets_ended_ones(
    lk: LoopbackDispatchServer,
) -> None:
    d = await dispatch_until_accepted(
        lk, "support-reg", job_metadata=simulated_call_metadata(turns=["hi"], hold_s=3600)
    )
    # Held until terminated: the call cannot end before it is looked at, however slow.
    await until(lambda: is_running(COROUTINE_POOL, d.job_id), f"{d.job_id} running")
    live = COROUTINE_POOL.sessions.get(d.job_id)
    assert live is not None
    assert live.info.agent == "support"
    assert live.session is not None
    assert live.state.value == "running"
    await lk.terminate(d.job_id)
    assert (await lk.wait_for_report(d.job_id))["outcome"] == "ended"
    await d.wait_for_status(*DONE)
    assert COROUTINE_POOL.sessions.get(d.job_id) is None


async def test_ended_sessions_are_freed(lk: LoopbackDispatchServer) -> None:
    """Nothing keeps an ended call's session: not livekit's cancelled shutdown timeouts
    (whose context holds the JobContext), not the backend's own cut-off timer."""
    # Held until terminated, so every session is caught alive however slowly they start.
    metadata = simulated_call_metadata(turns=["hi"], hold_s=3600)
    dispatches = [
        await dispatch_until_accepted(lk, f"free-{i}", job_metadata=metadata) for i in range(5)
    ]
    sessions: dict[str, weakref.ref[Any]] = {}
    for d in dispatches:
        await until(partial(is_running, COROUTINE_POOL, d.job_id), f"{d.job_id} running")
        live = COROUTINE_POOL.sessions.get(d.job_id)
        assert live is not None and live.session is not None
        sessions[d.job_id] = weakref.ref(live.session)
    del live
    for d in dispatches:
        await lk.terminate(d.job_id)
        assert (await lk.wait_for_report(d.job_id))["outcome"] == "ended"
        await d.wait_for_status(*DONE)

    def all_freed() -> bool:
        gc.collect()
        return all(ref() is None for ref in sessions.values())

    # Freed by the timer sweep (every TIMER_SWEEP_S), long before livekit's 60 s shutdown
    # timeouts would have let go on their own; a deadline, not a fixed sleep, for loaded CI.
    try:
        await until(all_freed, "ended sessions freed", timeout=TIMER_SWEEP_S + 20)
    except AssertionError:
        alive = [job for job, ref in sessions.items() if ref() is not None]
        raise AssertionError(f"sessions of ended jobs still in memory: {alive}") from None


async def test_dropping_cancelled_timers_keeps_the_live_ones() -> None:
    loop = asyncio.get_running_loop()
    fired: list[int] = []
    cancelled = [loop.call_later(3600, fired.append, i) for i in range(10)]
    kept = loop.call_later(0.05, fired.append, 99)
    for handle in cancelled:
        handle.cancel()
    # At least ours: other tests' cancelled timers may share this loop.
    assert drop_cancelled_timers(loop) >= 10
    assert not any(h in loop._scheduled for h in cancelled)  # type: ignore[attr-defined]
    await asyncio.sleep(0.1)
    assert fired == [99]
    assert kept not in loop._scheduled  # type: ignore[attr-defined]
