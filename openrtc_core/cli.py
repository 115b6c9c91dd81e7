"""The ``openrtc`` command line: livekit's verbs over a pool, plus OpenRTC's own.

``openrtc dev|start|console|connect|download-files TARGET [livekit flags]`` loads the pool
from TARGET and hands the remaining arguments to livekit's own CLI, so every livekit flag
(``--url``, ``--api-key``, ``--api-secret``, ``--log-level``, ...) works unchanged.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from functools import cache
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from . import _livekit
from ._version import __version__
from .errors import OpenRTCError, PluginLoadError
from .plugins import DISABLE_ENV, STRICT_ENV, PluginHost
from .pool import AgentPool
from .server import run_pool
from .targets import load_pool

LIVEKIT_VERBS: dict[str, str] = {
    "dev": "Run the pool's worker in development mode against a LiveKit server.",
    "start": "Run the pool's worker in production mode.",
    "console": "Talk to one agent of the pool in the terminal (livekit's console mode).",
    "connect": "Start one agent of the pool directly in a named room.",
    "download-files": "Download the model files the installed livekit plugins need.",
}

TARGET_HELP = (
    "What to run: package.module:pool, path/to/app.py[:pool], or a directory with one agent "
    "module per file."
)

err_console = Console(stderr=True)


@cache
def _livekit_options(verb: str) -> list[tuple[str, str]]:
    """The options livekit's CLI takes for `verb`, read from livekit's own app."""
    from livekit.agents import AgentServer

    # typer vendors its own click in recent releases, so read the command duck-typed.
    group: Any = typer.main.get_command(_livekit.build_livekit_cli(AgentServer()))
    commands: dict[str, Any] = getattr(group, "commands", {})
    command = commands.get(verb) or commands.get(verb.replace("-", "_"))
    if command is None:
        return []
    return [
        (", ".join(param.opts), param.help or "")
        for param in command.params
        if getattr(param, "param_type_name", "") == "option" and not getattr(param, "hidden", False)
    ]


def _verb_epilog(verb: str) -> str:
    options = _livekit_options(verb)
    if not options:
        return ""
    lines = "\n\n".join(f"[bold]{opts}[/bold]  {text}" for opts, text in options)
    return f"livekit flags, passed through:\n\n{lines}"


def _set_plugin_env(strict: bool, disable: str | None) -> None:
    # Environment, not globals: livekit's job processes inherit it.
    if strict:
        os.environ[STRICT_ENV] = "1"
    if disable:
        os.environ[DISABLE_ENV] = disable


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/bold red] {message}")
    return typer.Exit(code=1)


def _load(target: str, *, entry_points: bool) -> AgentPool:
    try:
        return load_pool(target, entry_points=entry_points)
    except OpenRTCError as exc:
        raise _fail(str(exc)) from None


def _make_verb(app: typer.Typer, verb: str, summary: str) -> None:
    def command(
        ctx: typer.Context,
        target: Annotated[str, typer.Argument(help=TARGET_HELP, show_default=False)],
        entry_points: Annotated[
            bool,
            typer.Option(
                "--entry-points",
                help="Also register agents that installed packages expose (openrtc.agents).",
            ),
        ] = False,
    ) -> None:
        pool = _load(target, entry_points=entry_points)
        run_pool(pool, [verb, *ctx.args], prog_name="openrtc")

    command.__doc__ = summary
    app.command(
        verb,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        epilog=_verb_epilog(verb),
    )(command)


def plugins_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """List plugins: loaded ones with their hooks, and the ones that failed or were disabled."""
    try:
        host = PluginHost()
        host.load_entry_points()
    except PluginLoadError as exc:
        raise _fail(str(exc)) from None
    records = host.records
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in records], indent=2))
        return
    table = Table(title="openrtc plugins")
    for column in ("name", "status", "distribution", "version", "hooks / error"):
        table.add_column(column)
    for r in records:
        detail = r.error if r.status == "failed" else ", ".join(r.hooks)
        style = {"failed": "red", "disabled": "yellow"}.get(r.status, "")
        table.add_row(r.name, r.status, r.distribution or r.source, r.version, detail, style=style)
    Console().print(table)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="openrtc",
        help="Run many LiveKit agents in one worker. Verbs mirror livekit's CLI.",
        no_args_is_help=True,
        rich_markup_mode="rich",
        add_completion=False,
    )

    @app.callback()
    def main_options(
        strict_plugins: Annotated[
            bool, typer.Option("--strict-plugins", help="Fail when any plugin fails to load.")
        ] = False,
        disable_plugins: Annotated[
            str | None,
            typer.Option(
                "--disable-plugins",
                help="Comma-separated plugin names not to load.",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        _set_plugin_env(strict_plugins, disable_plugins)

    for verb, summary in LIVEKIT_VERBS.items():
        if verb != "download-files":
            _make_verb(app, verb, summary)

    @app.command("download-files")
    def download_files() -> None:
        """Download the model files the installed livekit plugins need (no pool required)."""
        from livekit.agents import AgentServer

        # livekit's command only walks its registered plugins; any server will do.
        _livekit.build_livekit_cli(AgentServer())(
            args=["download-files"], prog_name="openrtc download-files"
        )

    app.command("plugins")(plugins_command)

    @app.command("version")
    def version() -> None:
        """Print the versions of openrtc-core and livekit-agents."""
        from livekit.agents import __version__ as lk_version

        typer.echo(f"openrtc-core {__version__}, livekit-agents {lk_version}")

    return app


def _pre_scan(argv: Sequence[str]) -> None:
    """Apply the plugin flags before plugins load (they add subcommands to the app itself)."""
    # Only the options before the command are openrtc's own; the rest belong to the command.
    args: list[str] = []
    for arg in argv:
        if not arg.startswith("-") and not (args and args[-1] == "--disable-plugins"):
            break
        args.append(arg)
    strict = "--strict-plugins" in args
    disable = None
    for i, arg in enumerate(args):
        if arg == "--disable-plugins" and i + 1 < len(args):
            disable = args[i + 1]
        elif arg.startswith("--disable-plugins="):
            disable = arg.split("=", 1)[1]
    _set_plugin_env(strict, disable)


def main(argv: Sequence[str] | None = None) -> Any:
    args = list(sys.argv[1:] if argv is None else argv)
    _pre_scan(args)
    app = build_app()
    try:
        host = PluginHost()
        host.load_entry_points()
        host.register_commands(app)
    except PluginLoadError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}")
        return 1
    return app(args=args, prog_name="openrtc")
