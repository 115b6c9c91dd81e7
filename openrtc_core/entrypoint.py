"""Where a job runs: livekit's entrypoint and prewarm for a pool, and one job's session.

Both are picklable (they pickle the pool by reference, see :mod:`openrtc_core.origins`),
because livekit's process executor ships them to each job process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from livekit.agents import AgentSession, JobContext, JobProcess
from livekit.agents.voice.events import CloseEvent, CloseReason, ErrorEvent

from . import _livekit
from .admission import JobLedger, log_fields
from .errors import HookFailedError
from .faults import FAULTS, contain_exits
from .isolation.base import JobPoolFactory, failed_reason
from .logfields import REASON_LIMIT, bounded
from .models import (
    AGENT_ATTRIBUTE,
    VERSION_ATTRIBUTE,
    AgentContext,
    JobView,
    Outcome,
    RouteDecision,
    SessionInfo,
    SessionLaunch,
    SessionOutcome,
    SessionState,
    TenantContext,
)
from .registry import CURRENT_SESSION, SessionTag
from .routing import Router, job_view
from .runoptions import RunOptions
from .session import build_agent, build_session, session_options

if TYPE_CHECKING:
    from .hookspecs import ProcessRole
    from .pool import AgentPool, AgentSpec

logger = logging.getLogger("openrtc.worker")


def register_worker_plugins(pool: AgentPool, plugins: Sequence[object]) -> None:
    """Register plugins given for one worker (``create_server(plugins=...)``) on the pool."""
    pool.plugins.use_worker_plugins(plugins)


class PoolPrewarm:
    """livekit's ``setup_fnc``: every plugin's prewarm, once per process that runs jobs."""

    def __init__(self, pool: AgentPool, plugins: Sequence[object] = ()) -> None:
        self.pool = pool
        self.worker_plugins = tuple(plugins)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_prewarm, (self.pool, self.worker_plugins))

    def __call__(self, proc: JobProcess) -> None:
        self.pool.plugins.prewarm(proc, self.pool.view())


class PoolEntrypoint:
    """livekit's job entrypoint: build the agent and its session, run it, report lifecycle."""

    def __init__(
        self,
        pool: AgentPool,
        plugins: Sequence[object] = (),
        *,
        ledger: JobLedger | None = None,
        deploy: str = "",
    ) -> None:
        self.pool = pool
        self.worker_plugins = tuple(plugins)
        self.deploy = deploy
        """The worker's deployment version (travels with the entrypoint to job processes)."""
        self.in_job_process = False
        """Set when livekit shipped this entrypoint to a job process (process isolation)."""
        self.ledger = ledger if ledger is not None else JobLedger()
        self.router = Router(pool.plugins, pool.view)
        # Set by backends that run jobs themselves (coroutine); livekit's ProcPool otherwise.
        self.openrtc_job_pool: JobPoolFactory | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # The run options go along: a server built in code (create_server(x=...)) exported
        # none, and its job processes must see the worker's.
        options = self.pool.run_options.to_env()
        return (_rebuild_entrypoint, (self.pool, self.worker_plugins, self.deploy, options))

    async def __call__(self, ctx: JobContext) -> None:
        # A real job passed the request handler, which warned about bad metadata already;
        # only a job with no request step (console mode, simulate_job) is read here first.
        job = job_view(ctx.job, warn=ctx.is_fake_job())
        role: ProcessRole = "job" if self.in_job_process else "worker"
        if self.in_job_process and id(self.pool) not in _HOSTING:
            _HOSTING.add(id(self.pool))
            await self.pool.plugins.process_started(self.pool, role)
        await self.pool.plugins.before_job(self.pool, role, job)
        # livekit's job IPC (thread and process isolation) drops the accept attributes, so
        # there the routing decision is taken again, from the same job.
        routed = _livekit.accept_attributes(ctx).get(AGENT_ATTRIBUTE)
        spec = self.pool.get(routed) if routed else self._unrouted_agent(job)
        # The tenant admission saw, when the request was handled in this process; a job process
        # (process isolation) resolves it again from the same job.
        handed_over, tenant = self.ledger.take_tenant(job.job_id)
        if not handed_over:
            try:
                tenant = self.pool.plugins.resolve_tenant(job)
            except HookFailedError as exc:
                # Whose call it is could not be told here: it fails, never runs as no tenant.
                logger.error(
                    "job %s cannot run: %s", job.job_id, exc, extra=log_fields(job, spec.name)
                )
                ctx.shutdown(reason=failed_reason(str(exc)))
                return
        await SessionRun(self.pool, spec, job, tenant, ctx, self.ledger, deploy=self.deploy).run()

    def _unrouted_agent(self, job: JobView) -> AgentSpec:
        # No request step ran (console mode, simulate_job): route here, then fall back to the
        # only agent.
        routed = self.router.route(job)
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
        ledger: JobLedger,
        *,
        deploy: str = "",
    ) -> None:
        self.pool = pool
        self.ledger = ledger
        self.spec = spec
        self.job = job
        self.tenant = tenant
        self.ctx = ctx
        self.info = SessionInfo(
            job_id=job.job_id,
            room_name=job.room_name,
            agent=spec.name,
            tenant=tenant,
            version=spec.version or pool.settings.code_version,
            deploy=deploy,
        )
        self.entry = pool.sessions.open(self.info)
        self.entry.on_switch(self._switched)
        self.extra = {
            **log_fields(job, spec.name, tenant),
            "version": self.info.version,
            "deploy": deploy,
        }
        self.failure = ""
        self.provider_errors = 0
        self.user_modules = frozenset({getattr(spec.target, "__module__", "") or ""})
        self._started = time.monotonic()
        self._ended = False
        ctx.add_shutdown_callback(self._on_shutdown)
        # The call is over once anyone asks the job to shut down; its slot is free then.
        _livekit.on_shutdown_requested(ctx, self._call_ended)

    def _call_ended(self, reason: str = "") -> None:
        self.ledger.call_ended(self.job.job_id)
        if not self._ended:
            self.entry.mark(SessionState.ENDING)

    @property
    def job_id(self) -> str:
        return self.job.job_id

    def end(self, outcome: Outcome, error: str = "") -> None:
        if self._ended:
            return
        self._ended = True
        self._call_ended()
        self.pool.sessions.close(self.job.job_id)
        ended = SessionOutcome(
            outcome=outcome,
            error=error,
            duration_s=time.monotonic() - self._started,
            provider_errors=self.provider_errors,
        )
        self.ledger.session_ended(self.job.job_id, ended)
        self.pool.plugins.session_ended(self.info, ended)

    async def _on_shutdown(self, reason: str) -> None:
        # Shutdown callbacks run before livekit closes the job's HTTP session: a session that
        # failed half-way through starting is closed now, while its streams can still end.
        if self.entry.session is not None:
            await _livekit.close_unstarted_session(self.entry.session)
        self.end(Outcome.FAILED if self.failure else Outcome.COMPLETED, self.failure)

    def fault(self, exc: BaseException, error: str) -> None:
        """The agent's own code raised `exc` in this live session: plugins may handle it
        (``openrtc_agent_error``, a reload rolling back); otherwise the session fails."""
        session = self.entry.session
        if self.failure or self._ended or session is None:
            return
        if self.pool.plugins.agent_error(self.entry.info, session, exc):
            logger.warning(
                "session for agent %s: %s; a plugin handled it, the session goes on",
                self.spec.name,
                bounded(error, REASON_LIMIT),
                extra=self.extra,
            )
            return
        self.fail(error)

    def fail(self, error: str) -> None:
        """End this session as failed (its job too); other sessions are not touched."""
        if self.failure or self._ended:
            return
        self.failure = error
        logger.error(
            "session for agent %s failed: %s",
            self.spec.name,
            bounded(error, REASON_LIMIT),
            extra=self.extra,
        )
        self.ctx.shutdown(reason=failed_reason(error))

    def _watch(self, session: AgentSession[Any]) -> None:
        def on_close(event: CloseEvent) -> None:
            self._call_ended()
            # A closed session does not end its job by itself; end it, failed on error.
            if event.reason == CloseReason.ERROR:
                self.fail(f"session closed on error: {event.error}")
            elif not self._ended:
                self.ctx.shutdown(reason=f"session closed: {event.reason.value}")

        def on_error(event: ErrorEvent) -> None:
            if not getattr(event.error, "recoverable", True):
                self.provider_errors += 1

        session.on("close", on_close)
        session.on("error", on_error)

    def _build(self) -> SessionLaunch:
        context = AgentContext(
            job_id=self.job.job_id,
            room_name=self.job.room_name,
            agent=self.spec.name,
            metadata=self.job.job_metadata,
            tenant=self.tenant,
        )
        self.entry.context = context
        agent = build_agent(self.spec, context)
        self.user_modules = self.user_modules | {type(agent).__module__}
        options = session_options(
            self.pool.plugins,
            self.pool.view(),
            self.spec.name,
            job=self.job,
            tenant=self.tenant,
            userdata=self.ctx.proc.userdata,
        )
        session = build_session(options)
        self.entry.session = session
        self._watch(session)
        return SessionLaunch(
            job=self.job,
            info=self.info,
            ctx=self.ctx,
            agent=agent,
            session=session,
            greeting=self.spec.greeting_or(self.pool.settings.greeting),
            fail=self.fail,
            mark_connected=self._mark_connected,
            failure=self._failure,
            version=self._version,
        )

    def _failure(self) -> str:
        return self.failure

    def _version(self) -> str:
        return self.entry.info.version

    def _switched(self, version: str) -> None:
        # Log lines of the job, and the agent participant's attribute, follow the switch.
        self.extra["version"] = version
        self.ctx.log_context_fields = {**self.ctx.log_context_fields, "version": version}
        _livekit.publish_attributes(self.ctx, {VERSION_ATTRIBUTE: version})

    def _mark_connected(self) -> None:
        _livekit.mark_connected(self.ctx)

    async def run(self) -> None:
        tenant_id = self.tenant.tenant_id if self.tenant else ""
        CURRENT_SESSION.set(SessionTag(self.job.job_id, self.spec.name, tenant_id))
        # A job's own loop (thread and process isolation) gets the containment coroutine
        # isolation's loop has: agent code's sys.exit() fails its call, named.
        contain_exits(asyncio.get_running_loop())
        # livekit's own lines about the job carry both versions too.
        self.ctx.log_context_fields = {
            **self.ctx.log_context_fields,
            **({"version": self.info.version} if self.info.version else {}),
            **({"deploy": self.info.deploy} if self.info.deploy else {}),
        }
        _livekit.forget_loop_monitor_job(asyncio.get_running_loop())
        FAULTS.watch(self)
        try:
            launch = self._build()
            start = self.pool.plugins.start_session(launch)
            if start is not None:
                await start
            else:
                await launch.session.start(launch.agent, room=self.ctx.room)
                if launch.greeting:
                    launch.session.generate_reply(instructions=launch.greeting)
            self.entry.mark(SessionState.RUNNING)
            self.pool.plugins.session_started(self.info, launch.session)
            logger.info("session started", extra=self.extra)
        except asyncio.CancelledError:
            # A session that cancels itself would otherwise leave its job waiting forever.
            self.end(Outcome.CANCELLED)
            self.ctx.shutdown(reason="session cancelled")
            raise
        except Exception as exc:
            # Handled here, not raised: livekit would log the same traceback again as an
            # "unhandled exception while running the job task". The job ends failed.
            error = f"{type(exc).__name__}: {exc}"
            self.failure = error
            logger.error(
                "session for agent %s (job %s) failed to start: %s",
                self.spec.name,
                self.job.job_id,
                error,
                # A failed plugin hook was logged with its traceback where it failed.
                exc_info=None if isinstance(exc, HookFailedError) else exc,
                extra=self.extra,
            )
            self.end(Outcome.FAILED, error)
            self.ctx.shutdown(reason=failed_reason(error))


_HOSTING: set[int] = set()
"""The pools this job process told plugins it hosts (``openrtc_process_started``)."""


def _rebuild_entrypoint(
    pool: AgentPool, plugins: tuple[object, ...], deploy: str = "", options: str = ""
) -> PoolEntrypoint:
    register_worker_plugins(pool, plugins)
    inherited = RunOptions.from_env(options) if options else None
    if inherited is not None:
        pool.use_run_options(inherited)
    entrypoint = PoolEntrypoint(pool, plugins, deploy=deploy)
    entrypoint.in_job_process = True
    return entrypoint


def _rebuild_prewarm(pool: AgentPool, plugins: tuple[object, ...]) -> PoolPrewarm:
    register_worker_plugins(pool, plugins)
    return PoolPrewarm(pool, plugins)
