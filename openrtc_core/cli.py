"""The ``openrtc`` command line: livekit's verbs over a pool, plus OpenRTC's own.

``openrtc dev|start|console|connect TARGET [livekit flags]`` loads the pool from TARGET and
hands the remaining arguments to livekit's own CLI, so every livekit flag (``--url``,
``--api-key``, ``--api-secret``, ``--log-level``, ...) works unchanged. Each verb's
``--help`` lists those flags as livekit's own help does, read from livekit's app.

What goes wrong before livekit runs (the target, the pool, a missing server URL) is printed
as one ``error:`` line and the command exits with status 1.
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import json
import logging
import os
import pkgutil
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final

import attrs
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand

from . import _livekit
from ._version import __version__
from .errors import OpenRTCError, PluginLoadError
from .plugins import DISABLE_ENV, STRICT_ENV, PluginHost, disabled_from_env
from .pool import AgentPool
from .server import build_server
from .targets import load_pool

if TYPE_CHECKING:
    from livekit.agents import AgentServer

LIVEKIT_VERBS: dict[str, str] = {
    "dev": "Run the pool's worker in development mode (debug logs, no drain, no reload).",
    "start": "Run the pool's worker in production mode.",
    "console": "Talk to one agent of the pool in the terminal (livekit's console mode).",
    "connect": "Start one agent of the pool directly in a named room.",
    "download-files": "Download the model files the installed livekit plugins need.",
}

CONNECTING_VERBS: Final = ("dev", "start", "connect")
"""The verbs that talk to a LiveKit server, so need its URL and credentials."""


@attrs.frozen
class Credential:
    flag: str
    env: str
    server_option: str


CREDENTIALS: Final = (
    Credential("--url", "LIVEKIT_URL", "ws_url"),
    Credential("--api-key", "LIVEKIT_API_KEY", "api_key"),
    Credential("--api-secret", "LIVEKIT_API_SECRET", "api_secret"),
)
"""What livekit needs to register a worker, where it reads each (``cli/_legacy.py``: the
flag, else the environment variable; ``AgentServer`` also takes them as options), and the
checks it would otherwise fail late (``worker.py``: "ws_url is required")."""


@attrs.frozen
class PluginCommand:
    """A command an installed plugin adds, so that its absence can be explained."""

    distribution: str
    entry_point: str


PLUGIN_COMMANDS: Final = {"simulate": PluginCommand("openrtc-testing", "testing")}

RELOAD_DISTRIBUTION: Final = "openrtc-reload"
VERB_NOTES: Final = {
    "dev": (
        "openrtc dev does not reload code when files change: reloading will come with the "
        f"{RELOAD_DISTRIBUTION} plugin. livekit's --reload is not passed on."
    ),
}
"""What each verb's help says after the options."""
LIVEKIT_PANEL: Final = "livekit options (passed through)"
OTHER_TOOL: Final = re.compile(r"\blk agent\b")
"""livekit 1.8.9's deprecation notices for its Python CLI point at its Go ``lk`` tool."""

TARGET_HELP = (
    "What to run: package.module:pool, path/to/app.py[:pool], or a directory with one agent "
    "module per file."
)

err_console = Console(stderr=True)


def print_error(message: str) -> None:
    """One ``error: ...`` line on stderr, never wrapped or read as markup."""
    err_console.print(
        f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True, highlight=False
    )


def print_warning(message: str) -> None:
    err_console.print(
        f"[bold yellow]warning:[/bold yellow] {escape(message)}", soft_wrap=True, highlight=False
    )


def _fail(message: str) -> typer.Exit:
    print_error(message)
    return typer.Exit(code=1)


# -- livekit's options, shown in each verb's help ---------------------------------------------


@cache
def _livekit_command(verb: str) -> Any:
    """livekit's click command for `verb`, from its own app (bound to a throwaway server)."""
    from livekit.agents import AgentServer

    # typer vendors its own click, so the command is read duck-typed.
    group: Any = typer.main.get_command(_livekit.build_livekit_cli(AgentServer()))
    commands: dict[str, Any] = getattr(group, "commands", {})
    return commands.get(verb) or commands.get(verb.replace("-", "_"))


@cache
def livekit_options(verb: str) -> tuple[Any, ...]:
    """The options livekit's CLI takes for `verb` (click parameters), as passed through.

    ``dev --reload`` is left out: livekit 1.8.9 removed in-process reload, and ``openrtc dev``
    strips the flag (see :func:`run_livekit`).
    """
    command = _livekit_command(verb)
    if command is None:
        return ()
    options = []
    for param in command.params:
        if getattr(param, "param_type_name", "") != "option" or getattr(param, "hidden", False):
            continue
        if verb == "dev" and param.name == "reload":
            continue
        clone = copy.copy(param)
        clone.rich_help_panel = LIVEKIT_PANEL
        options.append(clone)
    return tuple(options)


class VerbCommand(TyperCommand):
    """A livekit verb: its help lists livekit's options in a panel of their own.

    They are added only while the help is written, never to what is parsed: the verb takes
    any extra arguments and hands them to livekit untouched.
    """

    verb: ClassVar[str] = ""
    _describing: bool = False

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)
        if self._describing:
            params = [*params, *livekit_options(self.verb)]
        return params

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._describing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._describing = False

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        # typer writes a required argument as {TARGET}; the usage line says TARGET.
        pieces = [
            piece[1:-1] if piece.startswith("{") and piece.endswith("}") else piece
            for piece in super().collect_usage_pieces(ctx)
        ]
        return [*pieces, "[LIVEKIT OPTIONS]..."] if livekit_options(self.verb) else pieces


# -- running livekit's CLI --------------------------------------------------------------------


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of ``--flag VALUE`` or ``--flag=VALUE`` in `args`; the last one wins."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(f"{flag}="):
            value = arg.split("=", 1)[1]
    return value


def missing_credentials(args: Sequence[str], pool: AgentPool) -> list[Credential]:
    """The credentials neither `args`, the environment nor the pool's server options give."""
    options = pool.settings.server_options
    return [
        cred
        for cred in CREDENTIALS
        if not (
            _flag_value(args, cred.flag)
            or os.environ.get(cred.env, "").strip()
            or options.get(cred.server_option)
        )
    ]


def _credentials_message(command: str, missing: Sequence[Credential]) -> str:
    envs = ", ".join(cred.env for cred in missing)
    flags = ", ".join(cred.flag for cred in missing)
    return f"{command}: no LiveKit server to connect to: set {envs} (or pass {flags})"


def _without_reload(args: list[str]) -> list[str]:
    """``dev`` args with livekit's ``--reload`` switched off, saying so if it was asked for."""
    if "--reload" in args:
        try:
            importlib.metadata.distribution(RELOAD_DISTRIBUTION)
            state = "installed"
        except importlib.metadata.PackageNotFoundError:
            state = "not installed"
        print_warning(
            "--reload has no effect: openrtc dev does not reload code when files change; "
            f"reloading comes with the {RELOAD_DISTRIBUTION} plugin ({state})"
        )
    # livekit's reload defaults to on and only prints a notice; off, it prints none.
    return [*(a for a in args if a not in ("--reload", "--no-reload")), "--no-reload"]


class _OtherToolNotice(logging.Filter):
    """Drops livekit's notices telling the user to run its ``lk`` tool instead of ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not OTHER_TOOL.search(record.getMessage())


@contextmanager
def quiet_livekit_notices(verb: str) -> Iterator[None]:
    """For the duration of a verb, livekit's deprecation notices for its Python CLI (``dev``
    logs two on ``livekit.agents``; ``console`` prints one through its console) are not shown:
    they tell the user to use another tool for what ``openrtc VERB`` does."""
    notice = _OtherToolNotice()
    lk_logger = logging.getLogger("livekit.agents")
    lk_logger.addFilter(notice)
    if verb == "console":
        # livekit prints this one through its console, not logging (cli/_legacy.py
        # _run_console); reaching that console is private API, kept in _livekit.
        hide = getattr(_livekit, "hide_console_deprecation", None)
        if callable(hide):
            hide()
    try:
        yield
    finally:
        lk_logger.removeFilter(notice)


def run_livekit(pool: AgentPool, argv: Sequence[str], *, prog_name: str | None = None) -> None:
    """Build the pool's server and run livekit's CLI on `argv`; exits like a CLI does.

    What would fail once livekit runs fails here instead, as one ``error:`` line and exit
    status 1: a pool livekit cannot serve, a verb that connects with no server URL or keys.
    ``pool.run()`` means the same thing as ``openrtc VERB TARGET``.
    """
    args = list(argv)
    verb = args[0] if args else ""
    prog = prog_name or os.path.basename(sys.argv[0]) or "openrtc"
    wants_help = "--help" in args
    try:
        if verb == "dev" and not wants_help:
            args = _without_reload(args)
        if verb in CONNECTING_VERBS and not wants_help:
            missing = missing_credentials(args[1:], pool)
            if missing:
                raise OpenRTCError(_credentials_message(f"{prog} {verb}", missing))
        server = build_server(pool)
    except OpenRTCError as exc:
        print_error(str(exc))
        raise SystemExit(1) from None
    app = _livekit.build_livekit_cli(server)
    try:
        with quiet_livekit_notices(verb):
            app(args=args, prog_name=prog)
    except SystemExit as exc:
        raise SystemExit(exit_status(server, exc.code)) from None
    raise SystemExit(exit_status(server, 0))


def exit_status(server: AgentServer, code: str | int | None) -> str | int | None:
    """livekit's exit status, unless the drain timed out and cut calls: then 1, said once.

    livekit exits 0 after a drain that timed out; an orchestrator should see that the
    worker did not finish its calls.
    """
    cut = getattr(server, "cut_calls", [])
    if cut and code in (0, None):
        print_error(f"the drain timed out and cut {len(cut)} call(s); exit status 1")
        return 1
    return code


def _load(target: str, *, entry_points: bool) -> AgentPool:
    try:
        return load_pool(target, entry_points=entry_points)
    except OpenRTCError as exc:
        raise _fail(str(exc)) from None


def _make_verb(app: typer.Typer, verb: str, summary: str) -> None:
    def command(
        ctx: typer.Context,
        target: Annotated[
            str, typer.Argument(help=TARGET_HELP, show_default=False, metavar="TARGET")
        ],
        entry_points: Annotated[
            bool,
            typer.Option(
                "--entry-points",
                help="Also register agents that installed packages expose (openrtc.agents).",
            ),
        ] = False,
    ) -> None:
        pool = _load(target, entry_points=entry_points)
        run_livekit(pool, [verb, *ctx.args], prog_name="openrtc")

    command.__doc__ = summary
    app.command(
        verb,
        cls=type(f"{verb.title()}Command", (VerbCommand,), {"verb": verb}),
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        epilog=VERB_NOTES.get(verb),
    )(command)


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


# -- OpenRTC's own commands -------------------------------------------------------------------


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
    Console().print(table)


def versions() -> str:
    from livekit.agents import __version__ as lk_version

    return f"openrtc-core {__version__}, livekit-agents {lk_version}"


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


def build_app() -> typer.Typer:
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
            _make_verb(app, verb, summary)

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


def _global_options(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """The options before the command (openrtc's own), and the command's name."""
    args: list[str] = []
    for arg in argv:
        if not arg.startswith("-") and not (args and args[-1] == "--disable-plugins"):
            return args, arg
        args.append(arg)
    return args, None


def _pre_scan(argv: Sequence[str]) -> None:
    """Apply the plugin flags before plugins load (they add subcommands to the app itself)."""
    args, _ = _global_options(argv)
    _set_plugin_env("--strict-plugins" in args, _flag_value(args, "--disable-plugins"))


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


def main(argv: Sequence[str] | None = None) -> Any:
    args = list(sys.argv[1:] if argv is None else argv)
    _pre_scan(args)
    app = build_app()
    try:
        host = PluginHost()
        host.load_entry_points()
        host.register_commands(app)
    except PluginLoadError as exc:
        print_error(str(exc))
        return 1
    _, command = _global_options(args)
    if command in PLUGIN_COMMANDS and command not in command_names(app):
        print_error(missing_plugin_command(command, host))
        return 1
    return app(args=args, prog_name="openrtc")
