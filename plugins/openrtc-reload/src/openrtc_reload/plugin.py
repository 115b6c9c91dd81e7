"""openrtc-reload's hooks: the ``--reload`` option, the ``watch`` strategy, and the lifecycle
of one reloader per process hosting the pool (see :mod:`.running`)."""

from __future__ import annotations

import logging
from typing import Any

from livekit.agents import AgentSession, JobProcess

from openrtc_core import (
    AddRunOption,
    AgentPool,
    JobView,
    PoolView,
    ProcessRole,
    RunOption,
    SessionInfo,
    SessionOutcome,
    hookimpl,
)

from .reloader import WatchReloader, code_imported, reloader_of
from .running import (
    DEFAULT_STRATEGY,
    OPTION,
    ReloadContext,
    add_strategy,
    close_reloader,
    ensure_reloader,
    reloading,
    strategy,
)

logger = logging.getLogger("openrtc.reload")

RELOAD_VERBS = ("dev", "start")


def _watch(context: ReloadContext) -> WatchReloader:
    return WatchReloader(context)


add_strategy(DEFAULT_STRATEGY, _watch)


def reload_by_default(verb: str) -> bool:
    """On for ``dev``; off for ``start`` and for a server built in code (verb "")."""
    return verb == "dev"


@hookimpl
def openrtc_add_run_options(add: AddRunOption) -> None:
    add(
        RunOption(
            name=OPTION,
            flag="--reload",
            switch=True,
            verbs=RELOAD_VERBS,
            default=reload_by_default,
            help=(
                "Reload edited agent code in the running worker: new calls start on it and "
                "live calls switch at their next turn; a save that fails to load or raises "
                "on its first turn is rolled back. On by default for dev, off for start."
            ),
        )
    )


@hookimpl
def openrtc_check_pool(pool: PoolView) -> None:
    # A worker asked to reload with no strategy says so at start, not at the first edit.
    if reloading(pool.run_options):
        strategy()


@hookimpl
async def openrtc_process_started(pool: AgentPool, role: ProcessRole) -> None:
    try:
        await ensure_reloader(pool, role)
    except Exception:
        logger.exception("the reload strategy failed to start; code will not reload")


@hookimpl
async def openrtc_before_job(pool: AgentPool, role: ProcessRole, job: JobView) -> None:
    # A job process prewarmed before the last edit starts on the code on disk.
    reloader = await ensure_reloader(pool, role)
    if reloader is not None:
        await reloader.before_job()


@hookimpl
async def openrtc_worker_closing(pool: AgentPool) -> None:
    await close_reloader(pool)


@hookimpl
def openrtc_prewarm(proc: JobProcess, pool: PoolView) -> None:
    # The pool's code was imported just before prewarm, in this process.
    code_imported()


@hookimpl
def openrtc_session_started(info: SessionInfo, session: AgentSession[Any]) -> None:
    reloader = reloader_of(info.job_id)
    if reloader is not None:
        reloader.track(info.job_id, session)


@hookimpl
def openrtc_session_ended(info: SessionInfo, outcome: SessionOutcome) -> None:
    reloader = reloader_of(info.job_id)
    if reloader is not None:
        reloader.forget(info.job_id)


@hookimpl
def openrtc_agent_error(
    info: SessionInfo, session: AgentSession[Any], error: BaseException
) -> bool | None:
    reloader = reloader_of(info.job_id)
    if reloader is None:
        return None
    if info.job_id not in reloader.live:
        # Raised while the session was starting (on_enter): not announced as started yet.
        reloader.track(info.job_id, session)
    return reloader.fault(info.job_id, error) or None
