"""OpenRTC core: many livekit Agents in one worker, extended through pluggy hooks."""

from ._version import __version__
from .errors import OpenRTCError, PluginLoadError, PoolConfigError, TargetError
from .hookspecs import hookimpl
from .isolation import BackendTraits, IsolationBackend, JobPoolFactory, WorkerSpec
from .models import (
    AGENT_ATTRIBUTE,
    AgentContext,
    JobView,
    Outcome,
    PoolSettings,
    PoolView,
    RouteDecision,
    SessionInfo,
    SessionLaunch,
    SessionOutcome,
    TenantContext,
    Verdict,
)
from .options import merge_options
from .pool import AgentPool, AgentSpec
from .routing import job_view
from .server import build_server
from .targets import agent, discover_agents, load_pool, load_target

__all__ = [
    "AGENT_ATTRIBUTE",
    "AgentContext",
    "AgentPool",
    "AgentSpec",
    "BackendTraits",
    "IsolationBackend",
    "JobPoolFactory",
    "JobView",
    "OpenRTCError",
    "Outcome",
    "PluginLoadError",
    "PoolConfigError",
    "PoolSettings",
    "PoolView",
    "RouteDecision",
    "SessionInfo",
    "SessionLaunch",
    "SessionOutcome",
    "TargetError",
    "TenantContext",
    "Verdict",
    "WorkerSpec",
    "__version__",
    "agent",
    "build_server",
    "discover_agents",
    "hookimpl",
    "job_view",
    "load_pool",
    "load_target",
    "merge_options",
]
