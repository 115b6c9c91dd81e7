"""livekit's ``on_request`` for a pool: route, resolve the tenant, admit, then accept.

Every refusal is a :class:`~openrtc_core.models.Verdict` and is logged once, naming the job,
its room and the reason. The handler owns the per-job state it hands on: the slots of jobs
between accept and launch, and the tenant admission saw, for the entrypoint when jobs run in
this process.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from .models import AGENT_ATTRIBUTE, JobView, TenantContext, Verdict
from .routing import Router, job_view

if TYPE_CHECKING:
    from livekit.agents import AgentServer, JobRequest

    from .plugins import PluginHost

logger = logging.getLogger("openrtc.worker")

AdmittedTenants = MutableMapping[str, "TenantContext | None"]
"""Job id to the tenant admission resolved, from the request handler to the entrypoint."""


def log_fields(
    job: JobView, agent: str = "", tenant: TenantContext | None = None
) -> dict[str, Any]:
    """The structured fields every log line about a job carries."""
    return {
        "job_id": job.job_id,
        "room": job.room_name,
        "agent": agent,
        "tenant": tenant.tenant_id if tenant else "",
    }


class PoolRequestHandler:
    """livekit's ``on_request``: route, admit, then accept naming the agent."""

    def __init__(
        self,
        *,
        router: Router,
        plugins: PluginHost,
        server: AgentServer,
        session_cap: int | None,
        admitted: AdmittedTenants | None,
    ) -> None:
        self.router = router
        self.plugins = plugins
        self.server = server
        self.session_cap = session_cap
        # Given when jobs start in this process: the entrypoint takes each job's tenant here.
        self.admitted = admitted
        # Jobs between our accept and their launch; with the running ones they fill the cap.
        self._accepting: set[str] = set()

    def _forget_stale_tenants(self) -> None:
        # A job accepted but never launched leaves its entry behind; entries of jobs that are
        # neither live nor being accepted go (the entrypoint resolves again if it was wrong).
        assert self.admitted is not None
        if len(self.admitted) <= 2 * (self.session_cap or 50):
            return
        live = {j.job.id for j in self.server.active_jobs} | self._accepting
        for job_id in [j for j in self.admitted if j not in live]:
            del self.admitted[job_id]

    def _capacity(self) -> Verdict:
        cap = self.session_cap
        running = len(self.server.active_jobs)
        if cap is None or running + len(self._accepting) < cap:
            return Verdict.admit()
        return Verdict.refuse(
            f"the worker is at max_sessions={cap} ({running} running, "
            f"{len(self._accepting)} being accepted)",
            source="capacity",
        )

    async def __call__(self, req: JobRequest) -> None:
        try:
            job = job_view(req.job)
            routed = self.router.route(job)
        except Exception:
            logger.exception("routing failed", extra={"job_id": req.id, "room": req.room.name})
            await req.reject(terminate=False)
            return
        if isinstance(routed, Verdict):
            await _reject(req, job, routed)
            return
        tenant = self.plugins.resolve_tenant(job)
        verdict = self.plugins.admit_job(job, routed, tenant)
        if not verdict.admitted:
            await _reject(req, job, verdict, agent=routed.agent, tenant=tenant, by_plugin=True)
            return
        verdict = self._capacity()
        if not verdict.admitted:
            await _reject(req, job, verdict, agent=routed.agent, tenant=tenant)
            return
        logger.info(
            "accepting job for agent %s (%s)",
            routed.agent,
            routed.reason or routed.strategy,
            extra=log_fields(job, routed.agent, tenant),
        )
        # No await between the capacity check and this: two requests cannot both take the
        # last slot.
        self._accepting.add(job.job_id)
        if self.admitted is not None:
            self._forget_stale_tenants()
            self.admitted[job.job_id] = tenant
        try:
            await req.accept(attributes={AGENT_ATTRIBUTE: routed.agent})
        except BaseException:
            if self.admitted is not None:
                self.admitted.pop(job.job_id, None)
            raise
        finally:
            self._accepting.discard(job.job_id)


async def _reject(
    req: JobRequest,
    job: JobView,
    verdict: Verdict,
    *,
    agent: str = "",
    tenant: TenantContext | None = None,
    by_plugin: bool = False,
) -> None:
    """Refuse a job with one log line naming it, its room and why."""
    by = f"refused by {verdict.source or 'an admission plugin'}: " if by_plugin else ""
    logger.warning(
        "rejecting job %s in room %s: %s%s",
        job.job_id,
        job.room_name,
        by,
        verdict.reason,
        extra={**log_fields(job, agent, tenant), "terminate": verdict.terminate},
    )
    await req.reject(terminate=verdict.terminate)
