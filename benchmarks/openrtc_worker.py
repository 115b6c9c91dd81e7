"""Variants C and D: the same agent and LLM in an OpenRTC pool.

The pool is built at module level because the process backend (D) rebuilds it in each job
process by importing this module. Its VAD comes from the pool's default prewarm (the shared
``inference.VAD()``), which the session factory hands to every session.

For voice calls (``OPENRTC_BENCH_VOICE=1``) the pool's turn handling is livekit's turn
detector instead of none; the simulation plugin adds the scripted STT and TTS to voice calls.
"""

from __future__ import annotations

import os

from openrtc_core import AgentPool

from .workload import (
    IDLE_PROCESSES_ENV,
    ISOLATION_ENV,
    MAX_SESSIONS_ENV,
    VOICE_ENV,
    BenchAgent,
    make_llm,
    turn_detector,
)


def _number(env: str) -> int | None:
    raw = os.environ.get(env, "").strip()
    return int(raw) if raw else None


warm = _number(IDLE_PROCESSES_ENV)
pool = AgentPool(
    isolation=os.environ.get(ISOLATION_ENV, "coroutine"),
    max_sessions=_number(MAX_SESSIONS_ENV),
    server_options={} if warm is None else {"num_idle_processes": warm},
    llm=make_llm(),
    turn_handling={"turn_detection": turn_detector() if os.environ.get(VOICE_ENV) == "1" else None},
)
pool.add("bench", BenchAgent, default=True)
