"""Which reload strategy a worker uses, and its one reloader per process hosting the pool.

The core watches no files and imports nothing again; it only tells plugins when a process
starts hosting the pool, before each job, and when the worker closes. This module turns
those calls into a :class:`Reloader` per process (the worker process; with ``process``
isolation, each job process too) when the run has reloading on (``--reload``, on by default
for ``openrtc dev``). From there a strategy uses the core's public names only: it loads the
pool's code again (:func:`openrtc_core.load_pool_again`), swaps it in
(:meth:`AgentPool.adopt`), stamps code versions (:meth:`AgentPool.stamp_versions`), switches
live sessions (``pool.sessions``, :meth:`LiveSession.switch_version`) and may keep a failing
session alive (``openrtc_agent_error``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final, Protocol

import attrs

from openrtc_core import PoolConfigError, ProcessRole

if TYPE_CHECKING:
    from openrtc_core import AgentPool

OPTION: Final = "reload"
"""The run option (``--reload``/``--no-reload``, ``pool.run(reload=...)``,
``pool.create_server(reload=...)``)."""
STRATEGY_ENV: Final = "OPENRTC_RELOAD"
"""The reload strategy a reloading worker uses (default ``watch``)."""
DEFAULT_STRATEGY: Final = "watch"


@attrs.frozen
class ReloadContext:
    """What a reload strategy's factory is given, once per process hosting the pool."""

    pool: AgentPool
    role: ProcessRole
    """``worker``: the process that talks to LiveKit and routes jobs (its sessions run here
    with ``coroutine`` isolation); ``job``: a job process of ``process`` isolation, which
    hosts the sessions of its jobs and nothing else."""


class Reloader(Protocol):
    """A reload strategy at work in one process; every method runs in that process's loop."""

    async def start(self) -> None:
        """Begin (watch files, say). Called once, before any other method."""

    async def before_job(self) -> None:
        """A job is about to be built here: bring the pool's code up to date first, so a job
        process started before the last change still starts on the new code."""

    async def aclose(self) -> None:
        """Stop; the worker is closing."""


ReloaderFactory = Callable[[ReloadContext], Reloader]

STRATEGIES: dict[str, ReloaderFactory] = {}
"""The reload strategies by name (``OPENRTC_RELOAD`` picks one); see :func:`add_strategy`."""


def add_strategy(name: str, factory: ReloaderFactory) -> None:
    """Offer a reload strategy: ``OPENRTC_RELOAD=name`` makes reloading workers build their
    reloaders with ``factory(ReloadContext)``. A name offered twice keeps the first."""
    if not name or not isinstance(name, str):
        raise ValueError("a reload strategy's name must be a non-empty string")
    STRATEGIES.setdefault(name, factory)


def reloading(options: Mapping[str, object]) -> bool:
    """Whether the run's options (``pool.run_options``) turn reloading on."""
    return bool(options.get(OPTION))


def strategy_name() -> str:
    return os.environ.get(STRATEGY_ENV, "").strip() or DEFAULT_STRATEGY


def strategy() -> ReloaderFactory:
    """The factory of the reload strategy this worker uses; a clear error when there is none."""
    name = strategy_name()
    factory = STRATEGIES.get(name)
    if factory is None:
        offered = ", ".join(sorted(STRATEGIES)) or "none"
        raise PoolConfigError(
            f"reloading was asked for, but there is no reload strategy {name!r} "
            f"(set by {STRATEGY_ENV}); available: {offered}. Unset {STRATEGY_ENV} for "
            f"{DEFAULT_STRATEGY!r}, or run without --reload."
        )
    return factory


@attrs.define
class _Running:
    reloader: Reloader
    loop: asyncio.AbstractEventLoop
    started: asyncio.Future[None]


_RUNNING: dict[int, _Running] = {}
"""This process's reloaders, by pool (a process hosts a pool once)."""


async def ensure_reloader(pool: AgentPool, role: ProcessRole) -> Reloader | None:
    """This process's reloader for `pool`, built and started on first use; None when the run
    does not reload.

    None too where it cannot act: a job thread (``thread`` isolation) runs its own event
    loop, and the reloader belongs to the worker's; new calls there still get the reloaded
    code, as the pool is shared.
    """
    if not reloading(pool.run_options):
        return None
    loop = asyncio.get_running_loop()
    running = _RUNNING.get(id(pool))
    if running is None:
        reloader = strategy()(ReloadContext(pool=pool, role=role))
        running = _Running(reloader, loop, loop.create_future())
        _RUNNING[id(pool)] = running
        try:
            await reloader.start()
        except BaseException as exc:
            running.started.set_exception(exc)
            running.started.exception()  # retrieved: the caller gets it raised below
            raise
        running.started.set_result(None)
    if running.loop is not loop:
        return None
    try:
        await asyncio.shield(running.started)
    except Exception:
        return None  # it failed to start, and its first caller said so
    return running.reloader


async def close_reloader(pool: AgentPool) -> None:
    running = _RUNNING.pop(id(pool), None)
    if running is not None and running.loop is asyncio.get_running_loop():
        await running.reloader.aclose()
