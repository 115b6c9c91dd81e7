"""What the core gives a plugin that runs workers itself (``openrtc_take_over_run``).

A plugin that takes over ``start`` to run several workers (a supervisor), or generations of
them (a deploy controller), runs in the ``openrtc`` process and never builds a server or
connects to LiveKit itself. The core hands it, in its :class:`~openrtc_core.RunContext`:

- ``prewarm()``: the pool's prewarm, run once before forking so that the workers share the
  loaded models (isolation backends with ``prewarm_once``), with a clear error when the
  prewarm left something a forked process cannot use (threads, sockets, an event loop);
- ``run_worker(index, count, port_slot)``: one normal OpenRTC worker, run in the calling
  (forked) process until it exits, with its own LiveKit registration; its exit status;
- ``setup_logging()``: livekit's production logging, at the level the command asks for.

This module holds the pieces behind them, and what a forked worker does first.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from . import _livekit
from ._livekit import jobs as livekit_jobs
from .entrypoint import PoolPrewarm, register_worker_plugins
from .errors import PoolConfigError
from .identity import WORKER_ENV
from .isolation.base import hand_over_prewarmed
from .server import isolation_backend

if TYPE_CHECKING:
    from .pool import AgentPool

logger = logging.getLogger("openrtc.workers")

_PR_SET_PDEATHSIG: Final = 1


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
                "run one worker"
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
