"""openrtc-reload's hooks: the ``watch`` strategy, and the lifecycle it follows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from livekit.agents import AgentSession, JobProcess

from openrtc_core import (
    PoolView,
    ReloadContext,
    Reloader,
    SessionInfo,
    SessionOutcome,
    hookimpl,
)

from .reloader import WatchReloader, code_imported, reloader_of

STRATEGY = "watch"


@hookimpl
def openrtc_register_reload_strategies(
    register: Callable[[str, Callable[[ReloadContext], Reloader]], None],
) -> None:
    register(STRATEGY, _watch)


def _watch(context: ReloadContext) -> WatchReloader:
    return WatchReloader(context)


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
