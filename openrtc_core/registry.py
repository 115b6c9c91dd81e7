"""The live-session registry: every session this process hosts, whatever the backend.

The session factory fills it; lifecycle hooks hand plugins the same ``SessionInfo``; reload,
tenancy, deploy and live-view plugins read it (``pool.sessions``). It lives in the process
that runs the session: the worker itself for coroutine isolation, the job process for
``process`` isolation.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from typing import Any

import attrs
from livekit.agents import AgentSession

from .models import SessionInfo, SessionState


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
    state_since: float = attrs.field(factory=time.time)

    def mark(self, state: SessionState) -> None:
        self.state = state
        self.state_since = time.time()


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
        return entry

    def get(self, job_id: str) -> LiveSession | None:
        return self._live.get(job_id)

    def by_agent(self, agent: str) -> list[LiveSession]:
        return [s for s in self._live.values() if s.info.agent == agent]

    def __iter__(self) -> Iterator[LiveSession]:
        return iter(list(self._live.values()))

    def __len__(self) -> int:
        return len(self._live)
