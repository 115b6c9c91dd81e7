"""Reloading agent code in a running worker: what the core asks of a reload strategy.

The core watches no files and imports nothing again; a reload strategy does (the
openrtc-reload plugin offers ``watch``). When reloading is on, the core builds one
:class:`Reloader` per process that hosts the pool (the worker process; with ``process``
isolation, each job process too) and gives it a :class:`ReloadContext`. From there the
strategy uses public names only: it loads the pool's code again
(:func:`openrtc_core.load_pool_again`), swaps it in (:meth:`AgentPool.adopt`), stamps code
versions (:meth:`AgentPool.stamp_versions`), switches live sessions (``pool.sessions``,
:meth:`LiveSession.switch_version`) and may keep a failing session alive
(``openrtc_agent_error``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Literal, Protocol

import attrs

from .discovery import pick_registered

if TYPE_CHECKING:
    from .pool import AgentPool

logger = logging.getLogger("openrtc.reload")

RELOAD_ENV: Final = "OPENRTC_RELOAD"
"""The reload strategy a reloading worker uses (default ``watch``)."""
DEFAULT_STRATEGY: Final = "watch"
RELOAD_DISTRIBUTION: Final = "openrtc-reload"

Role = Literal["worker", "job"]


@attrs.frozen
class ReloadContext:
    """What a reload strategy's factory is given, once per process hosting the pool."""

    pool: AgentPool
    role: Role
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
        """Stop; the worker or job process is ending."""


ReloaderFactory = Callable[[ReloadContext], Reloader]


def strategy_name() -> str:
    return os.environ.get(RELOAD_ENV, "").strip() or DEFAULT_STRATEGY


def reload_factory(pool: AgentPool) -> ReloaderFactory:
    """The factory of the reload strategy this worker uses; a clear error when none is."""
    factory: ReloaderFactory = pick_registered(
        pool.plugins.reload_strategies(),
        strategy_name(),
        asked_for="reloading was asked for",
        kind="reload strategy",
        env=RELOAD_ENV,
        distribution=RELOAD_DISTRIBUTION,
    )
    return factory


@attrs.define
class _Running:
    reloader: Reloader
    loop: asyncio.AbstractEventLoop
    started: asyncio.Future[None]


_RUNNING: dict[int, _Running] = {}
"""This process's reloaders, by pool (a process hosts a pool once)."""


async def ensure_reloader(pool: AgentPool, role: Role) -> Reloader | None:
    """This process's reloader for `pool`, built and started on first use.

    None where it cannot act: a job thread (``thread`` isolation) runs its own event loop,
    and the reloader belongs to the worker's; new calls there still get the reloaded code,
    as the pool is shared.
    """
    loop = asyncio.get_running_loop()
    running = _RUNNING.get(id(pool))
    if running is None:
        reloader = reload_factory(pool)(ReloadContext(pool=pool, role=role))
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
    await asyncio.shield(running.started)
    return running.reloader


async def close_reloader(pool: AgentPool) -> None:
    running = _RUNNING.pop(id(pool), None)
    if running is not None and running.loop is asyncio.get_running_loop():
        await running.reloader.aclose()
