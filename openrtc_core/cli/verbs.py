"""livekit's verbs over a pool: their ``openrtc`` commands, and running livekit's CLI."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Final

import typer

from .. import _livekit
from ..deployment import (
    RUN_VERBS,
    VERSION_ENV,
    VERSION_FLAG,
    announce_deploy_version,
    export_deploy_version,
    generation,
    resolve_deploy_version,
    take_version_flag,
)
from ..errors import OpenRTCError
from ..reloading import RELOAD_DISTRIBUTION
from ..server import PoolServer, build_server, check_servable, configured_port
from ..supervision import (
    CONTROL_ENV,
    CONTROL_FLAG,
    DEPLOY_DISTRIBUTION,
    MEMORY_FLAG,
    SESSIONS_FLAG,
    SUPERVISED_VERB,
    WORKERS_DISTRIBUTION,
    WORKERS_ENV,
    WORKERS_FLAG,
    SupervisorContext,
    WorkerPlan,
    become_worker,
    log_level,
    prewarm_before_fork,
    runs_supervised,
    supervisor_factory,
    take_worker_flags,
    worker_port,
)
from ..targets import load_pool
from .credentials import CONNECTING_VERBS, credentials_message, missing_credentials
from .livekit_help import VerbCommand
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

RELOAD_VERBS: Final = ("dev", "start")
"""The verbs that take ``--reload/--no-reload`` (on by default for dev)."""
VERB_NOTES: Final = {
    "dev": (
        "Code reloads when files change if a reload strategy is installed (pip install "
        f"{RELOAD_DISTRIBUTION}); --no-reload turns it off. livekit's own --reload is not "
        "passed on."
    ),
    "start": f"--reload reloads code when files change (needs {RELOAD_DISTRIBUTION}).",
}
"""What each verb's help says after the options."""

TARGET_HELP = (
    "What to run: package.module:pool, path/to/app.py[:pool], or a directory with one agent "
    "module per file."
)


# -- running livekit's CLI --------------------------------------------------------------------


def reload_choice(pool: AgentPool, verb: str, args: list[str]) -> tuple[bool, list[str]]:
    """Whether the worker reloads code, and `args` without our ``--reload`` flags.

    ``dev`` reloads when a reload strategy is installed, ``start`` only with ``--reload``;
    the last flag given wins. livekit's own ``dev --reload`` is always switched off (it
    removed in-process reloading and would only print a notice).
    """
    if verb not in RELOAD_VERBS:
        return False, args
    flags = [a for a in args if a in ("--reload", "--no-reload")]
    rest = [a for a in args if a not in ("--reload", "--no-reload")]
    if flags:
        wanted = flags[-1] == "--reload"
    else:
        wanted = verb == "dev" and bool(pool.plugins.reload_strategies())
    # livekit's reload defaults to on and only prints a notice; off, it prints none.
    return wanted, [*rest, "--no-reload"] if verb == "dev" else rest


def run_livekit(
    pool: AgentPool,
    argv: Sequence[str],
    *,
    prog_name: str | None = None,
    plugins: Sequence[object] = (),
) -> None:
    """Build the pool's server and run livekit's CLI on `argv`; exits like a CLI does.

    What would fail once livekit runs fails here instead, as one ``error:`` line and exit
    status 1: a pool livekit cannot serve, a verb that connects with no server URL or keys.
    ``start`` with several workers (or worker recycling) runs the installed supervisor,
    which runs this same worker in each of its processes. `plugins` are worker plugins
    (``create_server(plugins=...)``). ``pool.run()`` means the same as ``openrtc VERB TARGET``.

    A run verb's deployment version (``--version``, else ``OPENRTC_VERSION``, the git commit
    or a content hash) is resolved here once and exported as ``OPENRTC_VERSION``, so every
    process the worker starts reports the same one.
    """
    args = list(argv)
    verb = args[0] if args else ""
    prog = prog_name or os.path.basename(sys.argv[0]) or "openrtc"
    wants_help = "--help" in args
    withdraw: Callable[[], None] | None = None
    try:
        explicit, args = take_version_flag(verb, args)
        if generation() is not None:
            # A deploy controller runs this command line again for each generation and
            # resolved the version of the code it loads (OPENRTC_VERSION): a --version
            # given to the first one must not name them all.
            explicit = None
        reload, plan, deploy = False, WorkerPlan(count=1), None
        if not wants_help:
            reload, args = reload_choice(pool, verb, args)
            plan, args = take_worker_flags(pool, verb, args)
            if verb in RUN_VERBS:
                deploy = resolve_deploy_version(pool, explicit)
        if verb in CONNECTING_VERBS and not wants_help:
            missing = missing_credentials(args[1:], pool)
            if missing:
                raise OpenRTCError(credentials_message(f"{prog} {verb}", missing))
        if deploy is not None:
            # Before any worker is forked or job process started: they inherit it.
            withdraw = export_deploy_version(deploy)
        if runs_supervised(pool, verb, plan):
            raise SystemExit(_supervise(pool, plan, args, prog, plugins, reload))
        server = build_server(pool, reload=reload, plugins=plugins)
    except OpenRTCError as exc:
        if withdraw is not None:
            withdraw()  # no worker ran: the process is as it was
        print_error(str(exc))
        raise SystemExit(1) from None
    raise SystemExit(_run_app(server, args, prog))


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


def _supervise(
    pool: AgentPool,
    plan: WorkerPlan,
    args: list[str],
    prog: str,
    plugins: Sequence[object],
    reload: bool,
) -> int:
    """Run `plan`'s workers under the installed supervisor; the command's exit status."""
    factory = supervisor_factory(pool, plan)
    check_servable(pool, reload=reload)
    port = configured_port(pool)

    def run_worker(index: int, count: int, port_slot: int) -> int:
        become_worker(index, count)
        try:
            server = build_server(
                pool, reload=reload, plugins=plugins, port=worker_port(port, port_slot)
            )
        except OpenRTCError as exc:
            print_error(str(exc))
            return 1
        return status_number(_run_app(server, args, prog))

    _livekit.setup_production_logging(log_level(args))
    announce_deploy_version()
    context = SupervisorContext(
        pool=pool,
        plan=plan,
        prewarm=functools.partial(prewarm_before_fork, pool, plugins),
        run_worker=run_worker,
    )
    return factory(context).run()


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


def _load(target: str, *, entry_points: bool, tenants: str | None) -> AgentPool:
    try:
        return load_pool(target, entry_points=entry_points, tenants=tenants)
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
        reload: bool | None = None,
        tenants: Annotated[
            str | None,
            typer.Option(
                "--tenants",
                help="The tenants file (keys, caps, breakers per tenant; needs openrtc-tenancy).",
                envvar="OPENRTC_TENANTS",
                show_default=False,
            ),
        ] = None,
        version: Annotated[
            str | None,
            typer.Option(
                VERSION_FLAG,
                help=(
                    "The deployment version this worker reports (participant attribute "
                    f"openrtc.deploy, SessionInfo.deploy, logs). Default: {VERSION_ENV}, else "
                    "the git commit of TARGET's folder (-dirty with local changes), else a "
                    "hash of its Python files."
                ),
                show_default=False,
                metavar="VERSION",
            ),
        ] = None,
        workers: str | None = None,
        max_worker_memory: float | None = None,
        max_worker_sessions: int | None = None,
        control: str | None = None,
    ) -> None:
        pool = _load(target, entry_points=entry_points, tenants=tenants)
        flags = [] if reload is None else ["--reload" if reload else "--no-reload"]
        if version is not None:
            flags += [VERSION_FLAG, version]
        for flag, value in (
            (WORKERS_FLAG, workers),
            (MEMORY_FLAG, max_worker_memory),
            (SESSIONS_FLAG, max_worker_sessions),
            (CONTROL_FLAG, control),
        ):
            if value is not None:
                flags += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        run_livekit(pool, [verb, *ctx.args, *flags], prog_name="openrtc")

    command.__doc__ = summary
    # Set here, not in the signature: whether the option shows depends on the verb.
    command.__annotations__["reload"] = Annotated[
        bool | None,
        typer.Option(
            "--reload/--no-reload",
            help=(
                "Reload agent code when its files change; live calls switch at their next "
                f"turn (needs {RELOAD_DISTRIBUTION}). Default: on for dev, off for start."
            ),
            hidden=verb not in RELOAD_VERBS,
            show_default=False,
        ),
    ]
    supervised = verb == SUPERVISED_VERB
    for name, kind, flag, text, envvar in (
        (
            "workers",
            str,
            WORKERS_FLAG,
            "Worker processes to run, each registered with LiveKit: a number, or auto (one "
            f"per usable core; the default when {WORKERS_DISTRIBUTION} is installed).",
            WORKERS_ENV,
        ),
        (
            "max_worker_memory",
            float,
            MEMORY_FLAG,
            "Replace a worker whose memory (PSS, MiB) goes above this, once its calls end.",
            None,
        ),
        (
            "max_worker_sessions",
            int,
            SESSIONS_FLAG,
            "Replace a worker once it has taken this many calls, once they end.",
            None,
        ),
        (
            "control",
            str,
            CONTROL_FLAG,
            f"Where the deploy controller listens for `openrtc deploy` (needs "
            f"{DEPLOY_DISTRIBUTION}; default {CONTROL_ENV}, else a private runtime folder).",
            None,
        ),
    ):
        command.__annotations__[name] = Annotated[
            kind | None,
            typer.Option(flag, help=text, envvar=envvar, hidden=not supervised, show_default=False),
        ]
    app.command(
        verb,
        cls=type(f"{verb.title()}Command", (VerbCommand,), {"verb": verb}),
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        epilog=VERB_NOTES.get(verb),
    )(command)
