"""The hook contract between the OpenRTC core and its plugins.

Every spec here is part of the public API. Arguments are never renamed or removed once
released; new ones are appended (pluggy lets an older hookimpl take fewer arguments).
A plugin implements any subset, decorated with ``openrtc_core.hookimpl``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

from .models import (
    Admission,
    JobView,
    PoolView,
    RouteDecision,
    SessionInfo,
    SessionOutcome,
    TenantContext,
)

if TYPE_CHECKING:
    import typer
    from livekit.agents import AgentServer, AgentSession, JobProcess

    from .isolation import IsolationBackend
    from .pool import AgentPool

PROJECT = "openrtc"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

RegisterBackend = Callable[[str, "Callable[[], IsolationBackend]"], None]
RegisterReloadStrategy = Callable[[str, Callable[..., Any]], None]


# ---------------------------------------------------------------------------------------------
# routing: which agent takes a job
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def openrtc_route_job(job: JobView, pool: PoolView) -> RouteDecision | None:
    """Choose the agent for a job request, before the job is accepted.

    :param job: what the request carries (job and room metadata, room name, attributes).
    :param pool: the agents this worker hosts and its default agent.
    :return: a decision naming the agent, or None to let the next strategy decide.
        A decision may name an agent this worker does not host; the job is then rejected
        with ``terminate=False`` so another worker can take it.

    Stops at the first non-None result. Built-in strategies, in call order: job metadata
    ``{"agent": ...}``, room metadata ``{"agent": ...}``, room-name prefix, then the pool's
    default agent, which always stays last. A plugin's own strategy runs before the built-ins;
    marked ``trylast`` it runs after them but still before the default agent.
    """


# ---------------------------------------------------------------------------------------------
# isolation: how a job runs (in the worker's loop, in a process, ...)
# ---------------------------------------------------------------------------------------------


@hookspec
def openrtc_register_isolation_backends(register: RegisterBackend) -> None:
    """Offer isolation backends by name.

    :param register: call ``register(name, factory)``; ``factory()`` returns an
        :class:`~openrtc_core.isolation.IsolationBackend`. The first registration of a name
        in call order wins; the built-ins (``coroutine``, ``process``, ``thread``) register
        last, so a plugin's backend of the same name replaces them.
    """


# ---------------------------------------------------------------------------------------------
# tenancy: who a job belongs to, whether it may run, what its session gets
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def openrtc_resolve_tenant(job: JobView) -> TenantContext | None:
    """Say which tenant a job belongs to.

    :param job: the job request.
    :return: the tenant, or None when this plugin cannot tell. Stops at the first non-None
        result.
    """


@hookspec
def openrtc_admit_job(
    job: JobView, decision: RouteDecision, tenant: TenantContext | None
) -> Admission | None:
    """Accept or refuse a routed job before it is accepted (caps, breakers, draining).

    :param job: the job request.
    :param decision: the agent routing chose.
    :param tenant: the resolved tenant, if any.
    :return: ``Admission.reject(...)`` to refuse, or None (or an admitting Admission) to let
        it through. Every implementation is asked; the first refusal in call order wins.
    """


@hookspec
def openrtc_session_options(
    agent: str, tenant: TenantContext | None, job: JobView, pool: AgentPool
) -> Mapping[str, Any] | None:
    """Contribute ``AgentSession`` keyword arguments for one session (provider keys, ...).

    :param agent: the agent name the session runs.
    :param tenant: the resolved tenant, if any.
    :param job: the job (``job.simulated`` is True for a scripted call in a simulation).
    :param pool: the pool, to read its defaults (``pool.session_defaults``) and the agent's
        overrides (``pool.get(agent).overrides``).
    :return: keyword arguments to apply over the pool defaults and the agent's overrides,
        or None. Contributions are applied in call order, so an earlier-called plugin wins
        on the same key.
    """


# ---------------------------------------------------------------------------------------------
# reload: how edited agent code reaches live sessions
# ---------------------------------------------------------------------------------------------


@hookspec
def openrtc_register_reload_strategies(register: RegisterReloadStrategy) -> None:
    """Offer reload strategies by name.

    :param register: call ``register(name, factory)``; the reload plugin defines what the
        factory builds.
    """


# ---------------------------------------------------------------------------------------------
# lifecycle notifications
# ---------------------------------------------------------------------------------------------


@hookspec
def openrtc_worker_started(pool: AgentPool, server: AgentServer) -> None:
    """The worker is running (registration with LiveKit may still be under way)."""


@hookspec
def openrtc_session_started(info: SessionInfo, session: AgentSession[Any]) -> None:
    """A session started for a job, with its agent; ``session`` is the live AgentSession."""


@hookspec
def openrtc_session_ended(info: SessionInfo, outcome: SessionOutcome) -> None:
    """A session ended; ``outcome`` says whether it completed, failed (and why) or was cut."""


@hookspec
def openrtc_drain_started(pool: AgentPool) -> None:
    """The worker stopped taking jobs and waits for the live ones to end."""


# ---------------------------------------------------------------------------------------------
# prewarm: shared models loaded once per worker process
# ---------------------------------------------------------------------------------------------


@hookspec
def openrtc_prewarm(proc: JobProcess, pool: AgentPool) -> None:
    """Load shared objects into ``proc.userdata`` once per worker process.

    Use a namespaced key (``"yourplugin.model"``). The built-in contribution loads the VAD
    under ``openrtc_core.prewarm.VAD_KEY`` unless the pool was given its own ``vad``.
    """


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


@hookspec(historic=True)
def openrtc_register_commands(app: typer.Typer) -> None:
    """Add subcommands to the ``openrtc`` command line (``@app.command()``)."""
