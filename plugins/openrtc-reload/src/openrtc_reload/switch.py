"""Switching one live session to new agent code at its next turn boundary.

The session keeps its ``Agent`` instance, so what the call built up stays: the chat history,
the userdata, the attributes the agent set on itself. What changes is the code: the instance
becomes an instance of the new class (``*_node`` methods, ``on_user_turn_completed``, tools
and helper methods are looked up on the class at each turn), and it takes the new
instructions and tools through livekit's public ``update_instructions``/``update_tools``.
Attributes the new constructor sets that the instance lacks are added. ``on_enter`` does not
run again: the caller is not greeted twice.

Not switched: the speech-to-text node (livekit binds it once, when the session starts) and
providers chosen by the agent's constructor (``llm=`` on the Agent): new calls get those.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import attrs
from livekit.agents import Agent, AgentSession, llm
from livekit.agents.voice.events import AgentStateChangedEvent

from openrtc_core import AgentContext, AgentSpec, LiveSession, build_agent

logger = logging.getLogger("openrtc.reload")

BOUNDARY_STATES = ("listening", "idle")
"""Agent states between turns: no reply is being thought of or spoken."""
REPLY_STATES = ("thinking", "speaking")


@attrs.frozen
class Snapshot:
    """The code a session ran before a switch: what a rollback puts back."""

    cls: type[Agent]
    instructions: Any
    tools: tuple[Any, ...]
    version: str


def tools_for(agent: Agent, fresh: Agent) -> list[Any]:
    """`fresh`'s tools, with the ones its class defines bound to the live `agent` instead.

    Found on the class, not the instance: listing a live agent's members would read
    properties that raise outside (or inside) a running session.
    """
    cls = type(fresh)
    defined = llm.find_function_tools(cls)
    own = {tool.id for tool in defined}
    given = [tool for tool in fresh.tools if getattr(tool, "id", None) not in own]
    return [*given, *(_bound(tool, agent, cls) for tool in defined)]


def _bound(tool: Any, agent: Agent, cls: type[Agent]) -> Any:
    get = getattr(type(tool), "__get__", None)
    return get(tool, agent, cls) if get is not None else tool


async def become(agent: Agent, cls: type[Agent], instructions: Any, tools: list[Any]) -> None:
    """Make the live `agent` run `cls`'s code with `instructions` and `tools`."""
    agent.__class__ = cls
    await agent.update_instructions(instructions)
    await agent.update_tools(tools)


class LiveCode:
    """The code one live session runs: switches waiting for a turn boundary, and the first
    turn on new code, watched so a failure there can send the session back."""

    def __init__(
        self,
        entry: LiveSession,
        session: AgentSession[Any],
        *,
        on_switched: Callable[[LiveCode, str, str], None],
        probation: bool = False,
    ) -> None:
        self.entry = entry
        self.session = session
        self.on_switched = on_switched
        self.history: list[Snapshot] = []
        self.pending: AgentSpec | None = None
        self.probation = probation
        """The session's current code is new and its first turn has not completed."""
        self.sent_back = False
        """A rollback sent this session back; a turn of the bad code still under way may
        fail after that, and is answered by the previous code instead of ending the call."""
        self._turn_started = False
        self._task: asyncio.Task[None] | None = None
        session.on("agent_state_changed", self._on_state)

    @property
    def job_id(self) -> str:
        return self.entry.info.job_id

    @property
    def version(self) -> str:
        return self.entry.info.version

    def close(self) -> None:
        self.session.off("agent_state_changed", self._on_state)
        self.pending = None

    def at_boundary(self) -> bool:
        return self.session.agent_state in BOUNDARY_STATES and self.session.current_speech is None

    def request(self, spec: AgentSpec) -> None:
        """Run `spec`'s code from the next turn on (now, if no reply is under way)."""
        self.pending = spec
        if self.at_boundary():
            self._start()

    def _on_state(self, event: AgentStateChangedEvent) -> None:
        if event.new_state in REPLY_STATES:
            self._turn_started = True
        elif event.new_state in BOUNDARY_STATES:
            if self._turn_started:
                self.probation = False  # a whole turn ran on this code
                self.sent_back = False
            if self.pending is not None:
                self._start()

    def _start(self) -> None:
        if self._task is not None and not self._task.done():
            return  # a switch is under way; it takes the latest pending spec when done
        spec, self.pending = self.pending, None
        if spec is not None:
            self._task = asyncio.ensure_future(self._switch(spec))

    def _context(self) -> AgentContext:
        info = self.entry.info
        return self.entry.context or AgentContext(
            job_id=info.job_id, room_name=info.room_name, agent=info.agent
        )

    async def _switch(self, spec: AgentSpec) -> None:
        agent = self.session.current_agent
        before = self.version
        try:
            fresh = build_agent(spec, self._context())
            snapshot = Snapshot(type(agent), agent.instructions, tuple(agent.tools), before)
            await become(agent, type(fresh), fresh.instructions, tools_for(agent, fresh))
        except Exception as exc:
            logger.error(
                "session %s (agent %s) stays on version %s: switching it to %s failed: %s: %s",
                self.job_id,
                self.entry.info.agent,
                before,
                spec.version,
                type(exc).__name__,
                exc,
            )
            return
        for key, value in vars(fresh).items():
            if key not in vars(agent):
                setattr(agent, key, value)
        self.history.append(snapshot)
        self._enter(spec.version)
        self.on_switched(self, before, spec.version)
        if self.pending is not None and self.at_boundary():
            self._start()

    def _enter(self, version: str) -> None:
        self.entry.switch_version(version)
        self.probation = True
        self._turn_started = False

    async def revert(self, previous: AgentSpec | None) -> bool:
        """Back to the code this session ran before its current version (or `previous`,
        for a session that started on it); False when there is nothing to go back to."""
        self.pending = None
        self.sent_back = True
        self._turn_started = self.session.agent_state in REPLY_STATES
        agent = self.session.current_agent
        if self.history:
            snapshot = self.history.pop()
            await become(agent, snapshot.cls, snapshot.instructions, list(snapshot.tools))
            self.entry.switch_version(snapshot.version)
        elif previous is not None:
            fresh = build_agent(previous, self._context())
            await become(agent, type(fresh), fresh.instructions, tools_for(agent, fresh))
            self.entry.switch_version(previous.version)
        else:
            return False
        self.probation = False
        return True
