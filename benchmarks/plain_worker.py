"""Variants A and B: a plain livekit-agents worker, written the way livekit's docs teach.

An ``AgentServer``, a ``setup_fnc`` prewarm that loads the VAD into ``proc.userdata``, and one
``@server.rtc_session`` entrypoint that builds its ``AgentSession`` and starts the agent. No
OpenRTC code is imported here.

No LiveKit server exists on the benchmark machine, so the entrypoint runs its call the way a
user's text-mode test does: it reads the caller script from the job metadata, starts the
session without a room, sends the caller's lines with ``session.run(user_input=...)``, stays
on for the hold time, posts a report to the dispatch server and shuts the job down.

In voice mode (``"voice": true`` in the script) the session is the one livekit's docs build
for a voice agent: STT, LLM, TTS, the prewarmed VAD and livekit's turn detector, with the
caller's microphone and earpiece as its audio input and output instead of a room. The
caller is openrtc-testing's :class:`~openrtc_testing.voice_caller.VoiceCaller`, the same
one an OpenRTC simulated voice call runs; STT and TTS are scripted, as there.

Everything livekit ships to job processes (entrypoint, prewarm) is module level: the process
executor pickles them by reference, and each job process imports this module.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

import aiohttp
from livekit.agents import (
    AgentServer,
    AgentSession,
    JobContext,
    JobExecutorType,
    JobProcess,
    inference,
)

from openrtc_testing.dispatch import REPORT_PATH
from openrtc_testing.providers import ScriptedSTT, ScriptedTTS
from openrtc_testing.voice import MeteredVAD
from openrtc_testing.voice_caller import VoiceCaller

from .workload import (
    EXECUTOR_ENV,
    IDLE_PROCESSES_ENV,
    SIMULATE_KEY,
    BenchAgent,
    make_llm,
    next_pause,
    turn_detector,
)

logger = logging.getLogger("benchmarks.plain")


def _executor_type() -> JobExecutorType:
    name = os.environ.get(EXECUTOR_ENV, "process")
    if name not in ("process", "thread"):
        raise ValueError(f"{EXECUTOR_ENV}={name!r}: use 'process' or 'thread'")
    return JobExecutorType.PROCESS if name == "process" else JobExecutorType.THREAD


server = AgentServer(
    job_executor_type=_executor_type(),
    num_idle_processes=int(os.environ.get(IDLE_PROCESSES_ENV, "0")),
    port=0,
)


def prewarm(proc: JobProcess) -> None:
    proc.userdata["vad"] = inference.VAD()


server.setup_fnc = prewarm


def _report_url() -> str:
    url = os.environ["LIVEKIT_URL"].rstrip("/")
    return url.replace("ws://", "http://", 1).replace("wss://", "https://", 1) + REPORT_PATH


async def _post_report(report: dict[str, Any]) -> None:
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(_report_url(), json=report) as resp,
    ):
        if resp.status >= 300:
            logger.warning("report for job %s refused: HTTP %s", report["job_id"], resp.status)


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    script = json.loads(ctx.job.metadata or "{}").get(SIMULATE_KEY, {})
    report: dict[str, Any] = {
        "job_id": ctx.job.id,
        "outcome": "failed",
        "error": "",
        "turns": [],
        "pid": os.getpid(),
    }
    started = time.monotonic()
    caller: VoiceCaller | None = None
    try:
        if script.get("voice"):
            session, caller = await _start_voice_session(ctx, int(script["sample_rate"]))
        else:
            session = AgentSession(
                llm=make_llm(),
                vad=ctx.proc.userdata["vad"],
                turn_handling={"turn_detection": None},
            )
            await session.start(BenchAgent())
        report["session_started_at"] = time.time()
        started = time.monotonic()
        for index, text in enumerate(script.get("turns", [])):
            await asyncio.sleep(next_pause(script))
            if caller is not None:
                report["turns"].append(await caller.turn(index, text))
                continue
            turn_started = time.monotonic()
            await session.run(user_input=text)
            report["turns"].append({"user": text, "latency_s": time.monotonic() - turn_started})
        await asyncio.sleep(float(script.get("hold_s", 0.0)))
        report["outcome"] = "completed"
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        logger.exception("call failed", extra={"job_id": ctx.job.id})
    report["duration_s"] = time.monotonic() - started
    if caller is not None:
        report["voice"] = caller.figures()
        caller.close()
    await _post_report(report)
    ctx.shutdown(reason="call done")


async def _start_voice_session(
    ctx: JobContext, sample_rate: int
) -> tuple[AgentSession[None], VoiceCaller]:
    """A voice agent's session as livekit's docs build one, the caller on its audio ends."""
    session: AgentSession[None] = AgentSession(
        stt=ScriptedSTT(name="scripted (the caller's lines)"),
        llm=make_llm(),
        tts=ScriptedTTS(name="scripted (audio of the reply's length)"),
        vad=MeteredVAD(ctx.proc.userdata["vad"]),
        turn_handling={"turn_detection": turn_detector()},
    )
    caller = VoiceCaller.attach(session, sample_rate)
    await session.start(BenchAgent(), record=False)
    return session, caller
