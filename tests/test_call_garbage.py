"""Ended calls are freed by reference counting, not left for a full garbage collection.

Through a real coroutine worker (loopback dispatch, real AgentSession): with the collector
off, a call's session must be freed once the call is over, and the cyclic garbage the calls
leave must stay far below what livekit's session machinery leaves on its own (about 1,000
objects a call before ``openrtc_core._livekit.cycles``; see docs/soak.md).
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
import pytest_asyncio
from e2e_pools import make_coroutine_pool
from livekit.protocol import agent as agent_pb
from test_coroutine import is_running, until

from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.worker import (
    dispatch_until_accepted,
    running_worker,
    simulate_call,
    simulated_call_metadata,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

POOL = make_coroutine_pool(max_sessions=50)
CALLS = 8
GARBAGE_PER_CALL_BOUND = 400
"""Objects in (or kept alive only by) reference cycles, per call. Measured here, with the
test's own dispatch server and callers in the process: 891 without the fix, 212 with it."""
DONE = (agent_pb.JS_SUCCESS, agent_pb.JS_FAILED)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def lk() -> AsyncIterator[LoopbackDispatchServer]:
    async with (
        LoopbackDispatchServer() as server,
        running_worker(POOL, server, shutdown_process_timeout=2.0),
    ):
        yield server


def cyclic_garbage() -> int:
    """Collect with DEBUG_SAVEALL: how many objects only the cyclic collector would free."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return len(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def call_dataclasses() -> set[int]:
    """Dataclasses livekit declared inside a method (a reply's ``_SpeechSegment``), alive or
    garbage: each is about 30 objects in reference cycles for full collections to walk."""
    return {
        id(obj)
        for obj in gc.get_objects()
        if isinstance(obj, type)
        and "<locals>" in obj.__qualname__
        and obj.__module__.startswith("livekit.")
        and "__dataclass_fields__" in vars(obj)
    }


async def test_ended_calls_are_freed_without_the_garbage_collector(
    lk: LoopbackDispatchServer,
) -> None:
    # A first call loads and caches what every call uses (it is not garbage).
    d, report = await simulate_call(lk, "garbage-warm-up", turns=["hello"])
    assert report["outcome"] == "completed"
    await d.wait_for_status(*DONE)

    metadata = simulated_call_metadata(turns=["hello", "order?"], hold_s=3600)
    sessions: dict[str, weakref.ref[Any]] = {}
    gc.collect()
    gc.disable()
    classes_before = call_dataclasses()
    try:
        for i in range(CALLS):
            d = await dispatch_until_accepted(lk, f"garbage-{i}", job_metadata=metadata)
            assert d.accepted, d.error
            await until(partial(is_running, POOL, d.job_id), f"{d.job_id} running")
            live = POOL.sessions.get(d.job_id)
            assert live is not None and live.session is not None
            sessions[d.job_id] = weakref.ref(live.session)
            del live
            await lk.terminate(d.job_id)
            assert (await lk.wait_for_report(d.job_id))["outcome"] == "ended"
            await d.wait_for_status(*DONE)

        # Reference counting alone frees them, once each job's tasks have finished.
        def all_freed() -> bool:
            return all(ref() is None for ref in sessions.values())

        # Waited for up to 30 s; whatever is still alive then is named by the assert below.
        for _ in range(600):
            if all_freed():
                break
            await asyncio.sleep(0.05)
        alive = [job for job, ref in sessions.items() if ref() is not None]
        declared = len(call_dataclasses() - classes_before)
        per_call = cyclic_garbage() / CALLS
    finally:
        gc.enable()
    assert not alive, f"sessions of ended calls wait for the garbage collector: {alive}"
    # One class per local name for the worker's lifetime, not one per reply.
    assert declared <= 1, f"{declared} dataclasses declared by {CALLS} calls' replies"
    assert per_call < GARBAGE_PER_CALL_BOUND, (
        f"{per_call:.0f} objects a call left in reference cycles"
    )
