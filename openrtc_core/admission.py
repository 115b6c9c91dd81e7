"""livekit's ``on_request`` for a pool: route, resolve the tenant, admit, then accept.

Every refusal is a :class:`~openrtc_core.models.Verdict` and is logged once, naming the job,
its room and the reason. The handler and the entrypoint share one :class:`JobLedger` per
server: the tenant admission resolved, and which calls have ended, so a job that is only
shutting down holds no slot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from livekit.agents import AssignmentTimeoutError

from .errors import HookFailedError
from .logfields import REASON_LIMIT, bounded
from .models import (
    AGENT_ATTRIBUTE,
    DEPLOY_ATTRIBUTE,
    VERSION_ATTRIBUTE,
    JobView,
    Outcome,
    SessionOutcome,
    TenantContext,
    Verdict,
)
from .routing import Router, job_view

if TYPE_CHECKING:
    from livekit.agents import AgentServer, JobRequest

    from .plugins import PluginHost

logger = logging.getLogger("openrtc.worker")


def log_fields(
    job: JobView, agent: str = "", tenant: TenantContext | None = None
) -> dict[str, Any]:
    """The structured fields every log line about a job carries."""
    return {
        "job_id": job.job_id,
        "room": bounded(job.room_name),
        "agent": bounded(agent),
        "tenant": bounded(tenant.tenant_id) if tenant else "",
    }


@attrs.define
class JobLedger:
    """Per-job state the request handler and the entrypoint share, when jobs run here.

    A job holds a slot of ``max_sessions`` from its accept until its call ends: its session
    closed or its shutdown was asked for. livekit keeps the job listed while it shuts down
    (closing the session waits up to 2 s for a last transcript, shutdown callbacks run), but
    that job takes no new turn and needs no slot. With ``process`` isolation the entrypoint
    runs in the job process, so nothing is shared and a job counts until its process is done.
    """

    shares_tenants: bool = False
    released: Callable[[JobView, TenantContext | None, SessionOutcome | None], None] | None = None
    """Told when an admitted job holds no slot any more (``openrtc_job_released``)."""
    _tenants: dict[str, TenantContext | None] = attrs.field(init=False, factory=dict)
    _ended: set[str] = attrs.field(init=False, factory=set)
    _admitted: dict[str, tuple[JobView, TenantContext | None]] = attrs.field(
        init=False, factory=dict
    )
    _outcomes: dict[str, SessionOutcome] = attrs.field(init=False, factory=dict)

    def admitted(self, job: JobView, tenant: TenantContext | None) -> None:
        """Admission let `job` through: from now on it is released exactly once."""
        self._admitted[job.job_id] = (job, tenant)

    def release(self, job_id: str, outcome: SessionOutcome | None = None) -> None:
        found = self._admitted.pop(job_id, None)
        if found is not None and self.released is not None:
            self.released(found[0], found[1], outcome)

    def session_ended(self, job_id: str, outcome: SessionOutcome) -> None:
        """How the session ended, where it ran in this process (read when its job closes)."""
        if job_id in self._admitted:
            self._outcomes[job_id] = outcome

    def job_closed(self, job_id: str, failed: bool) -> None:
        """livekit closed the job's executor: the job holds no slot any more."""
        outcome = self._outcomes.pop(job_id, None)
        if outcome is None:
            outcome = SessionOutcome(outcome=Outcome.FAILED if failed else Outcome.COMPLETED)
        self.release(job_id, outcome)

    def hand_over(self, job_id: str, tenant: TenantContext | None) -> None:
        if self.shares_tenants:
            self._tenants[job_id] = tenant

    def take_tenant(self, job_id: str) -> tuple[bool, TenantContext | None]:
        """``(True, tenant)`` when admission handed this job's tenant over in this process."""
        if job_id in self._tenants:
            return True, self._tenants.pop(job_id)
        return False, None

    def forget(self, job_id: str) -> None:
        self._tenants.pop(job_id, None)

    def call_ended(self, job_id: str) -> None:
        self._ended.add(job_id)

    def calls(self, server: AgentServer) -> int:
        """Calls the worker holds: its listed jobs whose call has not ended."""
        listed = {job.job.id for job in server.active_jobs}
        self._ended &= listed
        if len(self._tenants) > 2 * len(listed) + 100:
            # Accepted, never launched: a tenant left behind (the entrypoint would resolve
            # it again if it ever came).
            self._tenants = {j: t for j, t in self._tenants.items() if j in listed}
        return len(listed) - len(self._ended)


class PoolRequestHandler:
    """livekit's ``on_request``: route, admit, then accept naming the agent."""

    def __init__(
        self,
        *,
        router: Router,
        plugins: PluginHost,
        server: AgentServer,
        session_cap: int | None,
        ledger: JobLedger,
        deploy: str = "",
    ) -> None:
        self.router = router
        self.plugins = plugins
        self.server = server
        self.session_cap = session_cap
        self.ledger = ledger
        self.deploy = deploy
        """The worker's deployment version, named on every job it accepts."""
        # Jobs between our accept and their launch; with the live calls they fill the cap.
        self._accepting: set[str] = set()

    def _attributes(self, agent: str) -> dict[str, str]:
        """The agent participant's attributes: the agent, the code version it runs and the
        worker's deployment version."""
        attributes = {AGENT_ATTRIBUTE: agent}
        version = self.router.view().version_of(agent)
        if version:
            attributes[VERSION_ATTRIBUTE] = version
        if self.deploy:
            attributes[DEPLOY_ATTRIBUTE] = self.deploy
        return attributes

    def _capacity(self) -> Verdict:
        cap = self.session_cap
        live = self.ledger.calls(self.server)
        if cap is None or live + len(self._accepting) < cap:
            return Verdict.admit()
        return Verdict.refuse(
            f"the worker is at max_sessions={cap}: {live} calls live and "
            f"{len(self._accepting)} being accepted (jobs only shutting down are not counted)",
            source="capacity",
        )

    async def __call__(self, req: JobRequest) -> None:
        try:
            job = job_view(req.job)
            routed = self.router.route(job)
        except Exception:
            logger.exception(
                "routing failed", extra={"job_id": req.id, "room": bounded(req.room.name)}
            )
            await req.reject(terminate=False)
            return
        if isinstance(routed, Verdict):
            await _reject(req, job, routed)
            return
        try:
            tenant = self.plugins.resolve_tenant(job)
        except HookFailedError as exc:
            # Whose call it is could not be told: the job never runs as no tenant.
            failed = Verdict.refuse(str(exc), source=exc.plugin)
            await _reject(req, job, failed, agent=routed.agent, by_plugin=True)
            return
        verdict = self.plugins.admit_job(job, routed, tenant)
        if not verdict.admitted:
            await _reject(req, job, verdict, agent=routed.agent, tenant=tenant, by_plugin=True)
            return
        # Admitted: whatever happens from here, the job is released exactly once.
        self.ledger.admitted(job, tenant)
        try:
            verdict = await self.plugins.claim_job(job, routed, tenant)
            by_plugin = True
            if verdict.admitted:
                verdict, by_plugin = self._capacity(), False
            if not verdict.admitted:
                self.ledger.release(job.job_id)
                await _reject(
                    req, job, verdict, agent=routed.agent, tenant=tenant, by_plugin=by_plugin
                )
                return
        except BaseException:
            self.ledger.release(job.job_id)
            raise
        logger.info(
            "accepting job for agent %s (%s)",
            bounded(routed.agent),
            bounded(routed.reason or routed.strategy, REASON_LIMIT),
            extra=log_fields(job, routed.agent, tenant),
        )
        # No await between the capacity check and this: two requests cannot both take the
        # last slot.
        self._accepting.add(job.job_id)
        self.ledger.hand_over(job.job_id, tenant)
        try:
            await req.accept(attributes=self._attributes(routed.agent))
        except AssignmentTimeoutError:
            # The server never assigned the accepted job (it lost it, or this worker is
            # going away): nothing runs here, and its slot is free again.
            self.ledger.forget(job.job_id)
            self.ledger.release(job.job_id)
            logger.warning(
                "job %s in room %s: accepted, but LiveKit did not assign it in time; it does "
                "not run here",
                job.job_id,
                bounded(job.room_name),
                extra=log_fields(job, routed.agent, tenant),
            )
        except BaseException:
            self.ledger.forget(job.job_id)
            self.ledger.release(job.job_id)
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
    source = bounded(verdict.source or "an admission plugin")
    by = f"refused by {source}: " if by_plugin else ""
    # A full worker is ordinary back-pressure (LiveKit offers the job elsewhere): info.
    log = logger.info if verdict.source == "capacity" else logger.warning
    log(
        "rejecting job %s in room %s: %s%s",
        job.job_id,
        bounded(job.room_name),
        by,
        bounded(verdict.reason, REASON_LIMIT),
        extra={**log_fields(job, agent, tenant), "terminate": verdict.terminate},
    )
    await req.reject(terminate=verdict.terminate)
