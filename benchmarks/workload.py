"""The simulated workload every variant runs: one agent class, one LLM script, one caller.

Nothing here imports openrtc_core, so the plain livekit workers that use it carry none of
OpenRTC's code or memory.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any, Final

from livekit.agents import Agent

from openrtc_testing.providers import ScriptedLLM

SIMULATE_KEY: Final = "openrtc.simulate"
"""The job-metadata key of the caller script (the same format OpenRTC's simulation reads)."""

REPLY: Final = (
    "I can help with that. Your order ships tomorrow and should arrive within three days."
)
"""What the agent says to every caller line: 15 words, streamed one word at a time."""

FIRST_TOKEN_DELAY_S: Final = 0.15
TOKEN_DELAY_S: Final = 0.02

HUMAN_PAUSE_S: Final = (4.0, 10.0)
"""Seconds a paced caller waits before each line, drawn uniformly: a person on the phone.

The reply above takes about 6 s to speak at 150 words a minute; the caller listens to it,
thinks, and says a line of 8 words or so (2 to 3 s) before the turn reaches the LLM. Lines
therefore reach the agent some 4 to 10 s apart (mean 7 s), and the calls' turns drift apart
instead of arriving in lockstep. The first line gets the same wait (the caller hears the
line connect and starts talking).
"""
BURST_PAUSE_S: Final = (0.0, 0.0)
"""The stress pace: each line the moment the previous reply is done, every call in lockstep."""
PACES: Final = {"human": HUMAN_PAUSE_S, "burst": BURST_PAUSE_S}

VOICE_HUMAN_PAUSE_S: Final = (0.5, 2.0)
"""A voice caller's pause before each line: only the thinking. Listening to the reply and
speaking the line take their real time in voice mode, so what HUMAN_PAUSE_S adds for them
is not added here."""
VOICE_PACES: Final = {"human": VOICE_HUMAN_PAUSE_S, "burst": BURST_PAUSE_S}
VOICE_SAMPLE_RATE: Final = 16000
"""The caller's line in voice mode: 16 kHz, a phone-quality line."""

CALLER_TURNS: Final = (
    "Hi, I need some help with my order.",
    "Can you tell me where order 42 is?",
    "Thanks, that is all. Goodbye.",
)

VOICE_CALLER_TURNS: Final = (
    "Please tell me where order forty two is, thanks.",
    "That is great, thanks for your help.",
    "Okay, thank you very much.",
)
"""What a voice-mode caller says: lines livekit's turn detector ends a turn on.

The detector is unsure about much of espeak-ng's speech and then waits out the endpointing
delay (2.5 s), which would swamp what the worker's load does to the latency. Each of these
ended its turn at the 0.3-s minimum in repeated runs on one session, with no pause inside a
line long enough for the VAD to end the speech early (a caller's "Thanks, that is all.
Goodbye." did: the agent began to answer, was paused by "Goodbye", and resumed only after
livekit's 2-s false-interruption timeout). Turns waited out anyway are counted.
"""

# How the worker subprocess is configured. Environment variables, because livekit's job
# processes inherit the environment and rebuild the worker modules by importing them.
EXECUTOR_ENV: Final = "OPENRTC_BENCH_EXECUTOR"
"""Plain workers: ``process`` or ``thread`` (livekit's job executor type)."""
IDLE_PROCESSES_ENV: Final = "OPENRTC_BENCH_IDLE_PROCESSES"
"""Warm job processes (or threads) kept ready, livekit's num_idle_processes (A, B and D)."""
ISOLATION_ENV: Final = "OPENRTC_BENCH_ISOLATION"
"""OpenRTC workers: the pool's isolation backend (``coroutine`` or ``process``)."""
MAX_SESSIONS_ENV: Final = "OPENRTC_BENCH_MAX_SESSIONS"
"""OpenRTC workers: the pool's max_sessions."""
VOICE_ENV: Final = "OPENRTC_BENCH_VOICE"
"""OpenRTC workers: ``1`` configures the pool for voice calls (livekit's turn detector)."""


class BenchAgent(Agent):
    """The agent every variant runs; an ordinary livekit Agent subclass."""

    def __init__(self) -> None:
        super().__init__(
            instructions="You are a support agent for an online shop. Answer in one sentence."
        )


def make_llm() -> ScriptedLLM:
    """The scripted LLM with realistic timing: 150 ms to the first token, 20 ms per word."""
    return ScriptedLLM(
        name="bench-llm",
        default_reply=REPLY,
        first_token_delay_s=FIRST_TOKEN_DELAY_S,
        token_delay_s=TOKEN_DELAY_S,
        chunk_words=1,
    )


def turn_detector() -> Any:
    """livekit's local end-of-turn model, as every variant's voice sessions use it.

    The version is named: livekit would pick its cloud model in dev mode
    (``LIVEKIT_DEV_MODE=1``), which cannot run here, and the variants must not differ.
    """
    from livekit.agents import inference

    return inference.TurnDetector(version="v1-mini")


def call_metadata(
    *,
    turns: tuple[str, ...] | None = None,
    hold_s: float,
    pause_s: tuple[float, float] = BURST_PAUSE_S,
    voice: bool = False,
) -> str:
    """Job metadata for one simulated call: the caller's lines, its pace, how long to stay on,
    and whether it speaks them (voice mode) or types them. The lines default to the
    mode's: CALLER_TURNS typed, VOICE_CALLER_TURNS spoken."""
    if turns is None:
        turns = VOICE_CALLER_TURNS if voice else CALLER_TURNS
    script: dict[str, Any] = {"turns": list(turns), "hold_s": hold_s, "pause_s": list(pause_s)}
    if voice:
        script.update(voice=True, sample_rate=VOICE_SAMPLE_RATE)
    return json.dumps({SIMULATE_KEY: script})


def next_pause(script: Mapping[str, Any]) -> float:
    """A plain worker's reading of ``pause_s`` (always a [low, high] pair from this module)."""
    low, high = (float(v) for v in script.get("pause_s") or BURST_PAUSE_S)
    return random.uniform(low, high)
