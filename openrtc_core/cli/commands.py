"""OpenRTC's own commands: ``plugins``, ``version`` and ``download-files``."""

from __future__ import annotations

import importlib
import json
import logging
import pkgutil
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._version import __version__
from ..errors import OpenRTCError
from ..identity import worker_identity
from ..plugins import PluginHost
from ..runoptions import resolve
from .output import fail, print_error, print_warning


def download_plugin_files() -> int:
    """Import every installed ``livekit.plugins.*`` package and run its ``download_files``.

    Returns the exit status: 1 when a plugin's download failed.
    """
    from livekit.agents import Plugin

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        namespace = importlib.import_module("livekit.plugins")
    except ImportError:
        typer.echo("no livekit plugins are installed (livekit-plugins-*): nothing to download")
        return 0
    for _, name, is_package in pkgutil.iter_modules(namespace.__path__, "livekit.plugins."):
        if not is_package:
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:
            print_warning(f"skipping {name}: {type(exc).__name__}: {exc}")
    status = 0
    for plugin in Plugin.registered_plugins:
        typer.echo(f"downloading files for {plugin.package}")
        try:
            plugin.download_files()
        except Exception as exc:
            print_error(f"downloading files for {plugin.package}: {type(exc).__name__}: {exc}")
            status = 1
    return status


def plugins_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """List plugins: loaded ones with their hooks, and the ones that failed or were disabled."""
    try:
        host = PluginHost()
        host.load_entry_points()
        said = workers_line(host)
    except OpenRTCError as exc:
        raise fail(str(exc)) from None
    records = host.records
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in records], indent=2))
        return
    # Hooks (or the error) go under the plugin's name, not in a column of their own: five
    # columns cannot fit 80 characters without cutting the names.
    table = Table(title="openrtc plugins", caption="under each plugin: its hooks, or its error")
    table.add_column("plugin", overflow="fold")
    for column in ("status", "distribution", "version"):
        table.add_column(column, no_wrap=True)
    for r in records:
        details = [r.error] if r.status == "failed" else list(r.hooks)
        name = Text(r.name, style="bold")
        for detail in details:
            name.append(f"\n  {detail}", style="dim")
        style = {"failed": "red", "disabled": "yellow"}.get(r.status, "")
        table.add_row(name, r.status, r.distribution or r.source, r.version, style=style)
    console = Console()
    console.print(table)
    console.print(said, highlight=False)


def workers_line(host: PluginHost) -> str:
    """How ``start`` runs here (a plugin that would take it over says, else one worker);
    inside a supervised worker, which one this process is."""
    identity = worker_identity()
    if identity is not None:
        return f"this process is {identity} of a supervisor"
    said = host.describe_run("start", resolve(host.run_options(), "start"))
    return said or "start runs one worker process"


def versions() -> str:
    from livekit.agents import __version__ as lk_version

    return f"openrtc-core {__version__}, livekit-agents {lk_version}"
