"""Commands installed plugins add, and why one is missing when it is asked for."""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Final

import attrs
import typer

from ..discovery import DISABLE_ENV, disabled_from_env

if TYPE_CHECKING:
    from ..plugins import PluginHost


@attrs.frozen
class PluginCommand:
    """A command an installed plugin adds, so that its absence can be explained."""

    distribution: str
    entry_point: str


PLUGIN_COMMANDS: Final = {"simulate": PluginCommand("openrtc-testing", "testing")}


def command_names(app: typer.Typer) -> set[str]:
    names = {info.name or "" for info in app.registered_commands}
    names |= {
        (info.callback.__name__.replace("_", "-") if info.callback else "")
        for info in app.registered_commands
        if not info.name
    }
    return names | {info.name or "" for info in app.registered_groups}


def missing_plugin_command(command: str, host: PluginHost) -> str:
    """Why `command`, which an installed plugin would add, is not there."""
    known = PLUGIN_COMMANDS[command]
    provided = f"{command!r} is provided by {known.distribution}"
    try:
        importlib.metadata.distribution(known.distribution)
    except importlib.metadata.PackageNotFoundError:
        return f"{provided} (pip install {known.distribution}), which is not installed"
    if known.entry_point in disabled_from_env():
        return (
            f"{provided} (plugin {known.entry_point!r}), which is disabled by {DISABLE_ENV} "
            "or --disable-plugins"
        )
    failed = [r for r in host.records if r.name == known.entry_point and r.status == "failed"]
    if failed:
        return f"{provided}, whose plugin {known.entry_point!r} failed to load: {failed[0].error}"
    return f"{provided}, whose plugin {known.entry_point!r} did not add it"
