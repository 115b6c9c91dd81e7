"""livekit's verbs over a pool: their ``openrtc`` commands, and running livekit's CLI."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from .. import _livekit, hints, runoptions
from ..deployment import (
    VERSION_OPTION,
    announce_deploy_version,
    export_deploy_version,
    resolve_deploy_version,
)
from ..entrypoint import register_worker_plugins
from ..errors import OpenRTCError, PoolConfigError
from ..runoptions import RUN_VERBS, Declared, RunContext, RunOptions
from ..server import PoolServer, build_server, check_servable, configured_port
from ..supervision import become_worker, log_level, prewarm_before_fork, worker_port
from ..targets import load_pool
from .credentials import CONNECTING_VERBS, credentials_message, missing_credentials
from .livekit_help import VerbCommand, livekit_options
from .livekit_notices import quiet_livekit_notices
from .output import fail, print_error

if TYPE_CHECKING:
    from livekit.agents import AgentServer

    from ..pool import AgentPool

LIVEKIT_VERBS: dict[str, str] = {
    "dev": "Run the pool's worker in development mode (debug logs, no drain, code reloads).",
    "start": "Run the pool's worker in production mode.",
    "console": "Talk to one agent of the pool in the terminal (livekit's console mode).",
    "connect": "Start one agent of the pool directly in a named room.",
    "download-files": "Download the model files the installed livekit plugins need.",
}

LIVEKIT_DEV_RELOAD: Final = "--no-reload"
"""livekit's own ``dev`` reload: it defaults to on and, since livekit removed in-process
reloading, only prints a notice; off, it prints none. ``openrtc dev`` always passes this."""

TARGET_HELP = (
    "What to run: package.module:pool, path/to/app.py[:pool], or a directory with one agent "
    "module per file."
)


# -- running livekit's CLI --------------------------------------------------------------------


def take_run_options(
    pool: AgentPool, verb: str, args: list[str], run_keywords: Mapping[str, Any]
) -> tuple[RunOptions, list[str]]:
    """The run options `args` and `run_keywords` give for `verb`, resolved once (see
    :mod:`..runoptions`), and `args` without them.

    :raises PoolConfigError: an option's value cannot be used, or a flag, variable or
        keyword belongs to a plugin that is not there (said by :mod:`..hints`).
    """
    declared = pool.plugins.run_options()
    check_livekits_flags(declared, verb)
    flags, rest = runoptions.take_flags(declared, verb, args)
    missing = hints.missing_flag(verb, rest)
    if missing is not None:
        raise PoolConfigError(pool.plugins.why_missing(*missing))
    read = {env for d in declared.values() for env in (d.option.env, *d.option.old_env)}
    unread = hints.missing_env(verb, os.environ, read)
    if unread is not None:
        raise PoolConfigError(pool.plugins.why_missing(*unread))
    check_keywords(declared, run_keywords, pool)
    return pool.resolve_run_options(verb, flags, run_keywords), rest


def check_livekits_flags(declared: Mapping[str, Declared], verb: str) -> None:
    """A :class:`PoolConfigError` naming the plugin that adds a flag livekit's own `verb`
    takes: its option would take the flag away from livekit."""
    livekits = {flag for param in livekit_options(verb) for flag in param.opts}
    for item in declared.values():
        for flag in item.option.flags:
            if flag in livekits:
                raise PoolConfigError(
                    f"plugin {item.plugin} adds the run option {flag}, which livekit's own "
                    f"{verb} takes; the plugin must name its option another way"
                )


def check_keywords(
    declared: Mapping[str, Declared], keywords: Mapping[str, Any], pool: AgentPool
) -> None:
    """A :class:`PoolConfigError` for a keyword of ``pool.run(...)`` no run option takes."""
    known = {name for d in declared.values() for name in (d.option.name, *d.option.old_names)}
    unknown = sorted(set(keywords) - known)
    pool.plugins.refuse_missing("pool.run", unknown)
    if unknown:
        raise PoolConfigError(
            f"pool.run({unknown[0]}=...): no run option is called that; they are: "
            f"{', '.join(sorted(declared)) or 'none'}"
        )


def run_livekit(
    pool: AgentPool,
    argv: Sequence[str],
    *,
    prog_name: str | None = None,
    plugins: Sequence[object] = (),
    run_keywords: Mapping[str, Any] | None = None,
) -> None:
    """Build the pool's server and run livekit's CLI on `argv`; exits like a CLI does.

    The run options plugins add (their flags; `run_keywords` from
    ``pool.run(...)``) are taken off `argv` and resolved once, here, for this process and
    every process it starts. What would fail once livekit runs fails here instead, as one
    ``error:`` line and exit status 1: a pool livekit cannot serve, a verb that connects
    with no server URL or keys, an option that cannot be used. A plugin may then run the
    verb itself (``openrtc_take_over_run``: a supervisor of several workers, a deploy
    controller); otherwise this process runs one worker. `plugins` are worker plugins
    (``create_server(plugins=...)``). ``pool.run()`` means the same as ``openrtc VERB TARGET``.

    A run verb's deployment version (``--deploy-version``, else ``OPENRTC_DEPLOY_VERSION``,
    the git commit or a content hash) is resolved here once and exported, so every process
    the worker starts reports the same one.
    """
    args = list(argv)
    verb = args[0] if args else ""
    prog = prog_name or os.path.basename(sys.argv[0]) or "openrtc"
    wants_help = "--help" in args
    # What the run exports (its options, its deployment version) reaches the processes it
    # starts through the environment; once it is over, it is withdrawn, so a later run in
    # this process (a test) starts from the environment as it was.
    undo: list[Callable[[], None]] = []
    try:
        register_worker_plugins(pool, plugins)  # they may add run options too
        if verb in RUN_VERBS and not wants_help:
            options, rest = take_run_options(pool, verb, args[1:], run_keywords or {})
            args = [verb, *rest]
            pool.use_run_options(options)
            undo.append(runoptions.export(options))
        if verb in CONNECTING_VERBS and not wants_help:
            missing = missing_credentials(args[1:], pool)
            if missing:
                raise OpenRTCError(credentials_message(f"{prog} {verb}", missing))
        if verb == "dev":
            args.append(LIVEKIT_DEV_RELOAD)
        if verb in RUN_VERBS and not wants_help:
            explicit = pool.run_options.get(VERSION_OPTION)
            deploy = resolve_deploy_version(pool, None if explicit is None else str(explicit))
            # Before any worker is forked or job process started: they inherit it.
            undo.append(export_deploy_version(deploy))
            status = _take_over(pool, verb, args, prog, plugins)
            if status is not None:
                raise SystemExit(status)
        server = build_server(pool, plugins=plugins)
        raise SystemExit(_run_app(server, args, prog))
    except OpenRTCError as exc:
        print_error(str(exc))
        raise SystemExit(1) from None
    finally:
        for step in reversed(undo):
            step()


def _run_app(server: AgentServer, args: list[str], prog: str) -> str | int | None:
    """Run livekit's CLI over `server`; its exit status."""
    if isinstance(server, PoolServer):
        server.owns_loop = True  # livekit's CLI runs it in a loop of its own
    app = _livekit.build_livekit_cli(server)
    try:
        with quiet_livekit_notices(args[0] if args else ""):
            app(args=args, prog_name=prog)
    except SystemExit as exc:
        return exit_status(server, exc.code)
    return exit_status(server, 0)


def _take_over(
    pool: AgentPool, verb: str, args: list[str], prog: str, worker_plugins: Sequence[object]
) -> int | None:
    """Offer the run to the plugins (``openrtc_take_over_run``); the exit status of the one
    that ran it, None when none did."""
    check_servable(pool)
    port = configured_port(pool)

    def run_worker(
        index: int, count: int, port_slot: int, *, plugins: Sequence[object] = ()
    ) -> int:
        become_worker(index, count)
        for plugin in plugins:
            pool.plugins.register(plugin)  # this process only: job processes do not get them
        try:
            server = build_server(pool, plugins=worker_plugins, port=worker_port(port, port_slot))
        except OpenRTCError as exc:
            print_error(str(exc))
            return 1
        return status_number(_run_app(server, args, prog))

    def setup_logging() -> None:
        _livekit.setup_production_logging(log_level(args))
        announce_deploy_version()

    run = RunContext(
        pool=pool.view(),
        verb=verb,
        options=pool.run_options,
        args=tuple(args),
        prewarm=functools.partial(prewarm_before_fork, pool, worker_plugins),
        run_worker=run_worker,
        setup_logging=setup_logging,
        resolve_version=functools.partial(resolve_deploy_version, pool),
    )
    return pool.plugins.take_over_run(run)


def status_number(code: str | int | None) -> int:
    """A ``SystemExit`` code as a process exit status (a message means 1)."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


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


def add_verb(
    app: typer.Typer, verb: str, summary: str, declared: Mapping[str, Declared] | None = None
) -> None:
    """Add livekit's `verb` to `app`: load the pool from TARGET, pass the rest to livekit.

    The run options plugins add (`declared`) show in the verb's help; they are taken from
    the rest of the command line, like livekit's own, by :func:`run_livekit`.
    """

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
    options = [d for d in (declared or {}).values() if verb in d.option.verbs]
    app.command(
        verb,
        cls=type(
            f"{verb.title()}Command",
            (VerbCommand,),
            {"verb": verb, "run_options": tuple(options)},
        ),
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(command)
