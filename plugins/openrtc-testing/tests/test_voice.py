"""Voice-mode simulated calls through a real worker and the loopback server: espeak-ng
speech into the pool's real VAD and livekit's local turn detector, the reply's audio played
out in real time."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import Agent, vad

from openrtc_core import AgentPool
from openrtc_testing import LoopbackDispatchServer, Rule, ScriptedLLM
from openrtc_testing.worker import (
    dispatch_until_accepted,
    running_worker,
    simulated_call_metadata,
)

pytestmark = pytest.mark.usefixtures("espeak_ng")
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "pool.py"

BOOKING = "Hi, I'd like to book a table for two tomorrow evening."
TIME = "Seven o'clock would be perfect, thank you."
LONG_REPLY = (
    "Certainly. We have tables at six, at seven and at half past eight, on the terrace or "
    "inside by the window, and I can also note any allergies or a special occasion for you."
)


class Desk(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Take bookings.")


class BrokenVAD(vad.VAD):
    """A VAD whose stream fails at once: the session using it fails, and only it."""

    def __init__(self) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=0.032))

    def stream(self) -> vad.VADStream:
        raise RuntimeError("the VAD model crashed")


def voice_pool() -> AgentPool:
    pool = AgentPool(
        llm=ScriptedLLM(
            name="desk-llm",
            rules=[
                Rule(when="book", reply=LONG_REPLY),
                Rule(when="seven", reply="Done, see you at seven."),
            ],
            default_reply="Sorry?",
        ),
    )
    pool.add("desk", Desk, default=True)
    pool.add("fragile", Desk, vad=BrokenVAD())
    return pool


@pytest.fixture
async def lk() -> AsyncIterator[LoopbackDispatchServer]:
    async with LoopbackDispatchServer() as server, running_worker(voice_pool(), server):
        yield server


async def call(lk: LoopbackDispatchServer, room: str, **script: Any) -> dict[str, Any]:
    d = await dispatch_until_accepted(
        lk, room, job_metadata=simulated_call_metadata(voice=True, **script)
    )
    assert d.accepted, d.error
    return await lk.wait_for_report(d.job_id, timeout=120)


@pytest.mark.asyncio
async def test_a_voice_call_is_heard_turned_and_answered(lk: LoopbackDispatchServer) -> None:
    report = await call(lk, "voice-1", turns=[BOOKING, TIME])
    assert report["outcome"] == "completed", report
    first, second = report["turns"]
    assert first["heard"] == BOOKING and first["reply"] == LONG_REPLY
    assert second["reply"] == "Done, see you at seven."
    for turn in report["turns"]:
        # From the end of the caller's speech to the agent's first audio: the turn detector
        # waited for the end of the turn, the reply was generated and synthesised.
        assert 0.05 < turn["heard_latency_s"] < 10, turn
        assert turn["end_of_turn_delay_s"] is not None
        assert turn["reply_audio_s"] > 0.5 and not turn["interrupted"]
    voice = report["voice"]
    assert voice["vad_inference_s"] > 0 and voice["vad_inferences"] > 50
    assert voice["frames_sent"] > 100 and voice["frames_dropped"] == 0
    assert report["providers"]["vad"] == "MeteredVAD" or report["providers"]["vad"]


@pytest.mark.asyncio
async def test_a_caller_barging_in_stops_the_agent(lk: LoopbackDispatchServer) -> None:
    report = await call(lk, "voice-barge", turns=[BOOKING, TIME], barge_in=[1])
    assert report["outcome"] == "completed", report
    cut, answer = report["turns"]
    assert cut["interrupted"] is True
    assert answer["barged_in"] is True and answer["interrupted_reply"] is True
    assert answer["reply"] == "Done, see you at seven."
    assert report["voice"]["barge_ins"] == report["voice"]["barge_ins_handled"] == 1


@pytest.mark.asyncio
async def test_every_call_runs_its_vad_on_the_shared_vads_threads(
    lk: LoopbackDispatchServer,
) -> None:
    seen: set[str] = set()

    async def watch_threads() -> None:
        while True:
            seen.update(thread.name for thread in threading.enumerate())
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch_threads())
    try:
        reports = await asyncio.gather(*(call(lk, f"voice-{i}", turns=[TIME]) for i in range(3)))
    finally:
        watcher.cancel()
    assert all(report["outcome"] == "completed" for report in reports), reports
    shared = {name for name in seen if name.startswith("openrtc.vad")}
    # Three calls, each with a VAD stream for turn-taking and one for the STT adapter: six
    # streams on at most as many threads as cores, and no stream's own one-thread pool.
    assert 1 <= len(shared) <= len(os.sched_getaffinity(0)), seen
    assert not {name for name in seen if name.startswith("inference.vad")}, seen


@pytest.mark.asyncio
async def test_a_session_whose_vad_fails_fails_alone(lk: LoopbackDispatchServer) -> None:
    steady, fragile = await asyncio.gather(
        call(lk, "voice-steady", turns=[TIME]),
        call(lk, "voice-fragile", agent="fragile", turns=[TIME]),
    )
    assert steady["outcome"] == "completed", steady
    assert fragile["outcome"] == "failed"
    assert "VAD" in fragile["error"] or fragile["error"], fragile


def test_openrtc_simulate_voice_reports_what_callers_hear(tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "openrtc_core",
            "simulate",
            str(EXAMPLE),
            "--voice",
            "--calls",
            "2",
            "--turns",
            "2",
            "--barge-in",
            "--json",
            str(figures),
        ],
        env={**os.environ, "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "voice: what the caller hears" in done.stdout
    result = json.loads(figures.read_text())
    assert result["failures"] == 0
    for agent in result["voice"].values():
        assert agent["heard_latency_p50_s"] > 0 and agent["frames_dropped"] == 0
        assert agent["barge_ins"] == agent["barge_ins_handled"] == agent["calls"]
    for call in result["calls"]:
        assert call["voice"]["vad_inference_s"] > 0
        assert all("heard_latency_s" in turn for turn in call["turns"])


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--barge-in"], "--voice-rate and --barge-in go with --voice"),
        (["--voice", "--voice-rate", "22050"], "--voice-rate 22050: give one of 16000, 48000"),
        (["--voice", "--barge-in", "--turns", "1"], "--barge-in needs two caller turns"),
    ],
)
def test_voice_options_that_cannot_apply_are_refused(args: list[str], said: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "openrtc_core", "simulate", str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert said in done.stderr
