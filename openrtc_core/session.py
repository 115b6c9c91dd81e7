"""The session factory: the agent and its ``AgentSession`` for one job.

Options come in two layers, merged by :func:`openrtc_core.options.merge_options`: what the
pool configures for the agent (pool defaults, the agent's overrides) and what plugins
contribute (the shared VAD from prewarm, tenant provider keys and the like).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from livekit.agents import Agent, AgentSession

from . import _livekit
from .errors import PoolConfigError
from .models import AgentContext, JobView, PoolView, TenantContext
from .options import check_session_options, merge_options

if TYPE_CHECKING:
    from .plugins import PluginHost
    from .pool import AgentSpec

logger = logging.getLogger("openrtc.session")

PROVIDER_KEYS = ("llm", "stt", "tts", "vad")


def session_options(
    plugins: PluginHost,
    pool: PoolView,
    agent: str,
    *,
    job: JobView,
    tenant: TenantContext | None,
    userdata: Mapping[str, Any],
) -> dict[str, Any]:
    """The keyword arguments for this job's ``AgentSession``: configured, then contributed."""
    contributed = plugins.session_options(agent, tenant, job, pool, userdata)
    check_session_options(contributed, where=f"plugins' session options for {agent!r}")
    options = merge_options(pool.configured(agent), contributed)
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
