"""Where a live voice session's memory goes: N voice sessions in this one process, as in
variant C (one shared VAD, one turn detector), measured idle and with all N live.

    python -m benchmarks.voice_memory --calls 20
    python -m benchmarks.voice_memory --calls 20 --vad-executor shared

No worker, no dispatch, no OpenRTC: only livekit's ``AgentSession`` with the benchmark's
agent, scripted providers and the voice caller, so what it finds is the sessions' own cost.
Measured once every caller has said its first line and the agent's reply is playing (all N
sessions live, their VAD and turn-detector streams running): the PSS and threads this process added
per session, the part of it Python's allocator traced (``tracemalloc``; the rest is native:
the models' per-stream state, thread stacks, allocator arenas), and the allocation sites
that hold the most, by file and line.

``--vad-executor shared`` gives the shared VAD one thread pool (as many threads as usable
cores) for all its streams, instead of livekit's default of a new one-thread pool per
stream, two per session.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import tracemalloc
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from livekit.agents import AgentSession, inference

from openrtc_testing.measure import pss_mb
from openrtc_testing.providers import ScriptedSTT, ScriptedTTS
from openrtc_testing.voice_caller import VoiceCaller
from openrtc_testing.voice_clips import prepare

from .arguments import OneLineParser
from .workload import VOICE_CALLER_TURNS, VOICE_SAMPLE_RATE, BenchAgent, make_llm, turn_detector

TOP_SITES = 12
LIVE_AFTER_S = 6.0
"""When the live sessions are measured: the first line (3 s of speech) said, the turn ended,
each agent's reply playing."""


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
    return pss_mb(os.getpid())


async def measure(calls: int, shared_executor: bool) -> dict[str, Any]:
    cores = len(os.sched_getaffinity(0))
    executor = ThreadPoolExecutor(max_workers=cores) if shared_executor else None
    vad = inference.VAD(executor=executor) if executor is not None else inference.VAD()
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
    await asyncio.sleep(LIVE_AFTER_S)  # every caller has spoken; the replies are playing
    live_pss, live_threads = _settled_pss(), threading.active_count()
    after = tracemalloc.take_snapshot()
    for turn in turns:
        turn.cancel()
    await asyncio.gather(*turns, return_exceptions=True)
    traced = sum(s.size_diff for s in after.compare_to(before, "filename"))
    sites = after.compare_to(before, "lineno")[:TOP_SITES]
    tracemalloc.stop()
    for session, caller in started:
        caller.close()
        await session.aclose()
    if executor is not None:
        executor.shutdown(wait=False)
    return {
        "calls": calls,
        "vad_executor": "shared" if shared_executor else "per stream (livekit's default)",
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
        default="per-stream",
        help="per-stream: livekit's default, a one-thread pool per VAD stream; shared: one "
        "pool of as many threads as usable cores for every stream",
    )
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error("argument --calls: use a whole number of at least 1")
    prepare(VOICE_CALLER_TURNS, sample_rate=VOICE_SAMPLE_RATE)
    found = asyncio.run(measure(args.calls, args.vad_executor == "shared"))
    print(render(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
