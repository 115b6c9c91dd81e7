"""Sessions built by the pool, run through the real worker with scripted callers."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from e2e_pools import EVENTS, PROCESS_POOL, THREAD_POOL
from livekit.protocol import agent as agent_pb

from openrtc_core import hookimpl
from openrtc_core.models import SessionInfo, SessionOutcome
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.worker import running_worker, simulate_call, simulated_call_metadata

pytestmark = pytest.mark.asyncio(loop_scope="module")


class LifecycleRecorder:
    def __init__(self) -> None:
        self.started: list[SessionInfo] = []
        self.ended: list[tuple[SessionInfo, SessionOutcome]] = []

    @hookimpl
    def openrtc_session_started(self, info: SessionInfo) -> None:
        self.started.append(info)

    @hookimpl
    def openrtc_session_ended(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        self.ended.append((info, outcome))


RECORDER = LifecycleRecorder()
THREAD_POOL.plugins.register(RECORDER, name="test.lifecycle")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def lk() -> AsyncIterator[LoopbackDispatchServer]:
    async with LoopbackDispatchServer() as server, running_worker(THREAD_POOL, server):
        yield server


def texts(events: list[dict[str, Any]], role: str = "assistant") -> list[str]:
    return [e["text"] for e in events if e["type"] == "message" and e.get("role") == role]


async def test_defaults_and_overrides_reach_each_session(lk: LoopbackDispatchServer) -> None:
    _, support = await simulate_call(lk, "r1", agent="support", turns=["hello there"])
    _, sales = await simulate_call(lk, "r2", agent="sales", turns=["hello there"])
    assert support["outcome"] == sales["outcome"] == "completed"
    assert support["pid"] == os.getpid()  # thread isolation: same process
    assert support["providers"]["llm"] == "pool-llm"
    assert sales["providers"]["llm"] == "sales-llm"
    assert texts(support["turns"][0]["events"]) == ["Hi, hello there!"]


async def test_greeting_is_spoken_when_configured(lk: LoopbackDispatchServer) -> None:
    _, support = await simulate_call(lk, "r3", agent="support")
    _, sales = await simulate_call(lk, "r4", agent="sales")
    assert texts(support["greeting"]) == ["Hello! How can I help you today?"]
    assert sales["greeting"] == []  # greeting=None for sales


async def test_function_tool_runs_through_the_scripted_llm(lk: LoopbackDispatchServer) -> None:
    EVENTS.clear()
    _, report = await simulate_call(lk, "r5", agent="support", turns=["where is my order?"])
    events = report["turns"][0]["events"]
    assert [e["type"] for e in events] == ["function_call", "function_call_output", "message"]
    assert events[0]["name"] == "lookup_order"
    assert json.loads(events[0]["arguments"]) == {"order_id": "42"}
    assert events[1]["output"] == "order 42 ships tomorrow"
    assert texts(events) == ["Found: order 42 ships tomorrow"]
    assert ("tool", "lookup_order", "42") in EVENTS


async def test_on_enter_and_on_exit_run(lk: LoopbackDispatchServer) -> None:
    d, _ = await simulate_call(lk, "r6", agent="support", turns=["hello"])
    await d.wait_for_status(agent_pb.JS_SUCCESS, agent_pb.JS_FAILED)
    kinds = [e[0] for e in EVENTS if e[1:] == (d.job_id,)]
    assert kinds.count("enter") == 1
    assert kinds.count("exit") == 1
    assert kinds.index("enter") < kinds.index("exit")


async def test_factory_gets_the_job_context(lk: LoopbackDispatchServer) -> None:
    EVENTS.clear()
    d = await lk.dispatch(
        "booking-1",
        job_metadata=simulated_call_metadata("booking", turns=["hello"], extra={"lang": "fr"}),
    )
    report = await lk.wait_for_report(d.job_id)
    assert report["outcome"] == "completed"
    assert ("factory", "booking", d.job_id, "booking-1", "fr") in EVENTS


async def test_lifecycle_hooks_see_start_and_end(lk: LoopbackDispatchServer) -> None:
    d, _ = await simulate_call(lk, "r7", agent="sales", turns=["hi"])
    await d.wait_for_status(agent_pb.JS_SUCCESS, agent_pb.JS_FAILED)
    started = [i for i in RECORDER.started if i.job_id == d.job_id]
    ended = [(i, o) for i, o in RECORDER.ended if i.job_id == d.job_id]
    assert len(started) == 1 and started[0].agent == "sales"
    assert len(ended) == 1 and ended[0][1].outcome.value == "completed"


async def test_bad_caller_script_fails_the_call_not_the_worker(
    lk: LoopbackDispatchServer,
) -> None:
    d = await lk.dispatch(
        "r8", job_metadata=json.dumps({"agent": "sales", "openrtc.simulate": {"turns": "hi"}})
    )
    report = await lk.wait_for_report(d.job_id)
    assert report["outcome"] == "failed"
    assert "turns must be a list of strings" in report["error"]
    _, ok = await simulate_call(lk, "r9", agent="sales", turns=["hi"])
    assert ok["outcome"] == "completed"


async def test_caller_pauses_before_each_line(lk: LoopbackDispatchServer) -> None:
    _, report = await simulate_call(lk, "r10", agent="sales", turns=["hi", "bye"], pause_s=0.3)
    assert report["outcome"] == "completed"
    # Two pauses of 0.3 s pass before the lines; the turn latencies do not include them:
    # the call lasts at least both pauses *plus* both latencies (were a pause counted in its
    # turn's latency, the sum would exceed the duration). No upper bound on a latency, which
    # a loaded machine can stretch past any fixed figure.
    latencies = [turn["latency_s"] for turn in report["turns"]]
    assert len(latencies) == 2
    assert all(latency > 0 for latency in latencies)
    assert report["duration_s"] >= 2 * 0.3 + sum(latencies) - 1e-3  # float slack only


async def test_bad_pause_fails_the_call_with_its_reason(lk: LoopbackDispatchServer) -> None:
    script = {"turns": ["hi"], "pause_s": [3, 1]}
    d = await lk.dispatch(
        "r11", job_metadata=json.dumps({"agent": "sales", "openrtc.simulate": script})
    )
    report = await lk.wait_for_report(d.job_id)
    assert report["outcome"] == "failed"
    assert "pause_s: low (3) is above high (1)" in report["error"]


async def test_process_isolation_rebuilds_the_pool_in_the_job_process() -> None:
    async with LoopbackDispatchServer() as server, running_worker(PROCESS_POOL, server):
        d, report = await simulate_call(server, "sales-1", turns=["where is my order?"])
        assert report["outcome"] == "completed"
        assert report["pid"] != os.getpid()
        assert report["providers"]["llm"] == "sales-llm"
        assert texts(report["turns"][0]["events"]) == ["Found: order 42 ships tomorrow"]
        assert await d.wait_for_status(agent_pb.JS_SUCCESS, agent_pb.JS_FAILED) == (
            agent_pb.JS_SUCCESS
        )
