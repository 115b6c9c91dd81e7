"""The session factory: configured options, plugin contributions, the shared VAD, the agent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from livekit.agents import Agent

from openrtc_core import AgentContext, AgentPool, JobView, PoolConfigError, PoolView, hookimpl
from openrtc_core.builtin.prewarm import VAD_KEY
from openrtc_core.session import build_agent, session_options
from openrtc_testing import ScriptedLLM, ScriptedVAD

JOB = JobView(job_id="AJ_1", room_name="room-1")


class Plain(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Answer.")


class TaggedVAD(ScriptedVAD):
    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag


class Contributes:
    def __init__(self, **options: Any) -> None:
        self.options = options
        self.seen: list[Mapping[str, Any]] = []

    @hookimpl
    def openrtc_session_options(
        self, agent: str, pool: PoolView, userdata: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        self.seen.append(dict(pool.configured(agent)))
        return self.options


def _options(pool: AgentPool, agent: str, userdata: Mapping[str, Any] | None = None) -> Any:
    return session_options(
        pool.plugins, pool.view(), agent, job=JOB, tenant=None, userdata=userdata or {}
    )


def test_pool_defaults_then_agent_overrides_then_plugin_contributions() -> None:
    first = Contributes(max_tool_steps=7, user_away_timeout=3.0)
    second = Contributes(max_tool_steps=9, min_endpointing_delay=0.2)
    pool = AgentPool(
        load_plugins=False, plugins=[first, second], max_tool_steps=1, user_away_timeout=1.0
    )
    pool.add("plain", Plain, user_away_timeout=2.0)
    options = _options(pool, "plain")
    # pluggy calls the later-registered plugin first; the earliest-called one wins a key.
    assert options["max_tool_steps"] == 9
    assert options["min_endpointing_delay"] == 0.2
    assert options["user_away_timeout"] == 3.0
    # Each plugin saw what the pool configures for the agent: defaults with its overrides.
    assert first.seen == [{"max_tool_steps": 1, "user_away_timeout": 2.0}]


def test_the_shared_vad_goes_only_to_agents_configured_without_one() -> None:
    own = TaggedVAD("own")
    shared = TaggedVAD("shared")
    pool = AgentPool(load_plugins=False, llm=ScriptedLLM())
    pool.add("plain", Plain)
    pool.add("own-vad", Plain, vad=own)
    userdata = {VAD_KEY: shared}
    # Each session gets its own view of a shared provider (a copy keeping its attributes).
    assert _options(pool, "plain", userdata)["vad"].tag == "shared"
    assert _options(pool, "own-vad", userdata)["vad"].tag == "own"
    assert "vad" not in _options(pool, "plain", {})  # nothing prewarmed, nothing contributed


def test_a_contribution_the_session_does_not_take_names_the_key() -> None:
    pool = AgentPool(load_plugins=False, plugins=[Contributes(llm_typo="x")])
    pool.add("plain", Plain)
    with pytest.raises(PoolConfigError, match=r"plugins' session options for 'plain'.*llm_typo"):
        _options(pool, "plain")


def not_an_agent(ctx: AgentContext) -> Any:
    return "not an agent"


def test_a_factory_must_return_an_agent() -> None:
    pool = AgentPool(load_plugins=False)
    spec = pool.add("broken", not_an_agent)
    context = AgentContext(job_id="AJ_1", room_name="room-1", agent="broken")
    with pytest.raises(PoolConfigError, match="factory for agent 'broken' returned str"):
        build_agent(spec, context)
    assert isinstance(build_agent(pool.add("plain", Plain), context), Plain)
