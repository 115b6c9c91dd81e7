"""Routing through the real AgentServer and the loopback dispatch server."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from e2e_pools import STRICT_POOL, THREAD_POOL

from openrtc_core import AGENT_ATTRIBUTE
from openrtc_core.metadata import MAX_METADATA_BYTES
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.worker import running_worker, simulate_call

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def lk() -> AsyncIterator[LoopbackDispatchServer]:
    async with (
        LoopbackDispatchServer() as server,
        running_worker(THREAD_POOL, server),
        running_worker(STRICT_POOL, server),
    ):
        yield server


async def route(
    lk: LoopbackDispatchServer,
    room: str,
    *,
    job: object = None,
    room_meta: object = None,
    agent_name: str = "",
) -> str | None:
    """Dispatch and return the agent the worker accepted with, or None when it rejected."""
    d = await lk.dispatch(
        room,
        agent_name=agent_name,
        job_metadata=job if isinstance(job, str) else json.dumps(job) if job else "",
        room_metadata=room_meta
        if isinstance(room_meta, str)
        else json.dumps(room_meta)
        if room_meta
        else "",
    )
    if d.accepted:
        # The job starts for real: make it end, so the worker is left idle.
        await lk.terminate(d.job_id)
        return d.participant_attributes[AGENT_ATTRIBUTE]
    return None


async def test_job_metadata_names_the_agent(lk: LoopbackDispatchServer) -> None:
    assert await route(lk, "room-1", job={"agent": "sales"}) == "sales"


async def test_room_metadata_names_the_agent(lk: LoopbackDispatchServer) -> None:
    assert await route(lk, "room-2", room_meta={"agent": "booking"}) == "booking"


@pytest.mark.parametrize(
    ("room", "agent"),
    [
        ("sales-123", "sales"),
        ("sales_123", "sales"),
        ("sales-eu-7", "sales-eu"),  # the longest registered prefix wins
        ("booking_x", "booking"),
    ],
)
async def test_room_name_prefix(lk: LoopbackDispatchServer, room: str, agent: str) -> None:
    assert await route(lk, room) == agent


async def test_precedence_job_then_room_metadata_then_prefix(lk: LoopbackDispatchServer) -> None:
    both = await route(lk, "support-9", job={"agent": "sales"}, room_meta={"agent": "booking"})
    assert both == "sales"
    assert await route(lk, "support-9", room_meta={"agent": "booking"}) == "booking"
    assert await route(lk, "support-9") == "support"


async def test_default_agent_takes_unmatched_jobs(lk: LoopbackDispatchServer) -> None:
    assert await route(lk, "lobby") == "support"
    assert await route(lk, "salesroom") == "support"  # no separator: not a prefix match


async def test_unknown_agent_is_rejected_so_another_worker_can_take_it(
    lk: LoopbackDispatchServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="openrtc.worker"):
        d = await lk.dispatch("room-3", job_metadata=json.dumps({"agent": "billing"}))
    assert not d.accepted
    assert d.rejected_by and all(terminate is False for _, terminate in d.rejected_by)
    lines = [r.getMessage() for r in caplog.records if d.job_id in r.getMessage()]
    assert len(lines) == 1
    assert "room-3" in lines[0] and "'billing'" in lines[0] and "does not host" in lines[0]


async def test_no_match_without_default_is_rejected(
    lk: LoopbackDispatchServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="openrtc.worker"):
        d = await lk.dispatch("lobby", agent_name="strict")
    assert not d.accepted
    assert d.rejected_by == [(d.rejected_by[0][0], False)]
    assert any("no routing rule matched" in r.getMessage() for r in caplog.records)
    assert await route(lk, "support-1", agent_name="strict") == "support"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("{agent: sales", "not valid JSON"),
        ('["sales"]', "not an object"),
        ('{"agent": "sales", "pad": "' + "x" * MAX_METADATA_BYTES + '"}', "byte limit"),
    ],
)
@pytest.mark.parametrize("where", ["job", "room_meta"])
async def test_malformed_metadata_is_treated_as_absent(
    lk: LoopbackDispatchServer,
    caplog: pytest.LogCaptureFixture,
    raw: str,
    problem: str,
    where: str,
) -> None:
    with caplog.at_level(logging.WARNING, logger="openrtc.metadata"):
        agent = await route(lk, "booking-5", **{where: raw})
    # Routing falls through to the room prefix, and the worker stays up.
    assert agent == "booking"
    assert any(problem in r.getMessage() for r in caplog.records)
    assert await route(lk, "room-ok", job={"agent": "sales"}) == "sales"


async def test_agent_attribute_on_accept(lk: LoopbackDispatchServer) -> None:
    d = await lk.dispatch("x", job_metadata=json.dumps({"agent": "booking"}))
    await lk.terminate(d.job_id)
    assert d.accepted
    assert d.participant_attributes[AGENT_ATTRIBUTE] == "booking"
    assert d.participant_attributes["lk.agent.name"] == ""


async def test_malformed_metadata_is_warned_about_once_per_job(
    lk: LoopbackDispatchServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="openrtc.metadata"):
        d, report = await simulate_call(lk, "booking-6", turns=["hi"], room_metadata="{bad")
    assert report["outcome"] == "completed"  # the session ran: both the request and the job
    warned = [
        r
        for r in caplog.records
        if r.name == "openrtc.metadata" and r.__dict__.get("job_id") == d.job_id
    ]
    assert len(warned) == 1, [r.getMessage() for r in warned]
