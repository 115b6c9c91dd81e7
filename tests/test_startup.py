"""A worker's own start-up (imports, prewarm, GC set-up) is not reported as a stall."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from openrtc_core import _livekit
from openrtc_testing import LoopbackDispatchServer

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.asyncio


async def test_openrtc_start_logs_no_event_loop_stall_of_its_own() -> None:
    async with LoopbackDispatchServer() as lk:
        env = {**os.environ, "OPENRTC_HTTP_PORT": "0"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "openrtc_core",
            "start",
            "examples/pool.py",
            *lk.worker_args(),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            worker = await lk.wait_for_worker(timeout=90)
            await asyncio.sleep(1.0)  # past start-up: the loop monitors have had their say
            proc.send_signal(signal.SIGTERM)
            await worker.wait_closed(timeout=60)
            await asyncio.wait_for(proc.wait(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            output = (await proc.stdout.read()).decode() if proc.stdout else ""
    assert proc.returncode == 0, output
    assert "coroutine isolation ready" in output, output  # the start-up did run
    assert "event loop blocked" not in output, output


async def test_the_loop_monitor_pause_restarts_it_as_it_was() -> None:
    from livekit.agents.telemetry import loop_monitor

    loop = asyncio.get_running_loop()
    loop_monitor.stop_monitoring(loop)
    loop_monitor.start_monitoring(loop, name="worker", emit_spans=False)
    try:
        with _livekit.loop_monitor_paused(loop):
            assert loop_monitor.get_monitor(loop) is None
        monitor = loop_monitor.get_monitor(loop)
        assert monitor is not None
        assert (monitor._name, monitor._emit_spans) == ("worker", False)
    finally:
        loop_monitor.stop_monitoring(loop)
