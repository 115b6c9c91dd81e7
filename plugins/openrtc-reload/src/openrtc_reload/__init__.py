"""openrtc-reload: edit an agent and live calls run the new code on their next turn.

Installed, it offers the ``watch`` reload strategy to OpenRTC workers started with
reloading on (``openrtc dev``, ``openrtc start --reload``, ``openrtc simulate --reload``,
``pool.create_server(reload=True)``). See docs/reload.md.
"""

from __future__ import annotations

from .reloader import WatchReloader

__all__ = ["WatchReloader"]
