"""A job the worker accepted but the server never assigned (it lost it, or the worker is on
its way out): the worker says so in one line, its slot is free again, and no traceback."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from e2e_pools import make_coroutine_pool

from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.worker import simulate_call, simulated_call_metadata

ASSIGNMENT_WAIT_S = 30.0
"""livekit gives up on an assignment after 7.5 s; room for a loaded machine."""


async def test_a_job_never_assigned_frees_its_slot_in_one_line(
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with openrtc_worker(make_coroutine_pool(max_sessions=1)):
        openrtc_dispatch.withhold_assignments = True
        lost = await openrtc_dispatch.dispatch(
            "room-lost", job_metadata=simulated_call_metadata("support", turns=["hi"])
        )
        assert not lost.accepted and "withheld" in lost.error
        deadline = time.monotonic() + ASSIGNMENT_WAIT_S
        said = ""
        while not said and time.monotonic() < deadline:
            said = next(
                (r.getMessage() for r in caplog.records if "did not assign it" in r.getMessage()),
                "",
            )
            await asyncio.sleep(0.1)
        assert said.startswith(f"job {lost.job_id} in room room-lost: accepted, but LiveKit"), said
        # Its one slot (max_sessions=1) is free again: the next call runs.
        openrtc_dispatch.withhold_assignments = False
        _, report = await simulate_call(openrtc_dispatch, "room-after", turns=["hi"])
    assert report["outcome"] == "completed"
    failed = [r for r in caplog.records if "job_request_fnc failed" in r.getMessage()]
    assert not failed and not any(r.exc_info for r in caplog.records if r.levelno >= logging.ERROR)
