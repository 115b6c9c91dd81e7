"""OpenRTC core: many livekit Agents in one worker, extended through pluggy hooks."""

from ._version import __version__
from .errors import OpenRTCError, PluginLoadError, PoolConfigError, TargetError
from .hookspecs import hookimpl
from .isolation import IsolationBackend
from .models import (
    Admission,
    AgentContext,
    JobView,
    Outcome,
    PoolView,
    RouteDecision,
    SessionInfo,
    SessionOutcome,
    TenantContext,
)
from .pool import AGENT_ATTRIBUTE, AgentPool, AgentSpec
from .targets import agent

__all__ = [
    "AGENT_ATTRIBUTE",
    "Admission",
    "AgentContext",
    "AgentPool",
    "AgentSpec",
    "IsolationBackend",
    "JobView",
    "OpenRTCError",
    "Outcome",
    "PluginLoadError",
    "PoolConfigError",
    "PoolView",
    "RouteDecision",
    "SessionInfo",
    "SessionOutcome",
    "TargetError",
    "TenantContext",
    "__version__",
    "agent",
    "hookimpl",
]
