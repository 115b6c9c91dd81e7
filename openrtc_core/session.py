"""The session factory: one ``AgentSession`` per job from defaults, overrides and plugins."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from livekit.agents import Agent, AgentSession

from . import _livekit
from .errors import PoolConfigError
from .models import AgentContext, JobView, TenantContext
from .options import check_session_options, merge_options
from .pool import AgentPool, AgentSpec
from .prewarm import VAD_KEY

logger = logging.getLogger("openrtc.session")

PROVIDER_KEYS = ("llm", "stt", "tts", "vad")


def session_options(
    pool: AgentPool,
    spec: AgentSpec,
    *,
    job: JobView,
    tenant: TenantContext | None,
    userdata: Mapping[Any, Any],
) -> dict[str, Any]:
    """The keyword arguments for this job's ``AgentSession``.

    Layers, later winning key by key: the shared VAD loaded at prewarm, pool defaults, the
    agent's overrides, then what plugins contribute (tenant provider keys and the like).
    """
    shared: dict[str, Any] = {}
    if VAD_KEY in userdata:
        shared["vad"] = userdata[VAD_KEY]
    contributed = pool.plugins.session_options(spec.name, tenant, job, pool)
    check_session_options(contributed, where=f"plugins' session options for {spec.name!r}")
    options = merge_options(shared, pool.session_defaults, spec.overrides, contributed)
    # Provider objects are shared by every session of the pool; each session gets its own
    # view of them so one call's metrics and errors never reach another (see _livekit).
    for key in PROVIDER_KEYS:
        if key in options:
            options[key] = _livekit.session_view(options[key])
    return options


def build_agent(spec: AgentSpec, context: AgentContext) -> Agent:
    """Instantiate the agent: the class with no arguments, or the factory with `context`."""
    target = spec.target
    if isinstance(target, type):
        instance: Agent = target()
        return instance
    agent: object = target(context)
    if not isinstance(agent, Agent):
        raise PoolConfigError(
            f"the factory for agent {spec.name!r} returned {type(agent).__qualname__}, not a "
            "livekit Agent; make it return an instance of an Agent subclass."
        )
    return agent


def build_session(options: Mapping[str, Any]) -> AgentSession[Any]:
    return AgentSession(**options)
