"""OpenRTC core: many livekit Agents in one worker, extended through pluggy hooks."""

from ._version import __version__
from .errors import OpenRTCError, PluginLoadError, PoolConfigError, TargetError
from .hookspecs import hookimpl
from .identity import WorkerIdentity, worker_identity
from .isolation import BackendTraits, IsolationBackend, JobPoolFactory, WorkerSpec
from .models import (
    AGENT_ATTRIBUTE,
    VERSION_ATTRIBUTE,
    AgentContext,
    JobView,
    Outcome,
    PoolSettings,
    PoolView,
    ReloadEvent,
    ReloadKind,
    RouteDecision,
    SessionInfo,
    SessionLaunch,
    SessionOutcome,
    TenantContext,
    Verdict,
)
from .options import merge_options
from .origins import resolve as resolve_reference
from .pool import AgentPool, AgentSpec, PoolChange, PoolState
from .registry import LiveSession
from .reloading import ReloadContext, Reloader
from .routing import job_view
from .server import build_server
from .session import build_agent
from .supervision import Supervisor, SupervisorContext, WorkerPlan, prewarm_before_fork
from .targets import agent, discover_agents, load_pool, load_pool_again, load_target

__all__ = [
    "AGENT_ATTRIBUTE",
    "VERSION_ATTRIBUTE",
    "AgentContext",
    "AgentPool",
    "AgentSpec",
    "BackendTraits",
    "IsolationBackend",
    "JobPoolFactory",
    "JobView",
    "LiveSession",
    "OpenRTCError",
    "Outcome",
    "PluginLoadError",
    "PoolChange",
    "PoolConfigError",
    "PoolSettings",
    "PoolState",
    "PoolView",
    "ReloadContext",
    "ReloadEvent",
    "ReloadKind",
    "Reloader",
    "RouteDecision",
    "SessionInfo",
    "SessionLaunch",
    "SessionOutcome",
    "Supervisor",
    "SupervisorContext",
    "TargetError",
    "TenantContext",
    "Verdict",
    "WorkerIdentity",
    "WorkerPlan",
    "WorkerSpec",
    "__version__",
    "agent",
    "build_agent",
    "build_server",
    "discover_agents",
    "hookimpl",
    "job_view",
    "load_pool",
    "load_pool_again",
    "load_target",
    "merge_options",
    "prewarm_before_fork",
    "resolve_reference",
    "worker_identity",
]
