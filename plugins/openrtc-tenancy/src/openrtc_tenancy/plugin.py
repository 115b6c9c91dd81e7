"""openrtc-tenancy's hooks: which tenant a job is, whether it may start, with which keys.

One :class:`Tenancy` per process and tenants file, configured from the run option ``tenants``
this plugin adds (``--tenants``, ``pool.run(tenants=...)``, ``AgentPool(tenants=...)``,
``OPENRTC_TENANTS``). Without a tenants file the plugin does nothing. In the worker it
resolves tenants, admits jobs (allowed agents, breaker, per-worker cap, counted before accept
with requests in flight) and claims fleet-wide slots in Redis; where sessions run it builds
each tenant's providers with its keys.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Collection, Mapping
from typing import Any

import typer
from livekit.agents import AgentServer, JobProcess

from openrtc_core import (
    AddRunOption,
    JobView,
    Outcome,
    PoolView,
    RouteDecision,
    RunOption,
    SessionOutcome,
    TenantContext,
    Verdict,
    hookimpl,
)

from . import commands
from .breaker import Breaker, BreakerState, FleetBreakers, Transition
from .checks import check_usable
from .config import ConfigFile, TenancyConfig
from .counting import FleetSlots, LocalSlots, Renewal
from .ids import TenancyError, check_tenant_id
from .providers import tenant_providers
from .signing import SIGNATURE_KEY, verify

logger = logging.getLogger("openrtc.tenancy")

TENANT_KEY = "tenant"
"""The job-metadata key naming the tenant."""
TENANTS = RunOption(
    name="tenants",
    flag="--tenants",
    env="OPENRTC_TENANTS",
    pool_keyword=True,
    metavar="FILE",
    help="The tenants file (keys, caps, breakers per tenant).",
)
"""The tenants file, for every run verb, ``pool.run(tenants=...)`` and ``AgentPool(...)``."""
REDIS_TIMEOUT_S = 2.0
"""How long a Redis command may take before the call it decides is refused (fail closed)."""


class Tenancy:
    """Tenancy for one tenants file, in one process."""

    def __init__(
        self,
        path: str,
        *,
        environ: Mapping[str, str] = os.environ,
        agents: Collection[str] | None = None,
    ) -> None:
        self.environ = environ
        self.agents = None if agents is None else frozenset(agents)
        """The pool's agents, which the file may name (None: not known here)."""
        # Checked at start (a file that cannot serve calls stops the worker) and at each edit
        # (such an edit is kept out): unset variables, providers that do not build, agents.
        self.file = ConfigFile(path, usable=self._usable)
        self.local = LocalSlots()
        self.breakers: dict[str, Breaker] = {}
        self.listeners: list[Callable[[Transition], None]] = []
        self._fleet: FleetSlots | None = None
        self._fleet_breakers: FleetBreakers | None = None
        self._fleet_held: dict[str, str] = {}
        self._over_cap: dict[str, int] = {}
        """Tenants whose fleet count a renewal found above their cap, with that count."""
        self._breaker_errors: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        config = self.file.current
        if config.fleet_needs_redis and config.redis_url_from(environ) is None:
            logger.warning(
                "%s sets fleet_max_sessions but no Redis (redis_url or redis_url_env): fleet "
                "caps are counted on this worker only",
                config.source,
            )

    def _usable(self, config: TenancyConfig) -> None:
        check_usable(config, self.environ, self.agents)

    def use_agents(self, agents: Collection[str]) -> None:
        """Check the file against the pool's `agents` from now on.

        :raises ConfigError: the file in force names an agent the pool does not have.
        """
        if self.agents != frozenset(agents):
            self.agents = frozenset(agents)
            self.file.check_with(self._usable)

    @property
    def config(self) -> TenancyConfig:
        self.file.refresh()
        return self.file.current

    # -- resolving ----------------------------------------------------------------------

    def resolve(self, job: JobView) -> tuple[str | None, str]:
        """``(tenant id, "")`` or ``(None, why the job has no acceptable tenant)``."""
        config = self.config
        raw = job.job_metadata.get(TENANT_KEY)
        if raw is None:
            if config.default_tenant is None:
                return None, f"job metadata names no {TENANT_KEY!r} and there is no default_tenant"
            return config.default_tenant, ""
        try:
            tenant_id = check_tenant_id(raw, where=f"job metadata {TENANT_KEY!r}")
        except TenancyError as exc:
            return None, str(exc)
        if tenant_id != config.default_tenant and config.tenant(tenant_id) is None:
            return None, f"unknown tenant {tenant_id!r}"
        secret = config.signing_secret(self.environ)
        if secret is not None:
            signature = job.job_metadata.get(SIGNATURE_KEY)
            if not verify(tenant_id, job.room_name, signature, secret):
                state = "missing" if signature is None else "wrong"
                return None, (
                    f"tenant {tenant_id!r}: the {SIGNATURE_KEY!r} signature is {state} for room "
                    f"{job.room_name!r} (signed tenancy is on)"
                )
        return tenant_id, ""

    # -- admission ------------------------------------------------------------------------

    def breaker(self, tenant_id: str) -> Breaker | None:
        tenant = self.config.tenant(tenant_id)
        if tenant is None or tenant.breaker is None:
            return None
        breaker = self.breakers.get(tenant_id)
        if breaker is None or breaker.config != tenant.breaker:
            breaker = self.breakers[tenant_id] = Breaker(tenant_id, tenant.breaker)
        return breaker

    def admit(self, job: JobView, decision: RouteDecision) -> Verdict | None:
        tenant_id, error = self.resolve(job)
        if tenant_id is None:
            return Verdict.refuse(error, terminate=True)
        tenant = self.config.tenant(tenant_id)
        if tenant is not None and not tenant.allows(decision.agent):
            return Verdict.refuse(
                f"tenant {tenant_id!r} may not use agent {decision.agent!r}", terminate=True
            )
        breaker = self.breaker(tenant_id)
        if breaker is not None:
            refusal, moved = breaker.admit(job.job_id)
            self._announce(moved)
            if refusal is not None:
                # Open, it is open for the fleet too when Redis shares it: no worker would
                # take the call. A half-open breaker's probe is this worker's own business.
                shared = breaker.state is BreakerState.OPEN and self.shares_breakers()
                return Verdict.refuse(
                    f"tenant {tenant_id!r}: {refusal}" + (" (across the fleet)" if shared else ""),
                    terminate=shared,
                )
        cap = tenant.max_sessions if tenant is not None else None
        if not self.local.take(tenant_id, job.job_id, cap):
            if breaker is not None:
                breaker.released(job.job_id)
            return Verdict.refuse(
                f"tenant {tenant_id!r} is at max_sessions={cap} on this worker "
                f"({self.local.live(tenant_id)} calls live or being accepted)"
            )
        return None

    def shares_breakers(self) -> bool:
        """Redis is configured: breakers open and close for the whole fleet."""
        config = self.config
        return config.redis_url is not None or config.redis_url_env is not None

    def fleet(self) -> FleetSlots | None:
        if self._fleet is None:
            url = self.config.redis_url_from(self.environ)
            if url is None:
                return None
            # A Redis that hangs refuses the calls it would decide, rather than holding them.
            self._fleet = FleetSlots.from_url(
                url,
                lease_s=self.config.lease_s,
                socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
            )
            self._fleet_breakers = FleetBreakers(
                self._fleet.client,
                prefix=self._fleet.prefix,
                worker=f"{socket.gethostname()}:{os.getpid()}",
            )
            self._fleet.start(self._held, self._renewed)
        return self._fleet

    def _held(self) -> Mapping[str, str]:
        return dict(self._fleet_held)

    def _renewed(self, renewal: Renewal) -> None:
        """Say once when a tenant's fleet count is over its cap (leases taken back after a
        Redis outage), and once when it is back within it; `take` refuses meanwhile."""
        for tenant_id, live in renewal.live.items():
            config = self.config.tenant(tenant_id)
            cap = config.fleet_max_sessions if config is not None else None
            if cap is not None and live > cap:
                if tenant_id not in self._over_cap:
                    logger.warning(
                        "tenant %s: %d calls live across the fleet against fleet_max_sessions=%d"
                        " (leases taken back after Redis lost them); refusing its new calls"
                        " until fewer than %d are live",
                        tenant_id,
                        live,
                        cap,
                        cap,
                    )
                self._over_cap[tenant_id] = live
            elif self._over_cap.pop(tenant_id, None) is not None:
                logger.info(
                    "tenant %s: %d calls live across the fleet, back within fleet_max_sessions=%s",
                    tenant_id,
                    live,
                    cap,
                )

    async def _fleet_breaker_open(self, tenant_id: str) -> Verdict | None:
        """A refusal if another worker opened the tenant's breaker for the fleet.

        Redis failing here falls back to this worker's own breaker (said once per error): a
        breaker protects a tenant's provider, it decides no keys and no cap.
        """
        if self._fleet_breakers is None:
            return None
        try:
            opened = await self._fleet_breakers.state(tenant_id)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            if message not in self._breaker_errors:
                self._breaker_errors.add(message)
                logger.warning(
                    "tenant %s: reading the fleet's breaker failed, only this worker's counts: %s",
                    tenant_id,
                    message,
                )
            return None
        self._breaker_errors.clear()
        if opened is None:
            return None
        return Verdict.refuse(
            f"tenant {tenant_id!r}: its breaker is open across the fleet for {opened.left_s:.0f} s"
            f" more (opened by worker {opened.opened_by}: {opened.reason})",
            terminate=True,
        )

    async def claim(self, job: JobView, tenant: TenantContext | None) -> Verdict | None:
        if tenant is None:
            return None
        config = self.config.tenant(tenant.tenant_id)
        if config is None:
            return None
        cap = config.fleet_max_sessions
        if cap is None and config.breaker is None:
            return None
        fleet = self.fleet()
        if fleet is None:
            return None  # said at start: the per-worker count stands in
        if config.breaker is not None:
            refusal = await self._fleet_breaker_open(tenant.tenant_id)
            if refusal is not None:
                return refusal
        if cap is None:
            return None
        if not await fleet.take(tenant.tenant_id, job.job_id, cap):
            over = self._over_cap.get(tenant.tenant_id)
            why = (
                f" ({over} live: leases taken back after Redis lost them)"
                if over is not None
                else ""
            )
            return Verdict.refuse(
                f"tenant {tenant.tenant_id!r} is at fleet_max_sessions={cap}{why}", terminate=True
            )
        self._fleet_held[job.job_id] = tenant.tenant_id
        return None

    def released(
        self, job: JobView, tenant: TenantContext | None, outcome: SessionOutcome | None
    ) -> None:
        self.local.release(job.job_id)
        held = self._fleet_held.pop(job.job_id, None)
        if held is not None and self._fleet is not None:
            self._spawn(self._fleet.release(held, job.job_id))
        if tenant is None:
            return
        breaker = self.breakers.get(tenant.tenant_id)
        if breaker is None:
            return
        if outcome is None:
            breaker.released(job.job_id)
        else:
            failed = outcome.outcome is Outcome.FAILED or outcome.provider_errors > 0
            self._announce(breaker.record(job.job_id, failed))

    def _spawn(self, work: Any, name: str = "releasing a fleet slot") -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("%s failed: %s", task.get_name(), task.exception())

    def _announce(self, transition: Transition | None) -> None:
        if transition is None:
            return
        log = logger.warning if transition.after is BreakerState.OPEN else logger.info
        log(
            "tenant %s: breaker %s -> %s: %s",
            transition.tenant_id,
            transition.before.value,
            transition.after.value,
            transition.reason,
        )
        self._publish(transition)
        for listener in list(self.listeners):
            listener(transition)

    def _publish(self, transition: Transition) -> None:
        """Open or close the tenant's breaker for the fleet, when Redis shares it."""
        tenant = self.config.tenant(transition.tenant_id)
        if tenant is None or tenant.breaker is None or not self.shares_breakers():
            return
        if self.fleet() is None or self._fleet_breakers is None:
            return
        if transition.after is BreakerState.OPEN:
            work = self._fleet_breakers.open(
                transition.tenant_id, transition.reason, tenant.breaker.cooldown_s
            )
        elif transition.after is BreakerState.CLOSED:
            work = self._fleet_breakers.close(transition.tenant_id)
        else:
            return  # half-open: the key ran out with the cooldown
        self._spawn(work, f"publishing tenant {transition.tenant_id}'s breaker")

    # -- sessions ---------------------------------------------------------------------------

    def session_options(self, tenant: TenantContext | None) -> Mapping[str, Any] | None:
        if tenant is None:
            return None
        config = self.config.tenant(tenant.tenant_id)
        if config is None or not config.providers:
            return None
        return tenant_providers(config, self.environ)

    async def aclose(self) -> None:
        if self._fleet is not None:
            await self._fleet.stop()
            for job_id, tenant_id in list(self._fleet_held.items()):
                await self._fleet.release(tenant_id, job_id)
            self._fleet_held.clear()
            await self._fleet.aclose()
            self._fleet = None


_TENANCIES: dict[str, Tenancy] = {}
_PATH: list[str] = []
"""The tenants file this process uses (the last pool seen names it)."""


def tenancy_for(path: str, agents: Collection[str] | None = None) -> Tenancy:
    """This process's tenancy for `path`, loaded on first use, checked against the pool's
    `agents` when given (a bad file raises :class:`ConfigError`)."""
    found = _TENANCIES.get(path)
    if found is None:
        found = _TENANCIES[path] = Tenancy(path, agents=agents)
    elif agents is not None:
        found.use_agents(agents)
    _PATH[:] = [path]
    return found


def current() -> Tenancy | None:
    """The tenancy of this process: that of the last pool seen with a tenants file, else
    none. Every process that runs jobs sees its pool first (the worker checks it, a job
    process prewarms it)."""
    return _TENANCIES[_PATH[0]] if _PATH else None


def tenants_file(pool: PoolView) -> str:
    """The pool's tenants file for this run ("" for none)."""
    value = pool.run_options.get(TENANTS.name)
    return "" if value is None else str(value)


def _configure(pool: PoolView) -> None:
    path = tenants_file(pool)
    if path:
        tenancy_for(path, pool.agents)


@hookimpl
def openrtc_add_run_options(add: AddRunOption) -> None:
    add(TENANTS)


@hookimpl
def openrtc_check_pool(pool: PoolView) -> None:
    # A tenants file that cannot serve calls stops the worker here, in one error line.
    _configure(pool)


@hookimpl
def openrtc_prewarm(proc: JobProcess, pool: PoolView) -> None:
    _configure(pool)


@hookimpl
def openrtc_worker_started(pool: PoolView, server: AgentServer) -> None:
    _configure(pool)


@hookimpl(tryfirst=True)
def openrtc_resolve_tenant(job: JobView) -> TenantContext | None:
    tenancy = current()
    if tenancy is None:
        return None
    tenant_id, _ = tenancy.resolve(job)
    return TenantContext(tenant_id=tenant_id) if tenant_id else None


@hookimpl
def openrtc_admit_job(
    job: JobView, decision: RouteDecision, tenant: TenantContext | None
) -> Verdict | None:
    tenancy = current()
    return tenancy.admit(job, decision) if tenancy is not None else None


@hookimpl
def openrtc_claim_job(job: JobView, tenant: TenantContext | None) -> Any:
    tenancy = current()
    return tenancy.claim(job, tenant) if tenancy is not None else None


@hookimpl
def openrtc_job_released(
    job: JobView, tenant: TenantContext | None, outcome: SessionOutcome | None
) -> None:
    tenancy = current()
    if tenancy is not None:
        tenancy.released(job, tenant, outcome)


@hookimpl
def openrtc_session_options(tenant: TenantContext | None) -> Mapping[str, Any] | None:
    tenancy = current()
    return tenancy.session_options(tenant) if tenancy is not None else None


@hookimpl
def openrtc_register_commands(app: typer.Typer) -> None:
    commands.register(app)
