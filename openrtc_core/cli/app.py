"""The ``openrtc`` typer app, its global options, and ``main`` (the console script)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from ..discovery import DISABLE_ENV, STRICT_ENV
from ..errors import OpenRTCError
from ..plugins import PluginHost
from .argv import flag_value, global_options
from .commands import download_plugin_files, plugins_command, versions
from .output import print_error
from .plugin_commands import PLUGIN_COMMANDS, command_names, missing_plugin_command
from .verbs import LIVEKIT_VERBS, add_verb


def _print_version(value: bool) -> None:
    if value:
        typer.echo(versions())
        raise typer.Exit()


def _set_plugin_env(strict: bool, disable: str | None) -> None:
    # Environment, not globals: livekit's job processes inherit it.
    if strict:
        os.environ[STRICT_ENV] = "1"
    if disable:
        os.environ[DISABLE_ENV] = disable


def build_app(host: PluginHost | None = None) -> typer.Typer:
    """The ``openrtc`` app; its verbs' help lists the run options `host`'s plugins add."""
    declared = host.run_options() if host is not None else {}
    app = typer.Typer(
        name="openrtc",
        help="Run many LiveKit agents in one worker. Verbs mirror livekit's CLI.",
        no_args_is_help=True,
        rich_markup_mode="rich",
        add_completion=True,
    )

    @app.callback()
    def main_options(
        strict_plugins: Annotated[
            bool,
            typer.Option(
                "--strict-plugins",
                help=f"Fail when any plugin fails to load. Sets {STRICT_ENV}=1.",
            ),
        ] = False,
        disable_plugins: Annotated[
            str | None,
            typer.Option(
                "--disable-plugins",
                help=f"Comma-separated plugin names not to load. Sets {DISABLE_ENV}.",
                show_default=False,
                metavar="NAMES",
            ),
        ] = None,
        version: Annotated[
            bool,
            typer.Option(
                "--version",
                help="Print the versions of openrtc-core and livekit-agents and exit.",
                is_eager=True,
                callback=_print_version,
            ),
        ] = False,
    ) -> None:
        _set_plugin_env(strict_plugins, disable_plugins)

    for verb, summary in LIVEKIT_VERBS.items():
        if verb != "download-files":
            add_verb(app, verb, summary, declared)

    @app.command("download-files")
    def download_files() -> None:
        """Download the model files the installed livekit plugins need (no TARGET)."""
        status = download_plugin_files()
        if status:
            raise typer.Exit(code=status)

    app.command("plugins")(plugins_command)

    @app.command("version")
    def version() -> None:
        """Print the versions of openrtc-core and livekit-agents."""
        typer.echo(versions())

    return app


# -- entry point ------------------------------------------------------------------------------


def _pre_scan(argv: Sequence[str]) -> None:
    """Apply the plugin flags before plugins load (they add subcommands to the app itself)."""
    args, _ = global_options(argv)
    _set_plugin_env("--strict-plugins" in args, flag_value(args, "--disable-plugins"))


def main(argv: Sequence[str] | None = None) -> Any:
    args = list(sys.argv[1:] if argv is None else argv)
    _pre_scan(args)
    try:
        host = PluginHost()
        host.load_entry_points()
        app = build_app(host)
        host.register_commands(app)
    except OpenRTCError as exc:
        print_error(str(exc))
        return 1
    _, command = global_options(args)
    if command in PLUGIN_COMMANDS and command not in command_names(app):
        print_error(missing_plugin_command(command, host))
        return 1
    return app(args=args, prog_name="openrtc")
