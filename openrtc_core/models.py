"""Values that cross hook boundaries. All frozen: a plugin can read them, never mutate them."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import attrs

from .metadata import EMPTY

if TYPE_CHECKING:
    from livekit.agents import Agent, AgentSession, JobContext


AGENT_ATTRIBUTE: Final = "openrtc.agent"
"""The agent participant's attribute that names the agent a job was routed to."""
VERSION_ATTRIBUTE: Final = "openrtc.version"
"""The agent participant's attribute with the code version its session runs."""
DEPLOY_ATTRIBUTE: Final = "openrtc.deploy"
"""The agent participant's attribute with the deployment version of the worker that took
the job (see :mod:`openrtc_core.deployment`)."""


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if value is None:
        return EMPTY
    if isinstance(value, MappingProxyType):
        return value
    return MappingProxyType(dict(value))


def _frozen_options(
    value: Mapping[str, Mapping[str, Any]] | None,
) -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType({k: _frozen_mapping(v) for k, v in (value or {}).items()})


@attrs.frozen(kw_only=True)
class PoolSettings:
    """Worker-level settings of a pool (everything that is not a session option)."""

    agent_name: str = ""
    isolation: str = "coroutine"
    max_sessions: int | None = None
    greeting: str | None = None
    job_memory_limit_mb: float = 0
    job_memory_warn_mb: float = 1000
    server_options: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
    code_version: str = ""
    """The version of the pool's code (``AgentPool(code_version=)``) where no reload
    strategy stamps one per agent; not the deployment version (``--deploy-version``)."""


@attrs.frozen(kw_only=True)
class JobView:
    """What a job request carries, read once, before the job is accepted.

    `job_metadata` and `room_metadata` are the parsed JSON objects (empty when absent or
    malformed); the raw strings are kept for strategies that use another format.
    """

    job_id: str
    room_name: str
    room_sid: str = ""
    dispatch_agent_name: str = ""
    job_metadata_raw: str = ""
    room_metadata_raw: str = ""
    job_metadata: Mapping[str, Any] = attrs.field(default=EMPTY, converter=_frozen_mapping)
    room_metadata: Mapping[str, Any] = attrs.field(default=EMPTY, converter=_frozen_mapping)
    dispatch_attributes: Mapping[str, str] = attrs.field(default=EMPTY, converter=_frozen_mapping)


@attrs.frozen(kw_only=True)
class PoolView:
    """A pool as plugins see it: its agents, its default agent, each agent's session options.

    `options` maps each agent to its configured ``AgentSession`` keyword arguments: the
    pool defaults with that agent's overrides applied (see ``openrtc_core.options``), before
    any plugin contribution.
    """

    agents: frozenset[str]
    default_agent: str | None = None
    dispatch_name: str = ""
    isolation: str = "coroutine"
    code_version: str = ""
    options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, converter=_frozen_options)
    agent_versions: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    """Each agent's code version, where a reload strategy stamped one (see `version_of`)."""
    run_options: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
    """The values of the options plugins add (``openrtc_add_run_options``) for this run."""

    def hosts(self, name: str) -> bool:
        return name in self.agents

    def version_of(self, agent: str) -> str:
        """The version a new session of `agent` runs: its code version, else the pool's."""
        return self.agent_versions.get(agent) or self.code_version

    def configured(self, agent: str) -> Mapping[str, Any]:
        """The configured session options of `agent` (empty for an agent not hosted)."""
        return self.options.get(agent, EMPTY)


@attrs.frozen(kw_only=True)
class RouteDecision:
    """Which agent takes a job, and why (the reason appears in logs)."""

    agent: str = attrs.field(validator=attrs.validators.min_len(1))
    strategy: str
    reason: str = ""


@attrs.frozen(kw_only=True)
class Verdict:
    """Whether a job may run here. The one shape of every refusal: routing, admission, caps.

    `terminate=False` lets LiveKit offer the job to another worker; `terminate=True` says no
    worker could take it. `source` names who refused (a plugin, ``routing``, ``capacity``).
    """

    admitted: bool
    reason: str = ""
    terminate: bool = False
    source: str = ""

    @classmethod
    def admit(cls) -> Verdict:
        return _ADMIT

    @classmethod
    def refuse(cls, reason: str, *, terminate: bool = False, source: str = "") -> Verdict:
        return cls(admitted=False, reason=reason, terminate=terminate, source=source)


_ADMIT = Verdict(admitted=True)


@attrs.frozen(kw_only=True)
class TenantContext:
    """The tenant a job belongs to, as resolved by a tenancy plugin."""

    tenant_id: str = attrs.field(validator=attrs.validators.min_len(1))
    attributes: Mapping[str, Any] = attrs.field(default=EMPTY, converter=_frozen_mapping)


@attrs.frozen(kw_only=True)
class AgentContext:
    """What an agent factory receives: enough to build an Agent for this one job."""

    job_id: str
    room_name: str
    agent: str
    metadata: Mapping[str, Any] = attrs.field(default=EMPTY, converter=_frozen_mapping)
    tenant: TenantContext | None = None


class SessionState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    ENDING = "ending"
    """The call is over (its session closed or its job was asked to shut down); the job is
    still shutting down, and holds no slot of ``max_sessions``."""
    ENDED = "ended"


class Outcome(enum.Enum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@attrs.frozen(kw_only=True)
class SessionInfo:
    """One live session, as lifecycle hooks see it."""

    job_id: str
    room_name: str
    agent: str
    tenant: TenantContext | None = None
    version: str = ""
    """The code version the session started on: the agent's content hash when a reload
    strategy stamped one, else the pool's ``code_version=``. A reload may switch a live session
    to newer code; ``pool.sessions`` holds its current info."""
    deploy: str = ""
    """The deployment version of the worker running the session (``--deploy-version``,
    ``OPENRTC_DEPLOY_VERSION``, else its git commit or a content hash): it never changes
    during a call, while `version` may."""
    started_at: float = attrs.field(factory=time.time)


class ReloadKind(enum.Enum):
    APPLIED = "applied"
    """New code passed its checks and new calls get it; live sessions switch at their turn."""
    REJECTED = "rejected"
    """New code failed a check (or was rolled back before): nothing changed."""
    ROLLED_BACK = "rolled_back"
    """New code raised on a session's first turn: every session and new call is back on the
    previous code."""
    SWITCHED = "switched"
    """One live session switched code version at a turn boundary."""


@attrs.frozen(kw_only=True)
class ReloadEvent:
    """A reload strategy's report (``openrtc_code_reloaded``)."""

    kind: ReloadKind
    agents: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    """The changed files behind it, relative to the working directory where inside it."""
    versions: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    """Each agent's code version after the event."""
    previous: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    """Each agent's code version before it."""
    sessions: tuple[str, ...] = ()
    """Job ids of the live sessions it concerns (to switch, switched, sent back)."""
    error: str = ""
    """For ``rejected`` and ``rolled_back``: ``file:line: Type: message``."""


@attrs.frozen(kw_only=True)
class SessionOutcome:
    """How a session ended."""

    outcome: Outcome
    error: str = ""
    duration_s: float = 0.0
    provider_errors: int = 0
    """Unrecoverable errors the session's providers (STT, LLM, TTS) reported while it went on
    (livekit ends a session only after several in a row): a call that heard none of its
    replies can still have completed."""


@attrs.frozen(kw_only=True)
class SessionLaunch:
    """A routed job's agent and session, built and ready to start (``openrtc_start_session``).

    The default start joins the room (``session.start(agent, room=ctx.room)``) and greets.
    A plugin that starts the session another way (with no room, for a simulated caller)
    calls `mark_connected()` once the session is up, so livekit treats the job as connected,
    and `fail(error)` to end this session, and only it, as failed; `failure()` says whether
    (and why) the session has failed, for instance through an exception in the agent's code.
    """

    job: JobView
    info: SessionInfo
    ctx: JobContext
    agent: Agent
    session: AgentSession[Any]
    greeting: str | None
    fail: Callable[[str], None]
    mark_connected: Callable[[], None]
    failure: Callable[[], str]
    """Why the session failed, so far: "" while it has not."""
    version: Callable[[], str]
    """The code version the session runs now; a reload may switch it during the call."""
