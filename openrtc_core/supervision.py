"""Several workers from one command: what the core gives a supervisor, and how it picks one.

``openrtc start TARGET --workers N`` (``pool.run(workers=N)``, ``OPENRTC_WORKERS``) runs a
supervisor (a plugin's, see ``openrtc_register_supervisors``; openrtc-workers offers one) in
the ``openrtc`` process. The core hands it:

- ``prewarm()``: the pool's prewarm, run once in the supervisor so that the workers it forks
  share the loaded models (isolation backends with ``prewarm_once``), with a clear error
  when the prewarm left something a forked process cannot use (threads, sockets, an event
  loop);
- ``run_worker(index, count)``: one normal OpenRTC worker, run in the calling (forked)
  process until it exits, with its own LiveKit registration; returns its exit status.

The supervisor never builds a server or connects to LiveKit itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

import attrs

from . import _livekit
from ._livekit import jobs as livekit_jobs
from .cores import usable_cores
from .discovery import pick_registered
from .entrypoint import PoolPrewarm, register_worker_plugins
from .errors import PoolConfigError
from .identity import WORKER_ENV
from .isolation.base import hand_over_prewarmed
from .server import isolation_backend

if TYPE_CHECKING:
    from .pool import AgentPool

logger = logging.getLogger("openrtc.workers")

WORKERS_ENV: Final = "OPENRTC_WORKERS"
"""How many workers ``start`` runs: a number, or ``auto`` (one per usable core)."""
SUPERVISOR_ENV: Final = "OPENRTC_SUPERVISOR"
"""Which installed supervisor runs them (default: the first registered, see
:func:`supervisor_name`). Set, it also makes ``start`` supervised with one worker: a
controller (openrtc-deploy) runs each generation of workers this way."""
DEFAULT_SUPERVISOR: Final = "workers"
CONTROL_ENV: Final = "OPENRTC_CONTROL"
"""Where a supervisor that takes commands (openrtc-deploy's) listens: a Unix socket path."""
WORKERS_DISTRIBUTION: Final = "openrtc-workers"
DEPLOY_DISTRIBUTION: Final = "openrtc-deploy"
SUPERVISED_VERB: Final = "start"
"""The one verb that runs several workers; dev, console and connect stay one process."""

WORKERS_FLAG: Final = "--workers"
MEMORY_FLAG: Final = "--max-worker-memory"
SESSIONS_FLAG: Final = "--max-worker-sessions"
CONTROL_FLAG: Final = "--control"
_FLAGS: Final = (WORKERS_FLAG, MEMORY_FLAG, SESSIONS_FLAG, CONTROL_FLAG)
_PR_SET_PDEATHSIG: Final = 1
_N = TypeVar("_N", int, float)


@attrs.frozen(kw_only=True)
class WorkerPlan:
    """How many workers to run, and when to replace one that has served long enough."""

    count: int
    max_memory_mb: float | None = None
    """A worker whose PSS (with its job processes) goes above this many MiB stops taking
    calls, finishes those it has, and is replaced."""
    max_sessions: int | None = None
    """A worker that has taken this many calls is replaced the same way."""
    control: str | None = None
    """``--control PATH``: where a supervisor that takes commands listens (else it reads
    ``OPENRTC_CONTROL``, else picks its own default)."""

    @property
    def supervised(self) -> bool:
        """Whether a supervisor runs: several workers, or one that is recycled."""
        return self.count > 1 or self.max_memory_mb is not None or self.max_sessions is not None


@attrs.frozen(kw_only=True)
class SupervisorContext:
    """What a supervisor gets from the core (see the module's docstring)."""

    pool: AgentPool
    plan: WorkerPlan
    prewarm: Callable[[], str]
    """Run the pool's prewarm in this process, before forking; says what it did."""
    run_worker: Callable[[int, int, int], int]
    """Run worker `index` of `count` in this (forked) process on port slot `port_slot`
    (its health port is the configured one plus the slot); its exit status. A replacement
    started while its predecessor still drains needs a slot of its own."""
    command: tuple[str, ...] = attrs.field(factory=lambda: tuple(sys.orig_argv))
    """The command line that started this process. A controller runs it again, with
    ``OPENRTC_SUPERVISOR`` naming the supervisor of one generation, to load the code now on
    disk in a fresh process."""


class Supervisor(Protocol):
    """Runs the workers of one ``openrtc start``.

    A factory with a true ``supervises_every_start`` attribute (a controller of generations)
    runs ``start`` even with one worker and no recycling, when it is the one chosen.
    """

    def run(self) -> int:
        """Start the workers, keep them running until asked to stop, drain them; the
        command's exit status."""


SupervisorFactory = Callable[[SupervisorContext], Supervisor]


def supervisor_name(registered: Mapping[str, object] | None = None) -> str:
    """The supervisor ``start`` uses: ``OPENRTC_SUPERVISOR``, else the first of the
    `registered` ones (a plugin that wraps others, like a deploy controller, registers
    first), else :data:`DEFAULT_SUPERVISOR`."""
    explicit = os.environ.get(SUPERVISOR_ENV, "").strip()
    if explicit:
        return explicit
    return next(iter(registered or ()), DEFAULT_SUPERVISOR)


def runs_supervised(pool: AgentPool, verb: str, plan: WorkerPlan) -> bool:
    """Whether `verb` runs under a supervisor: ``start`` with several workers or recycling,
    with ``OPENRTC_SUPERVISOR`` set, or when the chosen supervisor supervises every start.

    :raises PoolConfigError: ``--control`` is given and no supervisor runs to take commands.
    """
    if verb != SUPERVISED_VERB:
        return False
    registered = pool.plugins.supervisors()
    chosen = registered.get(supervisor_name(registered))
    supervised = (
        plan.supervised
        or bool(os.environ.get(SUPERVISOR_ENV, "").strip())
        or bool(getattr(chosen, "supervises_every_start", False))
    )
    if plan.control is not None and not supervised:
        raise PoolConfigError(
            f"{CONTROL_FLAG} {plan.control}: no supervisor that takes commands is installed; "
            f"pip install {DEPLOY_DISTRIBUTION}"
        )
    return supervised


def supervisor_factory(pool: AgentPool, plan: WorkerPlan) -> SupervisorFactory:
    """The installed supervisor's factory; a clear error naming what to install when none."""
    registered = pool.plugins.supervisors()
    name = supervisor_name(registered)
    factory: SupervisorFactory = pick_registered(
        registered,
        name,
        asked_for=f"start {_describe(plan)} was asked for",
        kind="supervisor",
        env=SUPERVISOR_ENV,
        distribution=WORKERS_DISTRIBUTION,
    )
    return factory


def _describe(plan: WorkerPlan) -> str:
    parts = [f"{WORKERS_FLAG} {plan.count}"]
    if plan.max_memory_mb is not None:
        parts.append(f"{MEMORY_FLAG} {plan.max_memory_mb:g}")
    if plan.max_sessions is not None:
        parts.append(f"{SESSIONS_FLAG} {plan.max_sessions}")
    if plan.control is not None:
        parts.append(f"{CONTROL_FLAG} {plan.control}")
    return " ".join(parts)


# -- the flags ---------------------------------------------------------------------------------


def take_worker_flags(
    pool: AgentPool, verb: str, args: Sequence[str]
) -> tuple[WorkerPlan, list[str]]:
    """The worker plan `args` ask for, and `args` without our worker flags.

    ``start`` runs one worker per usable core when a supervisor is installed and neither
    ``--workers`` nor ``OPENRTC_WORKERS`` says otherwise; every other verb runs one (and
    ignores ``OPENRTC_WORKERS``, so one environment serves ``dev`` and ``start``).
    """
    values: dict[str, str] = {}
    rest: list[str] = []
    items = iter(args)
    for arg in items:
        flag, eq, value = arg.partition("=")
        if flag not in _FLAGS:
            rest.append(arg)
            continue
        if not eq:
            value = next(items, "")
        values[flag] = value
    if (
        verb == SUPERVISED_VERB
        and WORKERS_FLAG not in values
        and os.environ.get(WORKERS_ENV, "").strip()
    ):
        values[WORKERS_FLAG] = os.environ[WORKERS_ENV].strip()
    control = values.get(CONTROL_FLAG)
    if control is not None and not control.strip():
        raise PoolConfigError(f"{CONTROL_FLAG}: give the path of the control socket")
    memory = _number(values, MEMORY_FLAG, "a size in MiB, e.g. 1024", float)
    sessions = _number(values, SESSIONS_FLAG, "a number of calls, e.g. 1000", int)
    count = _worker_count(pool, verb, values.get(WORKERS_FLAG))
    plan = WorkerPlan(count=count, max_memory_mb=memory, max_sessions=sessions, control=control)
    if verb != SUPERVISED_VERB and (plan.supervised or control is not None):
        raise PoolConfigError(
            f"{_describe(plan)}: several workers, recycling and a control socket are for "
            f"`{SUPERVISED_VERB}`; "
            f"{verb} runs one worker process"
        )
    return plan, rest


def _worker_count(pool: AgentPool, verb: str, raw: str | None) -> int:
    if raw is None or raw.strip().lower() == "auto":
        wanted_default = raw is not None or (
            verb == SUPERVISED_VERB and bool(pool.plugins.supervisors())
        )
        return usable_cores() if wanted_default else 1
    if not raw.strip().isdigit() or int(raw) < 1:
        raise PoolConfigError(
            f"{WORKERS_FLAG} {raw!r} (or {WORKERS_ENV}): give a number of workers, 1 or more, "
            "or 'auto' for one per usable core"
        )
    return int(raw)


def _number(values: dict[str, str], flag: str, what: str, kind: Callable[[str], _N]) -> _N | None:
    raw = values.get(flag)
    if raw is None:
        return None
    try:
        value: _N | None = kind(raw)
    except ValueError:
        value = None
    if value is None or value <= 0:
        raise PoolConfigError(f"{flag} {raw!r}: give {what}, more than 0")
    return value


# -- prewarm before the fork -------------------------------------------------------------------


@attrs.frozen
class ForkHazards:
    """What a process holds that a forked child would get a broken copy of: threads besides
    the main one (native ones included), and open sockets (a client's connection, or an
    event loop's own wake-up pair)."""

    threads: frozenset[str]
    sockets: frozenset[str]

    @classmethod
    def now(cls) -> ForkHazards:
        return cls(_threads(), _sockets())

    def added_since(self, before: ForkHazards) -> list[str]:
        """What is new in this snapshot since `before`, in words."""
        found = []
        threads = self.threads - before.threads
        if threads:
            found.append(f"{len(threads)} thread(s) ({', '.join(sorted(threads))})")
        sockets = self.sockets - before.sockets
        if sockets:
            found.append(f"{len(sockets)} open socket(s) (a connection, or an event loop)")
        return found


def _threads() -> frozenset[str]:
    """Threads other than this one, named ``name#tid``: Python's name for a Python thread,
    the kernel's for a native one."""
    me = str(os.getpid())
    python_names = {str(t.native_id): t.name for t in threading.enumerate()}
    names = set()
    for task in Path("/proc/self/task").iterdir():
        if task.name == me:
            continue
        try:
            name = python_names.get(task.name) or (task / "comm").read_text().strip()
        except OSError:
            continue
        names.add(f"{name}#{task.name}")
    return frozenset(names)


def _sockets() -> frozenset[str]:
    found = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(target)
    return frozenset(found)


def prewarm_before_fork(pool: AgentPool, plugins: Sequence[object] = ()) -> str:
    """Run `pool`'s prewarm in this process for the workers it will fork; what it did.

    Only for backends whose jobs share one prewarmed ``JobProcess`` (``prewarm_once``);
    others prewarm in each job process. The framework's own imports are done here too, and
    the heap is frozen after, so collections in the workers do not copy the shared pages.
    Raises :class:`PoolConfigError` when the prewarm started threads, opened sockets or left
    an event loop: the workers would inherit them broken.
    """
    register_worker_plugins(pool, plugins)
    backend = isolation_backend(pool)
    livekit_jobs.warm_up_framework()
    if not backend.traits.prewarm_once:
        said = f"prewarm runs in each job process (isolation={backend.name!r})"
    else:
        before = ForkHazards.now()
        proc = livekit_jobs.shared_job_process(pool.settings.server_options.get("http_proxy"))
        PoolPrewarm(pool, plugins)(proc)
        problems = ForkHazards.now().added_since(before)
        if problems:
            raise PoolConfigError(
                f"the pool's prewarm left {' and '.join(problems)} in the supervisor; the "
                "workers are forked after prewarm and would inherit them broken. Load only "
                "models and data in prewarm (openrtc_prewarm); start threads, connections "
                "and event loops in each worker (openrtc_worker_started) or per session, or "
                f"run one worker ({WORKERS_FLAG} 1)"
            )
        hand_over_prewarmed(proc)
        said = "prewarm ran once here; the workers share it"
    gc.collect()
    gc.freeze()
    return said


# -- one worker, in a forked process -----------------------------------------------------------


def worker_port(configured: int | None, port_slot: int) -> int:
    """The health/HTTP port of a worker on `port_slot` (0-based): the `configured` port (or
    livekit's production default) plus the slot; 0 stays 0 (each picks a free one)."""
    base = _livekit.production_port() if configured is None else configured
    return 0 if base == 0 else base + port_slot


def drain_when_parent_dies(parent: int | None = None) -> None:
    """Ask the kernel to send this process SIGTERM (a drain) when its parent dies (Linux's
    parent-death signal; elsewhere nothing is asked). With `parent`, the pid of the process
    that started this one: if that one is no longer the parent, it died before the signal
    was asked for, and SIGTERM comes now."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def become_worker(index: int, count: int) -> None:
    """Turn a process forked by a supervisor into worker `index` of `count`: its identity
    for the logs, default signal handling, and no log handler of the supervisor's (livekit's
    CLI sets up the worker's own)."""
    os.environ[WORKER_ENV] = f"{index}/{count}/{os.getpid()}"
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)


def log_level(args: Sequence[str]) -> str:
    """The level livekit's ``--log-level`` (or ``LIVEKIT_LOG_LEVEL``) asks for, as a name
    Python's logging knows."""
    level = os.environ.get("LIVEKIT_LOG_LEVEL", "info")
    items = iter(args)
    for arg in items:
        flag, eq, value = arg.partition("=")
        if flag == "--log-level":
            level = value if eq else next(items, level)
    name = level.strip().upper()
    return {"WARN": "WARNING", "TRACE": "DEBUG"}.get(name, name)
