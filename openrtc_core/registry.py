"""The live-session registry: every session this process hosts, whatever the backend.

The session factory fills it; lifecycle hooks hand plugins the same ``SessionInfo``; reload,
tenancy, deploy and live-view plugins read it (``pool.sessions``). It lives in the process
that runs the session: the worker itself for coroutine isolation, the job process for
``process`` isolation.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
from livekit.agents import AgentSession

from .models import AgentContext, SessionInfo, SessionState


@attrs.frozen
class SessionTag:
    """Who a task works for: set in a job's context, so every task the job creates has it."""

    job_id: str
    agent: str
    tenant: str = ""


CURRENT_SESSION: contextvars.ContextVar[SessionTag | None] = contextvars.ContextVar(
    "openrtc_current_session", default=None
)


@attrs.define
class LiveSession:
    info: SessionInfo
    state: SessionState = SessionState.STARTING
    session: AgentSession[Any] | None = None
    context: AgentContext | None = None
    """What the agent was built from (a factory is called with it again on a reload)."""
    state_since: float = attrs.field(factory=time.time)
    _switch_listeners: list[Callable[[str], None]] = attrs.field(factory=list)

    def on_switch(self, listener: Callable[[str], None]) -> None:
        """Call `listener(version)` whenever the session switches code version."""
        self._switch_listeners.append(listener)

    def mark(self, state: SessionState) -> None:
        self.state = state
        self.state_since = time.time()

    def switch_version(self, version: str) -> None:
        """The session now runs code `version` (a reload strategy switched it)."""
        self.info = attrs.evolve(self.info, version=version)
        for listener in self._switch_listeners:
            listener(version)


@attrs.define
class SessionRegistry:
    _live: dict[str, LiveSession] = attrs.field(factory=dict)

    def open(self, info: SessionInfo) -> LiveSession:
        entry = LiveSession(info=info)
        self._live[info.job_id] = entry
        return entry

    def close(self, job_id: str) -> LiveSession | None:
        entry = self._live.pop(job_id, None)
        if entry is not None:
            entry.mark(SessionState.ENDED)
            # An ended session switches no more; its listeners (the session's own run)
            # would otherwise hold it in a reference cycle until a full collection.
            entry._switch_listeners.clear()
        return entry

    def get(self, job_id: str) -> LiveSession | None:
        return self._live.get(job_id)

    def by_agent(self, agent: str) -> list[LiveSession]:
        return [s for s in self._live.values() if s.info.agent == agent]

    def __iter__(self) -> Iterator[LiveSession]:
        return iter(list(self._live.values()))

    def __len__(self) -> int:
        return len(self._live)
