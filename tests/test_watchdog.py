"""The loop watchdog on its own: what it blames for a stalled loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import pytest

from openrtc_core.isolation.coroutine.backend import CoroutineLoad
from openrtc_core.isolation.coroutine.watchdog import LoopWatchdog
from openrtc_core.registry import CURRENT_SESSION, SessionTag


async def _stall_inside_session(stall: object) -> None:
    """Run `stall` from a task tagged as a session's, as coroutine isolation tags them."""

    async def session_task() -> None:
        assert callable(stall)
        stall()

    token = CURRENT_SESSION.set(SessionTag(job_id="J1", agent="support"))
    try:
        await asyncio.create_task(session_task())
    finally:
        CURRENT_SESSION.reset(token)
    await asyncio.sleep(0.1)  # the late heartbeat runs and reports


def _collect_for_150_ms() -> None:
    """Full collections back to back for 150 ms: a stall the collector takes nearly all of,
    however fast the machine (one collection of the test's heap can take under 20 ms)."""
    began = time.perf_counter()
    while time.perf_counter() - began < 0.15:
        gc.collect()


async def test_a_garbage_collection_stall_is_not_blamed_on_the_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heap = [[i] for i in range(600_000)]  # tracked containers: a full collection walks them
    watchdog = LoopWatchdog(threshold_s=0.02)
    watchdog.start()
    try:
        with caplog.at_level(logging.WARNING, logger="openrtc.watchdog"):
            await _stall_inside_session(_collect_for_150_ms)
    finally:
        watchdog.stop()
        del heap
    # The collection's incident, wherever it is: with a 20 ms threshold a loaded machine
    # records stalls of its own, so the last incident need not be this one.
    assert any(incident.by_gc for incident in watchdog.incidents), list(watchdog.incidents)
    assert "garbage collector" in caplog.text
    assert "agent support" not in caplog.text


async def test_a_blocking_call_is_blamed_on_its_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watchdog = LoopWatchdog(threshold_s=0.02)
    watchdog.start()
    try:
        with caplog.at_level(logging.WARNING, logger="openrtc.watchdog"):
            await _stall_inside_session(lambda: time.sleep(0.15))
    finally:
        watchdog.stop()
    # Picked by session, not as the last incident: a loaded machine adds stalls of its own.
    tag = SessionTag(job_id="J1", agent="support")
    blamed = [incident for incident in watchdog.incidents if incident.session == tag]
    assert len(blamed) == 1, list(watchdog.incidents)
    assert not blamed[0].by_gc
    assert blamed[0].duration_s >= 0.1  # the 150 ms sleep, less at most one 20 ms tick
    assert "by agent support (job J1)" in caplog.text


def test_stop_removes_the_collector_callback() -> None:
    async def run() -> None:
        watchdog = LoopWatchdog()
        watchdog.start()
        assert watchdog._on_gc in gc.callbacks
        watchdog.stop()
        assert watchdog._on_gc not in gc.callbacks

    asyncio.run(run())


async def test_sessions_that_block_in_turn_are_all_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watchdog = LoopWatchdog(threshold_s=0.05)
    watchdog.start()

    async def blocks() -> None:
        time.sleep(0.3)  # noqa: ASYNC251 - the bug under test

    first, second = SessionTag("J1", "alpha"), SessionTag("J2", "beta")
    try:
        with caplog.at_level(logging.WARNING, logger="openrtc.watchdog"):
            tasks = []
            for tag in (first, second):  # both ready at once: they run back to back
                token = CURRENT_SESSION.set(tag)
                tasks.append(asyncio.create_task(blocks()))
                CURRENT_SESSION.reset(token)
            await asyncio.gather(*tasks)
            await asyncio.sleep(0.1)  # the late heartbeat runs and reports
    finally:
        watchdog.stop()
    both = [i for i in watchdog.incidents if {i.session, *i.others} == {first, second}]
    assert len(both) == 1, list(watchdog.incidents)
    assert "agent alpha (job J1, ~" in caplog.text
    assert "then agent beta (job J2, ~" in caplog.text


async def test_a_loop_kept_busy_without_lag_shows_in_its_utilisation() -> None:
    watchdog = LoopWatchdog()
    watchdog.start()

    async def spin() -> None:
        while True:  # noqa: ASYNC110 - a busy task: timers fire on time, the CPU is taken
            await asyncio.sleep(0)

    try:
        assert watchdog.utilisation() == 0.0  # nothing said during start-up
        await asyncio.sleep(2.2)
        idle = watchdog.utilisation()
        spinner = asyncio.create_task(spin())
        await asyncio.sleep(1.0)
        busy = watchdog.utilisation()
        spinner.cancel()
    finally:
        watchdog.stop()
    # Relative bounds: the share is of CPU time, and a loaded machine (a CI run beside other
    # work) gives the spinning loop as little as a quarter of a core; still far above idle.
    assert idle < 0.3
    assert busy > 0.1 and busy > 3 * idle


async def test_start_up_lag_does_not_count_as_sustained_lag() -> None:
    # A worker's first second (imports, models, registering) stalls its loop; counted as
    # load it would report itself full right after it registered (a deploy's new
    # generation did, and LiveKit found no taker for 2.5 s).
    watchdog = LoopWatchdog()
    watchdog.start()
    try:
        for _ in range(5):
            time.sleep(0.15)  # noqa: ASYNC251 - the start-up stall under test
            await asyncio.sleep(0.03)
        early = watchdog.sustained_lag_s()
        await asyncio.sleep(2.5)
        time.sleep(0.4)  # noqa: ASYNC251 - a stall once running counts
        await asyncio.sleep(0.05)
        later = watchdog.sustained_lag_s()
    finally:
        watchdog.stop()
    assert early == 0.0
    assert later > 0.0


def test_a_busy_loop_makes_the_coroutine_worker_full() -> None:
    class Watchdog:
        def sustained_lag_s(self) -> float:
            return 0.0

        def utilisation(self) -> float:
            return 1.0

    class JobPool:
        watchdog = Watchdog()

    load = CoroutineLoad(50, lambda server: 1, job_pool=JobPool())  # type: ignore[arg-type]
    assert load(server=None) == 1.0  # type: ignore[arg-type]
