"""OpenRTC core: many livekit Agents in one worker, extended through pluggy hooks."""

from ._livekit import run_turn
from ._version import __version__
from .builtin.prewarm import VAD_KEY as SHARED_VAD_KEY
from .cores import usable_cores
from .deployment import (
    VERSION_ENV,
    VERSION_FLAG,
    DeployVersion,
    deploy_version,
    pool_source_dir,
    resolve_deploy_version,
)
from .errors import HookFailedError, OpenRTCError, PluginLoadError, PoolConfigError, TargetError
from .hookspecs import (
    AddRunOption,
    HookContract,
    OnFailure,
    ProcessRole,
    contract_of,
    hookimpl,
)
from .identity import WorkerIdentity, worker_identity
from .isolation import BackendTraits, IsolationBackend, JobPoolFactory, WorkerSpec
from .logfields import REASON_LIMIT, bounded
from .models import (
    AGENT_ATTRIBUTE,
    DEPLOY_ATTRIBUTE,
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
from .processes import child_pids, exit_reason, process_tree, pss_mib, smaps_rollup, tree_pss_mib
from .registry import LiveSession
from .routing import job_view
from .runoptions import RUN_VERBS, RunContext, RunOption, RunOptions
from .server import build_server
from .session import build_agent
from .supervision import drain_when_parent_dies, prewarm_before_fork
from .targets import agent, discover_agents, load_pool, load_pool_again, load_target

__all__ = [
    "AGENT_ATTRIBUTE",
    "DEPLOY_ATTRIBUTE",
    "REASON_LIMIT",
    "RUN_VERBS",
    "SHARED_VAD_KEY",
    "VERSION_ATTRIBUTE",
    "VERSION_ENV",
    "VERSION_FLAG",
    "AddRunOption",
    "AgentContext",
    "AgentPool",
    "AgentSpec",
    "BackendTraits",
    "DeployVersion",
    "HookContract",
    "HookFailedError",
    "IsolationBackend",
    "JobPoolFactory",
    "JobView",
    "LiveSession",
    "OnFailure",
    "OpenRTCError",
    "Outcome",
    "PluginLoadError",
    "PoolChange",
    "PoolConfigError",
    "PoolSettings",
    "PoolState",
    "PoolView",
    "ProcessRole",
    "ReloadEvent",
    "ReloadKind",
    "RouteDecision",
    "RunContext",
    "RunOption",
    "RunOptions",
    "SessionInfo",
    "SessionLaunch",
    "SessionOutcome",
    "TargetError",
    "TenantContext",
    "Verdict",
    "WorkerIdentity",
    "WorkerSpec",
    "__version__",
    "agent",
    "bounded",
    "build_agent",
    "build_server",
    "child_pids",
    "contract_of",
    "deploy_version",
    "discover_agents",
    "drain_when_parent_dies",
    "exit_reason",
    "hookimpl",
    "job_view",
    "load_pool",
    "load_pool_again",
    "load_target",
    "merge_options",
    "pool_source_dir",
    "prewarm_before_fork",
    "process_tree",
    "pss_mib",
    "resolve_deploy_version",
    "resolve_reference",
    "run_turn",
    "smaps_rollup",
    "tree_pss_mib",
    "usable_cores",
    "worker_identity",
]
