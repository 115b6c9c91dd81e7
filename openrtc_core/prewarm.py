"""Keys under which the built-in prewarm stores shared objects in ``JobProcess.userdata``."""

from __future__ import annotations

VAD_KEY = "openrtc.vad"
