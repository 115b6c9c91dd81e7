"""Test tooling for OpenRTC: a loopback LiveKit agent dispatch server and scripted providers.

Names are imported on first use, so the installed plugin (``openrtc_testing.plugin``, which
only adds the ``openrtc simulate`` command) loads none of this into a production worker.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .dispatch import DEFAULT_API_KEY as DEFAULT_API_KEY
    from .dispatch import DEFAULT_API_SECRET as DEFAULT_API_SECRET
    from .dispatch import Dispatch as Dispatch
    from .dispatch import LoopbackDispatchServer as LoopbackDispatchServer
    from .dispatch import WorkerConnection as WorkerConnection
    from .providers import Rule as Rule
    from .providers import ScriptedCall as ScriptedCall
    from .providers import ScriptedLLM as ScriptedLLM
    from .providers import ScriptedSTT as ScriptedSTT
    from .providers import ScriptedTTS as ScriptedTTS
    from .providers import ScriptedVAD as ScriptedVAD
    from .providers import silence_frames as silence_frames
    from .providers import speech_frames as speech_frames

_HOMES = {
    "dispatch": "DEFAULT_API_KEY DEFAULT_API_SECRET Dispatch LoopbackDispatchServer "
    "WorkerConnection",
    "providers": "Rule ScriptedCall ScriptedLLM ScriptedSTT ScriptedTTS ScriptedVAD "
    "silence_frames speech_frames",
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names.split()}

__all__ = sorted(_HOME_OF)


def __getattr__(name: str) -> Any:
    home = _HOME_OF.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
