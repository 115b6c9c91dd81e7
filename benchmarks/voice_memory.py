"""Where a live voice session's memory goes: N voice sessions in this one process, as in
variant C (one shared VAD, one turn detector), measured idle and with all N live.

    python -m benchmarks.voice_memory --calls 20
    python -m benchmarks.voice_memory --calls 20 --vad-executor per-stream

No worker, no dispatch, no pool: only livekit's ``AgentSession`` with the benchmark's
agent, scripted providers and the voice caller, so what it finds is the sessions' own cost.
Measured once every caller's first turn is done (the line said, the turn ended, the reply
played out) with all N sessions still live: the state a live call sits in between lines, its
VAD and turn-detector streams running and the STT adapter's stream flushed once. It reports
the PSS and threads this process added per session, the part of it Python's allocator traced
(``tracemalloc``; the rest is native: the models' per-stream state, thread stacks, allocator
arenas), and the allocation sites that hold the most, by file and line.

The VAD is OpenRTC's shared VAD (``shared_vad()``): its streams' inference on one thread
pool of as many threads as usable cores. ``--vad-executor per-stream`` gives it livekit's
default instead, a new one-thread pool per stream (two per session here: the turn-taking stream and
the one that segments speech for the non-streaming STT).

Then it measures what one flush of a VAD stream costs, alone: livekit's VAD keeps each
stream's speech in a buffer sized for ``max_buffered_speech`` (60 s), allocated untouched,
and zeroes all of it when the stream is flushed (``inference/vad.py``, ``_reset_state``),
which makes every page of it resident. The STT adapter flushes its stream at each end of
turn, so that is a whole buffer per session from the first turn on.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import sys
import threading
import tracemalloc
from collections.abc import Sequence
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import AgentSession, inference

from openrtc_core import pss_mib
from openrtc_core.builtin.prewarm import shared_vad
from openrtc_testing.providers import ScriptedSTT, ScriptedTTS
from openrtc_testing.voice_caller import VoiceCaller
from openrtc_testing.voice_clips import prepare

from .arguments import OneLineParser
from .workload import VOICE_CALLER_TURNS, VOICE_SAMPLE_RATE, BenchAgent, make_llm, turn_detector

TOP_SITES = 12
FLUSHED_STREAMS = 20
FIRST_TURN_TIMEOUT_S = 60.0
"""How long every session's first turn may take before the measurement gives up."""


async def _session(vad: Any, detector: Any) -> tuple[AgentSession[None], VoiceCaller]:
    session: AgentSession[None] = AgentSession(
        stt=ScriptedSTT(name="stt"),
        llm=make_llm(),
        tts=ScriptedTTS(name="tts"),
        vad=vad,
        turn_handling={"turn_detection": detector},
    )
    caller = VoiceCaller.attach(session, VOICE_SAMPLE_RATE)
    await session.start(BenchAgent(), record=False)
    return session, caller


def _settled_pss() -> float:
    gc.collect()
    return pss_mib(os.getpid()) or 0.0


async def measure(calls: int, shared_executor: bool) -> dict[str, Any]:
    vad = shared_vad() if shared_executor else inference.VAD()
    detector = turn_detector()
    # A warm-up session: models loaded, modules imported, first-use caches filled.
    session, caller = await _session(vad, detector)
    await caller.turn(0, VOICE_CALLER_TURNS[0])
    caller.close()
    await session.aclose()
    await asyncio.sleep(1.0)
    idle_pss, idle_threads = _settled_pss(), threading.active_count()
    tracemalloc.start(1)  # one frame: deeper tracebacks slow 20 sessions past real time
    before = tracemalloc.take_snapshot()
    started = [await _session(vad, detector) for _ in range(calls)]
    turns = [asyncio.create_task(c.turn(0, VOICE_CALLER_TURNS[0])) for _, c in started]
    await asyncio.wait_for(asyncio.gather(*turns), FIRST_TURN_TIMEOUT_S)
    live_pss, live_threads = _settled_pss(), threading.active_count()
    after = tracemalloc.take_snapshot()
    traced = sum(s.size_diff for s in after.compare_to(before, "filename"))
    sites = after.compare_to(before, "lineno")[:TOP_SITES]
    tracemalloc.stop()
    for session, caller in started:
        caller.close()
        await session.aclose()
    return {
        "calls": calls,
        "vad_executor": (
            "shared (as OpenRTC's shared VAD)"
            if shared_executor
            else "per stream (livekit's default)"
        ),
        "idle_pss_mb": idle_pss,
        "live_pss_mb": live_pss,
        "pss_per_session_mb": (live_pss - idle_pss) / calls,
        "traced_per_session_mb": traced / calls / 2**20,
        "threads_per_session": (live_threads - idle_threads) / calls,
        "sites": [
            {
                "where": f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno}",
                "per_session_kib": s.size_diff / calls / 1024,
                "blocks_per_session": s.count_diff / calls,
            }
            for s in sites
        ],
    }


async def flush_cost(streams: int = FLUSHED_STREAMS) -> dict[str, Any]:
    """PSS one flush adds to a VAD stream that has heard 0.2 s of silence, per stream."""
    vad = inference.VAD()
    silence = rtc.AudioFrame(
        data=np.zeros(VOICE_SAMPLE_RATE // 50, dtype=np.int16).tobytes(),
        sample_rate=VOICE_SAMPLE_RATE,
        num_channels=1,
        samples_per_channel=VOICE_SAMPLE_RATE // 50,
    )
    opened = [vad.stream() for _ in range(streams)]
    for stream in opened:
        for _ in range(10):
            stream.push_frame(silence)
    await asyncio.sleep(1.0)  # every stream has allocated its buffer and run its windows
    before = _settled_pss()
    for stream in opened:
        stream.flush()
        stream.push_frame(silence)  # the flush is applied when the next frame is read
    await asyncio.sleep(1.0)
    after = _settled_pss()
    for stream in opened:
        await stream.aclose()
    buffered_s = float(inspect.signature(inference.VAD).parameters["max_buffered_speech"].default)
    return {
        "streams": streams,
        "max_buffered_speech_s": buffered_s,
        "sample_rate": VOICE_SAMPLE_RATE,
        "buffer_mb": buffered_s * VOICE_SAMPLE_RATE * 2 / 2**20,
        "pss_per_flushed_stream_mb": (after - before) / streams,
    }


def _short(path: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def render(found: dict[str, Any]) -> str:
    lines = [
        f"{found['calls']} live voice sessions in one process, VAD executor: "
        f"{found['vad_executor']}",
        f"  PSS {found['idle_pss_mb']:.1f} MiB idle, {found['live_pss_mb']:.1f} MiB live: "
        f"{found['pss_per_session_mb']:.2f} MiB per session, of which Python-traced "
        f"{found['traced_per_session_mb']:.2f} MiB; {found['threads_per_session']:.1f} "
        "threads per session",
        "  largest Python allocation sites added, per session:",
    ]
    lines += [
        f"    {site['per_session_kib']:8.1f} KiB {site['blocks_per_session']:7.1f} blocks  "
        f"{site['where']}"
        for site in found["sites"]
    ]
    flushed = found["flush"]
    lines.append(
        f"one flush of a VAD stream ({flushed['max_buffered_speech_s']:g} s speech buffer at "
        f"{flushed['sample_rate']} Hz, {flushed['buffer_mb']:.2f} MiB): "
        f"{flushed['pss_per_flushed_stream_mb']:.2f} MiB PSS added per stream "
        f"({flushed['streams']} streams)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m benchmarks.voice_memory",
        description="Where a live voice session's memory goes (see the module's docstring).",
    )
    parser.add_argument("--calls", type=int, default=20, help="live sessions (20)")
    parser.add_argument(
        "--vad-executor",
        choices=("per-stream", "shared"),
        default="shared",
        help="shared: one pool of as many threads as usable cores for every stream, as "
        "OpenRTC's shared VAD runs them (the default); per-stream: livekit's default, a "
        "one-thread pool per VAD stream",
    )
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error("argument --calls: use a whole number of at least 1")
    prepare(VOICE_CALLER_TURNS, sample_rate=VOICE_SAMPLE_RATE)
    flushed = asyncio.run(flush_cost())  # first: no freed buffer for the allocator to reuse
    found = {**asyncio.run(measure(args.calls, args.vad_executor == "shared")), "flush": flushed}
    print(render(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
