"""The ``openrtc`` command line: livekit's verbs over a pool, plus OpenRTC's own.

``openrtc dev|start|console|connect TARGET [livekit flags]`` loads the pool from TARGET and
hands the remaining arguments to livekit's own CLI, so every livekit flag (``--url``,
``--api-key``, ``--api-secret``, ``--log-level``, ...) works unchanged. Each verb's
``--help`` lists those flags as livekit's own help does, read from livekit's app.

What goes wrong before livekit runs (the target, the pool, a missing server URL) is printed
as one ``error:`` line and the command exits with status 1.

This package re-exports what the rest of the project uses: ``main`` (the console script),
``build_app``, ``run_livekit`` (``AgentPool.run()``) and the names tests and docs/gen_cli.py
read.
"""

from __future__ import annotations

from .app import build_app, main
from .credentials import missing_credentials
from .livekit_help import VerbCommand, livekit_options
from .livekit_notices import quiet_livekit_notices
from .output import print_error
from .plugin_commands import PLUGIN_COMMANDS, PluginCommand, command_names
from .verbs import LIVEKIT_VERBS, exit_status, run_livekit

__all__ = [
    "LIVEKIT_VERBS",
    "PLUGIN_COMMANDS",
    "PluginCommand",
    "VerbCommand",
    "build_app",
    "command_names",
    "exit_status",
    "livekit_options",
    "main",
    "missing_credentials",
    "print_error",
    "quiet_livekit_notices",
    "run_livekit",
]
