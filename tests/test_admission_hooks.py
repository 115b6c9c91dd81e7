"""The admission contract a counting plugin stands on: claims that wait, and exactly one
release per admitted job, with its outcome, through the real worker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from e2e_pools import make_coroutine_pool

from openrtc_core import (
    JobView,
    Outcome,
    RouteDecision,
    SessionOutcome,
    TenantContext,
    Verdict,
    hookimpl,
)
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.worker import simulate_call, simulated_call_metadata


class Counting:
    """Admits every job, claims each after a real await, refuses claims for room 'no-*'."""

    def __init__(self) -> None:
        self.admitted: list[str] = []
        self.released: list[tuple[str, Outcome | None]] = []

    @hookimpl
    def openrtc_admit_job(
        self, job: JobView, decision: RouteDecision, tenant: TenantContext | None
    ) -> Verdict | None:
        self.admitted.append(job.job_id)
        return None

    @hookimpl
    def openrtc_claim_job(self, job: JobView) -> Any:
        async def claim() -> Verdict | None:
            await asyncio.sleep(0.01)  # a round trip to a shared store
            if job.room_name.startswith("no-"):
                return Verdict.refuse("fleet full", terminate=True)
            return None

        return claim()

    @hookimpl
    def openrtc_job_released(self, job: JobView, outcome: SessionOutcome | None) -> None:
        self.released.append((job.job_id, outcome.outcome if outcome else None))


class Broken:
    @hookimpl
    def openrtc_claim_job(self) -> Any:
        async def claim() -> None:
            raise ConnectionError("store unreachable")

        return claim()


async def test_every_admitted_job_is_released_once_with_its_outcome(
    openrtc_dispatch: LoopbackDispatchServer, openrtc_worker: Any
) -> None:
    counting = Counting()
    pool = make_coroutine_pool(max_sessions=50)
    pool.plugins.register(counting)
    async with openrtc_worker(pool):
        _, ok = await simulate_call(openrtc_dispatch, "ok-1", agent="support", turns=["hi"])
        _, boom = await simulate_call(
            openrtc_dispatch, "boom-1", agent="node-boom", turns=["explode"]
        )
        refused = await openrtc_dispatch.dispatch(
            "no-1", job_metadata=simulated_call_metadata("support", turns=["hi"])
        )
        await asyncio.sleep(0.5)  # the ended jobs' executors close
    assert ok["outcome"] == "completed" and boom["outcome"] == "failed"
    assert refused.terminate and not refused.accepted
    released = dict(counting.released)
    assert len(counting.released) == len(released) == len(counting.admitted) == 3
    assert released[ok["job_id"]] is Outcome.COMPLETED
    assert released[boom["job_id"]] is Outcome.FAILED
    assert list(released.values()).count(None) == 1  # the refused claim never ran


async def test_a_claim_that_fails_refuses_the_job_for_another_worker(
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = make_coroutine_pool(max_sessions=50)
    pool.plugins.register(Broken(), name="broken-store")
    async with openrtc_worker(pool):
        refused = await openrtc_dispatch.dispatch(
            "any-1", job_metadata=simulated_call_metadata("support", turns=["hi"])
        )
    assert not refused.accepted and refused.rejected_by and not refused.terminate
    assert "broken-store" in caplog.text and "ConnectionError" in caplog.text
