"""The callables the pool hands to livekit's AgentServer: request handler, entrypoint, prewarm.

The entrypoint and prewarm are picklable (they pickle the pool by reference), because
livekit's process executor ships them to each job process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from livekit.agents import AgentServer, AgentSession, JobContext, JobProcess, JobRequest
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.voice.events import CloseEvent, CloseReason

from . import _livekit
from .coroutine import FAILED_PREFIX
from .faults import FAULTS
from .models import (
    AgentContext,
    JobView,
    Outcome,
    RouteDecision,
    SessionInfo,
    SessionOutcome,
    SessionState,
    TenantContext,
)
from .pool import AGENT_ATTRIBUTE, AgentPool, AgentSpec
from .routing import SIMULATE_KEY, Rejection, job_view
from .session import build_agent, build_session, session_options
from .simulation import report_unstarted_call, start_simulated_call
from .watchdog import CURRENT_SESSION, SessionTag

logger = logging.getLogger("openrtc.worker")


class PoolServer(AgentServer):
    """livekit's AgentServer, telling plugins when the worker starts draining."""

    def __init__(self, pool: AgentPool, **options: Any) -> None:
        super().__init__(**options)
        self.openrtc_pool = pool

    async def drain(self, timeout: NotGivenOr[int | None] = NOT_GIVEN) -> None:
        if not self.draining:
            self.openrtc_pool.plugins.drain_started(self.openrtc_pool)
        await super().drain(timeout)


class PoolRequestHandler:
    """livekit's ``on_request``: route, admit, then accept naming the agent."""

    def __init__(self, pool: AgentPool, server: AgentServer, *, simulate: bool = False) -> None:
        self.pool = pool
        self.server = server
        self.simulate = simulate
        # Jobs between our accept and their launch; with the running ones they fill the cap.
        self._accepting: set[str] = set()

    def _over_capacity(self) -> bool:
        cap = self.pool.session_cap
        return cap is not None and len(self.server.active_jobs) + len(self._accepting) >= cap

    async def __call__(self, req: JobRequest) -> None:
        try:
            job = job_view(req.job, simulation=self.simulate)
            routed = self.pool.router.route(job)
        except Exception:
            logger.exception("routing failed", extra={"job_id": req.id, "room": req.room.name})
            await req.reject(terminate=False)
            return
        if isinstance(routed, Rejection):
            await _reject(req, job, routed.reason, terminate=routed.terminate)
            return
        tenant = self.pool.plugins.resolve_tenant(job)
        admission = self.pool.plugins.admit_job(job, routed, tenant)
        if not admission.admitted:
            source = admission.source or "an admission plugin"
            await _reject(
                req,
                job,
                f"refused by {source}: {admission.reason}",
                terminate=admission.terminate,
                agent=routed.agent,
            )
            return
        if self._over_capacity():
            running = len(self.server.active_jobs)
            reason = f"the worker is at max_sessions ({running} running)"
            await _reject(req, job, reason, terminate=False, agent=routed.agent)
            return
        logger.info(
            "accepting job for agent %s (%s)",
            routed.agent,
            routed.reason or routed.strategy,
            extra=_extra(job, routed.agent, tenant),
        )
        # No await between the capacity check and this: two requests cannot both take the
        # last slot.
        self._accepting.add(job.job_id)
        if self.pool.jobs_run_here:
            self.pool.admitted_tenants[job.job_id] = tenant
        try:
            await req.accept(attributes={AGENT_ATTRIBUTE: routed.agent})
        except BaseException:
            self.pool.admitted_tenants.pop(job.job_id, None)
            raise
        finally:
            self._accepting.discard(job.job_id)


async def _reject(
    req: JobRequest, job: JobView, reason: str, *, terminate: bool, agent: str = ""
) -> None:
    """Refuse a job with one log line naming it, its room and why."""
    logger.warning(
        "rejecting job %s in room %s: %s",
        job.job_id,
        job.room_name,
        reason,
        extra={"job_id": job.job_id, "room": job.room_name, "agent": agent, "terminate": terminate},
    )
    await req.reject(terminate=terminate)


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


class PoolEntrypoint:
    """livekit's job entrypoint: build the agent and its session, run it, report lifecycle."""

    def __init__(self, pool: AgentPool, *, simulate: bool = False) -> None:
        self.pool = pool
        self.simulate = simulate
        # Set by backends that run jobs themselves (coroutine); livekit's ProcPool otherwise.
        self.openrtc_job_pool: Callable[..., Any] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_entrypoint, (self.pool, self.simulate))

    async def __call__(self, ctx: JobContext) -> None:
        job = job_view(ctx.job, simulation=self.simulate)
        spec = self._agent_for(ctx, job)
        # The tenant admission saw, when the request was handled in this process; a job process
        # (process isolation) resolves it again from the same job.
        if job.job_id in self.pool.admitted_tenants:
            tenant = self.pool.admitted_tenants.pop(job.job_id)
        else:
            tenant = self.pool.plugins.resolve_tenant(job)
        await SessionRun(self.pool, spec, job, tenant, ctx).run()

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


class SessionRun:
    """One job's session, from building the agent to the session-ended notification."""

    def __init__(
        self,
        pool: AgentPool,
        spec: AgentSpec,
        job: JobView,
        tenant: TenantContext | None,
        ctx: JobContext,
    ) -> None:
        self.pool = pool
        self.spec = spec
        self.job = job
        self.tenant = tenant
        self.ctx = ctx
        self.info = SessionInfo(
            job_id=job.job_id,
            room_name=job.room_name,
            agent=spec.name,
            tenant=tenant,
            version=pool.settings.version,
        )
        self.entry = pool.sessions.open(self.info)
        self.extra = _extra(job, spec.name, tenant)
        self.failure = ""
        self.user_modules = frozenset({getattr(spec.target, "__module__", "") or ""})
        self._started = time.monotonic()
        self._ended = False
        ctx.add_shutdown_callback(self._on_shutdown)

    def end(self, outcome: Outcome, error: str = "") -> None:
        if self._ended:
            return
        self._ended = True
        self.pool.sessions.close(self.job.job_id)
        self.pool.plugins.session_ended(
            self.info,
            SessionOutcome(
                outcome=outcome, error=error, duration_s=time.monotonic() - self._started
            ),
        )

    async def _on_shutdown(self, reason: str) -> None:
        self.end(Outcome.FAILED if self.failure else Outcome.COMPLETED, self.failure)

    def fail(self, error: str) -> None:
        """End this session as failed (its job too); other sessions are not touched."""
        if self.failure or self._ended:
            return
        self.failure = error
        logger.error("session for agent %s failed: %s", self.spec.name, error, extra=self.extra)
        self.ctx.shutdown(reason=f"{FAILED_PREFIX}: {error}")

    def _watch(self, session: AgentSession[Any]) -> None:
        def on_close(event: CloseEvent) -> None:
            # A closed session does not end its job by itself; end it, failed on error.
            if event.reason == CloseReason.ERROR:
                self.fail(f"session closed on error: {event.error}")
            elif not self._ended:
                self.ctx.shutdown(reason=f"session closed: {event.reason.value}")

        session.on("close", on_close)

    def _session_started(self, session: AgentSession[Any]) -> None:
        self.entry.mark(SessionState.RUNNING)
        self.pool.plugins.session_started(self.info, session)
        logger.info("session started", extra=self.extra)

    async def run(self) -> None:
        tenant_id = self.tenant.tenant_id if self.tenant else ""
        CURRENT_SESSION.set(SessionTag(self.job.job_id, self.spec.name, tenant_id))
        _livekit.forget_loop_monitor_job(asyncio.get_running_loop())
        FAULTS.watch(self)
        try:
            agent = build_agent(
                self.spec,
                AgentContext(
                    job_id=self.job.job_id,
                    room_name=self.job.room_name,
                    agent=self.spec.name,
                    metadata=self.job.job_metadata,
                    tenant=self.tenant,
                ),
            )
            self.user_modules = self.user_modules | {type(agent).__module__}
            options = session_options(
                self.pool,
                self.spec,
                job=self.job,
                tenant=self.tenant,
                userdata=self.ctx.proc.userdata,
            )
            session = build_session(options)
            self.entry.session = session
            self._watch(session)
            greeting = self.spec.greeting_or(self.pool.settings.greeting)
            if self.job.simulated:
                await start_simulated_call(
                    self.ctx,
                    session,
                    agent,
                    info=self.info,
                    script=self.job.job_metadata[SIMULATE_KEY],
                    greeting=greeting,
                    on_failed=self.fail,
                )
                self._session_started(session)
                return
            await session.start(agent, room=self.ctx.room)
            self._session_started(session)
            if greeting:
                session.generate_reply(instructions=greeting)
        except asyncio.CancelledError:
            # A session that cancels itself would otherwise leave its job waiting forever.
            self.end(Outcome.CANCELLED)
            self.ctx.shutdown(reason="session cancelled")
            raise
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            logger.exception("session for agent %s failed", self.spec.name, extra=self.extra)
            self.end(Outcome.FAILED, self.failure)
            if self.job.simulated:
                await report_unstarted_call(self.ctx, self.info, self.failure)
            raise


def _rebuild_entrypoint(pool: AgentPool, simulate: bool) -> PoolEntrypoint:
    return PoolEntrypoint(pool, simulate=simulate)
