"""The router: reads a job request into a frozen view and asks the routing hook for an agent."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
from livekit.protocol import agent as agent_pb

from .logfields import bounded
from .metadata import parse_metadata
from .models import JobView, PoolView, RouteDecision, Verdict

if TYPE_CHECKING:
    from .plugins import PluginHost

logger = logging.getLogger("openrtc.router")

NO_ROUTE = (
    'no routing rule matched: set job or room metadata {"agent": "<name>"}, '
    "name the room '<agent>-...', or mark an agent default=True"
)


def job_view(job: agent_pb.Job, *, warn: bool = True) -> JobView:
    """Read what a livekit job carries into a frozen view, parsing metadata safely.

    Bad metadata is warned about once per job: by the request handler, or where the job runs
    when no request step ran (`warn=False` everywhere else).
    """
    return JobView(
        job_id=job.id,
        room_name=job.room.name,
        room_sid=job.room.sid,
        dispatch_agent_name=job.agent_name,
        job_metadata_raw=job.metadata,
        room_metadata_raw=job.room.metadata,
        job_metadata=parse_metadata(job.metadata, source="job metadata", job_id=job.id, warn=warn),
        room_metadata=parse_metadata(
            job.room.metadata, source="room metadata", job_id=job.id, warn=warn
        ),
        dispatch_attributes=dict(job.attributes),
    )


@attrs.define
class Router:
    """Routes jobs to the agents of one pool; `view` returns the pool as hooks see it."""

    plugins: PluginHost
    view: Callable[[], PoolView]

    def route(self, job: JobView) -> RouteDecision | Verdict:
        """The agent for `job`, or a refusal saying why this worker should not take it."""
        view = self.view()
        decision = self.plugins.route_job(job, view)
        if decision is None:
            return Verdict.refuse(NO_ROUTE, source="routing")
        if not view.hosts(decision.agent):
            return Verdict.refuse(
                f"{bounded(decision.strategy)} chose agent '{bounded(decision.agent)}', which this "
                "worker does not "
                f"host (hosted: {', '.join(sorted(view.agents))})",
                source="routing",
            )
        return decision
