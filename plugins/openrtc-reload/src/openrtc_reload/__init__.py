"""openrtc-reload: edit an agent and live calls run the new code on their next turn.

Installed, it adds the ``--reload``/``--no-reload`` run option (on by default for
``openrtc dev``; ``openrtc start --reload``, ``openrtc simulate --reload``,
``pool.run(reload=True)``, ``pool.create_server(reload=True)``) and reloads with the
``watch`` strategy (``OPENRTC_RELOAD`` picks another one :func:`add_strategy` offered). See
docs/reload.md.
"""

from __future__ import annotations

from .reloader import WatchReloader
from .running import ReloadContext, Reloader, ReloaderFactory, add_strategy

__all__ = ["ReloadContext", "Reloader", "ReloaderFactory", "WatchReloader", "add_strategy"]
