"""Untrusted input in log lines is bounded and cannot forge a line (through the real worker)."""

from __future__ import annotations

import json
import logging

import pytest
from e2e_pools import make_coroutine_pool

from openrtc_core.logfields import LIMIT, bounded
from openrtc_core.metadata import MAX_METADATA_BYTES
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.worker import running_worker, simulate_call

BOUNDS_POOL = make_coroutine_pool(max_sessions=20, agent_name="bounds")
LONGEST_LINE = 2000
"""No line about one job needs more than this, whatever the caller sent."""


def test_bounded_cuts_and_escapes() -> None:
    assert bounded("support") == "support"
    assert bounded("a" * 250) == "a" * LIMIT + "…(+50 chars)"
    assert bounded("x\nERROR forged\r\x1b[31m") == "x\\nERROR forged\\r\\x1b[31m"
    assert "\n" not in bounded("\n" * 500) and bounded("\n" * 500).endswith("(+400 chars)")


@pytest.mark.asyncio
async def test_a_64_kb_agent_name_is_refused_in_one_bounded_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = "a" * (MAX_METADATA_BYTES - 100)
    metadata = json.dumps({"agent": name})
    assert len(metadata.encode()) <= MAX_METADATA_BYTES  # read, not dropped as too large
    async with LoopbackDispatchServer() as lk, running_worker(BOUNDS_POOL, lk):
        with caplog.at_level(logging.INFO, logger="openrtc"):
            refused = await lk.dispatch("room-1", agent_name="bounds", job_metadata=metadata)
            # Refused cleanly, and the worker goes on serving, a forged room name too.
            forged, report = await simulate_call(
                lk, "support-1\nERROR forged line", agent_name="bounds", turns=["hi"]
            )
        assert not refused.accepted and refused.rejected_by, refused
        assert report["outcome"] == "completed"
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("openrtc")]
    (rejected,) = [line for line in lines if f"rejecting job {refused.job_id}" in line]
    assert "does not host" in rejected and f"(+{len(name) - LIMIT} chars)" in rejected
    assert all(len(line) < LONGEST_LINE for line in lines), max(map(len, lines))
    # OpenRTC's own lines about the job (livekit's "received job request" carries the raw
    # room name in its fields; whether it reaches caplog depends on livekit's logger level).
    (accepted, *_) = [
        r
        for r in caplog.records
        if r.name.startswith("openrtc") and r.__dict__.get("job_id") == forged.job_id
    ]
    assert "\n" not in accepted.getMessage() and "\n" not in accepted.__dict__["room"]
    assert all("\n" not in line for line in lines), [line for line in lines if "\n" in line]
