"""Commands installed plugins add, and why one is missing when it is asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import typer

from ..hints import HINTS, Hint

if TYPE_CHECKING:
    from ..plugins import PluginHost

PLUGIN_COMMANDS: Final = {command: hint for hint in HINTS for command in hint.commands}
"""The commands our plugins add, each with the hint that explains its absence."""
PluginCommand = Hint


def command_names(app: typer.Typer) -> set[str]:
    names = {info.name or "" for info in app.registered_commands}
    names |= {
        (info.callback.__name__.replace("_", "-") if info.callback else "")
        for info in app.registered_commands
        if not info.name
    }
    return names | {info.name or "" for info in app.registered_groups}


def missing_plugin_command(command: str, host: PluginHost) -> str:
    """Why `command`, which one of our plugins would add, is not there."""
    return host.why_missing(repr(command), PLUGIN_COMMANDS[command])
