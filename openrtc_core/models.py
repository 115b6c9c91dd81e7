"""Values that cross hook boundaries. All frozen: a plugin can read them, never mutate them."""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from .metadata import EMPTY


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if value is None:
        return EMPTY
    if isinstance(value, MappingProxyType):
        return value
    return MappingProxyType(dict(value))


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
    simulated: bool = False
    """True only in a worker started with simulation on, for a job carrying a caller script."""


@attrs.frozen(kw_only=True)
class PoolView:
    """The agents a worker hosts, as routing strategies see them."""

    agents: frozenset[str]
    default_agent: str | None = None
    dispatch_name: str = ""

    def hosts(self, name: str) -> bool:
        return name in self.agents


@attrs.frozen(kw_only=True)
class RouteDecision:
    """Which agent takes a job, and why (the reason appears in logs)."""

    agent: str = attrs.field(validator=attrs.validators.min_len(1))
    strategy: str
    reason: str = ""


@attrs.frozen(kw_only=True)
class TenantContext:
    """The tenant a job belongs to, as resolved by a tenancy plugin."""

    tenant_id: str = attrs.field(validator=attrs.validators.min_len(1))
    attributes: Mapping[str, Any] = attrs.field(default=EMPTY, converter=_frozen_mapping)


@attrs.frozen(kw_only=True)
class Admission:
    """An admission hook's verdict. `terminate=False` lets LiveKit offer the job elsewhere."""

    admitted: bool
    reason: str = ""
    terminate: bool = False
    source: str = ""

    @classmethod
    def reject(cls, reason: str, *, terminate: bool = False, source: str = "") -> Admission:
        return cls(admitted=False, reason=reason, terminate=terminate, source=source)


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
    started_at: float = attrs.field(factory=time.time)


@attrs.frozen(kw_only=True)
class SessionOutcome:
    """How a session ended."""

    outcome: Outcome
    error: str = ""
    duration_s: float = 0.0
