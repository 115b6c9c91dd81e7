"""Test tooling for OpenRTC: a loopback LiveKit agent dispatch server and scripted providers."""

from .dispatch import (
    DEFAULT_API_KEY,
    DEFAULT_API_SECRET,
    Dispatch,
    LoopbackDispatchServer,
    WorkerConnection,
)
from .providers import (
    Rule,
    ScriptedCall,
    ScriptedLLM,
    ScriptedSTT,
    ScriptedTTS,
    ScriptedVAD,
    silence_frames,
    speech_frames,
)

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "Dispatch",
    "LoopbackDispatchServer",
    "Rule",
    "ScriptedCall",
    "ScriptedLLM",
    "ScriptedSTT",
    "ScriptedTTS",
    "ScriptedVAD",
    "WorkerConnection",
    "silence_frames",
    "speech_frames",
]
