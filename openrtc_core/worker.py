"""The callables the pool hands to livekit's AgentServer: request handler, entrypoint, prewarm.

The entrypoint and prewarm are picklable (they pickle the pool by reference), because
livekit's process executor ships them to each job process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from livekit.agents import JobContext, JobProcess, JobRequest

from . import _livekit
from .models import (
    AgentContext,
    JobView,
    Outcome,
    RouteDecision,
    SessionInfo,
    SessionOutcome,
    TenantContext,
)
from .pool import AGENT_ATTRIBUTE, AgentPool, AgentSpec
from .routing import SIMULATE_KEY, Rejection, job_view
from .session import build_agent, build_session, session_options
from .simulation import run_simulated_call

logger = logging.getLogger("openrtc.worker")


class PoolRequestHandler:
    """livekit's ``on_request``: route, admit, then accept naming the agent."""

    def __init__(self, pool: AgentPool, *, simulate: bool = False) -> None:
        self.pool = pool
        self.simulate = simulate

    async def __call__(self, req: JobRequest) -> None:
        try:
            job = job_view(req.job, simulation=self.simulate)
            routed = self.pool.router.route(job)
        except Exception:
            logger.exception("routing failed", extra={"job_id": req.id, "room": req.room.name})
            await req.reject(terminate=False)
            return
        if isinstance(routed, Rejection):
            _log_rejection(job, routed.reason, terminate=routed.terminate)
            await req.reject(terminate=routed.terminate)
            return
        tenant = self.pool.plugins.resolve_tenant(job)
        admission = self.pool.plugins.admit_job(job, routed, tenant)
        if not admission.admitted:
            _log_rejection(
                job,
                f"refused by {admission.source or 'an admission plugin'}: {admission.reason}",
                terminate=admission.terminate,
                agent=routed.agent,
            )
            await req.reject(terminate=admission.terminate)
            return
        logger.info(
            "accepting job for agent %s (%s)",
            routed.agent,
            routed.reason or routed.strategy,
            extra=_extra(job, routed.agent, tenant),
        )
        await req.accept(attributes={AGENT_ATTRIBUTE: routed.agent})


def _log_rejection(job: JobView, reason: str, *, terminate: bool, agent: str = "") -> None:
    logger.warning(
        "rejecting job %s in room %s: %s",
        job.job_id,
        job.room_name,
        reason,
        extra={"job_id": job.job_id, "room": job.room_name, "agent": agent, "terminate": terminate},
    )


def _extra(job: JobView, agent: str, tenant: TenantContext | None) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "room": job.room_name,
        "agent": agent,
        "tenant": tenant.tenant_id if tenant else "",
    }


class PoolPrewarm:
    """livekit's ``setup_fnc``: runs every plugin's prewarm contribution once per process."""

    def __init__(self, pool: AgentPool) -> None:
        self.pool = pool

    def __call__(self, proc: JobProcess) -> None:
        self.pool.plugins.prewarm(proc, self.pool)

    def __reduce__(self) -> tuple[Any, ...]:
        return (PoolPrewarm, (self.pool,))


class PoolEntrypoint:
    """livekit's job entrypoint: build the agent and its session, run it, report lifecycle."""

    def __init__(self, pool: AgentPool, *, simulate: bool = False) -> None:
        self.pool = pool
        self.simulate = simulate

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_entrypoint, (self.pool, self.simulate))

    async def __call__(self, ctx: JobContext) -> None:
        pool = self.pool
        job = job_view(ctx.job, simulation=self.simulate)
        spec = self._agent_for(ctx, job)
        tenant = pool.plugins.resolve_tenant(job)
        extra = _extra(job, spec.name, tenant)
        info = SessionInfo(
            job_id=job.job_id, room_name=job.room_name, agent=spec.name, tenant=tenant
        )
        started = time.monotonic()
        outcome = SessionOutcome(outcome=Outcome.COMPLETED)
        ended = False

        def finish(result: SessionOutcome) -> None:
            nonlocal ended
            if not ended:
                ended = True
                pool.plugins.session_ended(info, result)

        async def on_shutdown(reason: str) -> None:
            finish(
                SessionOutcome(
                    outcome=outcome.outcome,
                    error=outcome.error,
                    duration_s=time.monotonic() - started,
                )
            )

        ctx.add_shutdown_callback(on_shutdown)
        try:
            agent = build_agent(
                spec,
                AgentContext(
                    job_id=job.job_id,
                    room_name=job.room_name,
                    agent=spec.name,
                    metadata=job.job_metadata,
                    tenant=tenant,
                ),
            )
            options = session_options(
                pool, spec, job=job, tenant=tenant, userdata=ctx.proc.userdata
            )
            session = build_session(options)
            greeting = spec.greeting_or(pool.settings.greeting)
            if job.simulated:
                await run_simulated_call(
                    ctx,
                    session,
                    agent,
                    info=info,
                    script=job.job_metadata[SIMULATE_KEY],
                    greeting=greeting,
                    on_started=lambda: pool.plugins.session_started(info, session),
                )
                return
            await session.start(agent, room=ctx.room)
            pool.plugins.session_started(info, session)
            logger.info("session started", extra=extra)
            if greeting:
                session.generate_reply(instructions=greeting)
        except asyncio.CancelledError:
            outcome = SessionOutcome(outcome=Outcome.CANCELLED)
            finish(SessionOutcome(outcome=Outcome.CANCELLED, duration_s=time.monotonic() - started))
            raise
        except Exception as exc:
            outcome = SessionOutcome(outcome=Outcome.FAILED, error=f"{type(exc).__name__}: {exc}")
            logger.exception("session for agent %s failed", spec.name, extra=extra)
            finish(
                SessionOutcome(
                    outcome=Outcome.FAILED,
                    error=outcome.error,
                    duration_s=time.monotonic() - started,
                )
            )
            raise

    def _agent_for(self, ctx: JobContext, job: JobView) -> AgentSpec:
        name = _livekit.accept_attributes(ctx).get(AGENT_ATTRIBUTE)
        if name:
            return self.pool.get(name)
        # No request step ran (console mode, simulate_job): route here, then fall back to the
        # only agent.
        routed = self.pool.router.route(job)
        if isinstance(routed, RouteDecision):
            return self.pool.get(routed.agent)
        agents = list(self.pool.agents.values())
        if len(agents) == 1:
            return agents[0]
        raise RuntimeError(
            f"job {job.job_id} reached the worker without a routing decision and the pool hosts "
            f"{len(agents)} agents; mark one default=True so console and connect runs know "
            "which agent to start."
        )


def _rebuild_entrypoint(pool: AgentPool, simulate: bool) -> PoolEntrypoint:
    return PoolEntrypoint(pool, simulate=simulate)
