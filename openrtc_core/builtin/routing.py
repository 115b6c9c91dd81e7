"""The default routing chain: job metadata, room metadata, room-name prefix, default agent.

Each link is its own plugin (``openrtc.routing.<link>``), so one can be blocked with
``OPENRTC_DISABLE_PLUGINS`` and a third-party strategy can run before or after them.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Mapping
from typing import Any, Literal

from ..hookspecs import hookimpl
from ..logfields import bounded
from ..models import JobView, PoolView, RouteDecision

AGENT_KEY = "agent"

_PREFIX_SEPARATORS = re.compile(r"[-_]")


def _agent_from(metadata: Mapping[str, Any]) -> str | None:
    value = metadata.get(AGENT_KEY)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


class MetadataStrategy:
    """``{"agent": "<name>"}`` in the job (dispatch) metadata or the room metadata.

    Room metadata is read as it was when the job was offered.
    """

    def __init__(self, source: Literal["job", "room"]) -> None:
        self.source = source

    @hookimpl
    def openrtc_route_job(self, job: JobView) -> RouteDecision | None:
        metadata = job.job_metadata if self.source == "job" else job.room_metadata
        agent = _agent_from(metadata)
        if agent is None:
            return None
        return RouteDecision(
            agent=agent,
            strategy=f"{self.source}-metadata",
            reason=f"{self.source} metadata 'agent'",
        )


class RoomPrefixStrategy:
    """A room named ``<agent>-...`` or ``<agent>_...`` for a registered agent name.

    Agent names may themselves contain ``-`` and ``_``, so the longest registered name that
    is followed by a separator wins (``sales-eu-42`` picks ``sales-eu`` over ``sales``).
    """

    @hookimpl
    def openrtc_route_job(self, job: JobView, pool: PoolView) -> RouteDecision | None:
        room = job.room_name
        best: str | None = None
        for name in pool.agents:
            if (
                len(room) > len(name)
                and room.startswith(name)
                and _PREFIX_SEPARATORS.fullmatch(room[len(name)])
                and (best is None or len(name) > len(best))
            ):
                best = name
        if best is None:
            return None
        return RouteDecision(
            agent=best, strategy="room-prefix", reason=f"room name '{bounded(room)}'"
        )


class DefaultAgentStrategy:
    """The agent marked ``default=True`` on the pool, when no strategy chose one.

    A wrapper around the whole routing chain, so it applies after every strategy, including
    ``trylast`` ones registered later, without depending on registration order.
    """

    @hookimpl(wrapper=True)
    def openrtc_route_job(
        self, pool: PoolView
    ) -> Generator[None, RouteDecision | None, RouteDecision | None]:
        decision = yield
        if decision is not None or pool.default_agent is None:
            return decision
        return RouteDecision(
            agent=pool.default_agent, strategy="default-agent", reason="the pool's default agent"
        )


# Registration order matters within one tier: pluggy calls the last registered first.
STRATEGIES: list[tuple[str, object]] = [
    ("openrtc.routing.default-agent", DefaultAgentStrategy()),
    ("openrtc.routing.room-prefix", RoomPrefixStrategy()),
    ("openrtc.routing.room-metadata", MetadataStrategy("room")),
    ("openrtc.routing.job-metadata", MetadataStrategy("job")),
]
