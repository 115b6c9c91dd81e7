"""The router: turns a job request into a routing decision through the routing hook."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs
from livekit.protocol import agent as agent_pb

from .metadata import parse_metadata
from .models import JobView, RouteDecision

SIMULATE_KEY = "openrtc.simulate"

if TYPE_CHECKING:
    from .pool import AgentPool

logger = logging.getLogger("openrtc.router")


def job_view(job: agent_pb.Job, *, simulation: bool = False) -> JobView:
    """Read what a livekit job carries into a frozen view, parsing metadata safely.

    `simulation` says the worker runs simulated jobs; the view is marked ``simulated`` when
    the job also carries a caller script.
    """
    job_metadata = parse_metadata(job.metadata, source="job metadata", job_id=job.id)
    return JobView(
        job_id=job.id,
        room_name=job.room.name,
        room_sid=job.room.sid,
        dispatch_agent_name=job.agent_name,
        job_metadata_raw=job.metadata,
        room_metadata_raw=job.room.metadata,
        job_metadata=job_metadata,
        room_metadata=parse_metadata(job.room.metadata, source="room metadata", job_id=job.id),
        dispatch_attributes=dict(job.attributes),
        simulated=simulation and SIMULATE_KEY in job_metadata,
    )


@attrs.frozen
class Rejection:
    """Why a job was not routed to an agent of this pool."""

    reason: str
    terminate: bool = False


@attrs.define
class Router:
    pool: AgentPool

    def route(self, job: JobView) -> RouteDecision | Rejection:
        """Pick the agent for `job`, or say why this worker should not take it."""
        view = self.pool.view()
        decision = self.pool.plugins.route_job(job, view)
        if decision is None:
            return Rejection(
                'no routing rule matched: set job or room metadata {"agent": "<name>"}, '
                "name the room '<agent>-...', or mark an agent default=True"
            )
        if not view.hosts(decision.agent):
            return Rejection(
                f"{decision.strategy} chose agent {decision.agent!r}, which this worker does not "
                f"host (hosted: {', '.join(sorted(view.agents))})"
            )
        return decision
