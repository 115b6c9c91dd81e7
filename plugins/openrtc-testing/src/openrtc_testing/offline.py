"""Swapping providers that need a network or keys for scripted ones, in simulated calls only.

A pool written for production names real providers (``llm="openai/gpt-4.1-mini"``,
``inference.STT(...)``, plugin objects). ``openrtc simulate`` must run it on a machine with no
keys and no network, so for a simulated job (one carrying a caller script, run only by a
worker given the Simulation plugin) those are replaced by scripted providers. Local ones (VAD, turn
detector) and scripted ones are kept.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .providers import ScriptedLLM, ScriptedSTT, ScriptedTTS

REAL_PROVIDERS_ENV = "OPENRTC_SIMULATE_REAL_PROVIDERS"
"""Set to 1 to keep the pool's own providers in simulated calls (needs their keys)."""

SWAPPABLE = ("llm", "stt", "tts")
_SCRIPTED = (ScriptedLLM, ScriptedSTT, ScriptedTTS)


def describe(value: object) -> str:
    if isinstance(value, str):
        return value
    model = getattr(value, "model", None)
    name = type(value).__name__
    return f"{name}({model})" if isinstance(model, str) and model else name


def needs_network(value: object) -> bool:
    """Whether a provider value reaches a remote service (strings and provider objects do)."""
    return value is not None and not isinstance(value, _SCRIPTED)


def unreachable(options: Mapping[str, Any]) -> dict[str, str]:
    """The provider keys in `options` a simulation replaces, with what they were."""
    if os.environ.get(REAL_PROVIDERS_ENV, "").strip() in {"1", "true", "yes"}:
        return {}
    return {
        k: describe(options[k]) for k in SWAPPABLE if k in options and needs_network(options[k])
    }


def scripted_provider(key: str, was: str) -> Any:
    if key == "llm":
        return ScriptedLLM(
            name=f"scripted (for {was})",
            default_reply="Sure, I can help with that. You said: {user}",
            token_delay_s=0.0,
        )
    if key == "stt":
        return ScriptedSTT(name=f"scripted (for {was})")
    return ScriptedTTS(name=f"scripted (for {was})")


def replacements(options: Mapping[str, Any]) -> dict[str, Any]:
    return {key: scripted_provider(key, was) for key, was in unreachable(options).items()}
