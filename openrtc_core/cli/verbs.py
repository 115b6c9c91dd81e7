"""livekit's verbs over a pool: their ``openrtc`` commands, and running livekit's CLI."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Final

import typer

from .. import _livekit
from ..errors import OpenRTCError
from ..server import build_server
from ..targets import load_pool
from .credentials import CONNECTING_VERBS, credentials_message, missing_credentials
from .livekit_help import VerbCommand
from .livekit_notices import quiet_livekit_notices
from .output import fail, print_error, print_warning

if TYPE_CHECKING:
    from livekit.agents import AgentServer

    from ..pool import AgentPool

LIVEKIT_VERBS: dict[str, str] = {
    "dev": "Run the pool's worker in development mode (debug logs, no drain, no reload).",
    "start": "Run the pool's worker in production mode.",
    "console": "Talk to one agent of the pool in the terminal (livekit's console mode).",
    "connect": "Start one agent of the pool directly in a named room.",
    "download-files": "Download the model files the installed livekit plugins need.",
}

RELOAD_DISTRIBUTION: Final = "openrtc-reload"
VERB_NOTES: Final = {
    "dev": (
        "openrtc dev does not reload code when files change: reloading will come with the "
        f"{RELOAD_DISTRIBUTION} plugin. livekit's --reload is not passed on."
    ),
}
"""What each verb's help says after the options."""

TARGET_HELP = (
    "What to run: package.module:pool, path/to/app.py[:pool], or a directory with one agent "
    "module per file."
)


# -- running livekit's CLI --------------------------------------------------------------------


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
                raise OpenRTCError(credentials_message(f"{prog} {verb}", missing))
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


# -- the verbs' commands ----------------------------------------------------------------------


def _load(target: str, *, entry_points: bool) -> AgentPool:
    try:
        return load_pool(target, entry_points=entry_points)
    except OpenRTCError as exc:
        raise fail(str(exc)) from None


def add_verb(app: typer.Typer, verb: str, summary: str) -> None:
    """Add livekit's `verb` to `app`: load the pool from TARGET, pass the rest to livekit."""

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
