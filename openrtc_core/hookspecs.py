"""The hook contract between the OpenRTC core and its plugins.

Every spec here is public API. Arguments are never renamed or removed once released; new ones
are appended (pluggy lets an older implementation take fewer arguments). A plugin implements
any subset, each function decorated with ``openrtc_core.hookimpl`` and taking any subset of
the spec's parameters, by name. The hook reference page (docs/hooks.md) is generated from the
docstrings below; each says who calls the hook, in which process, in what order, and what a
failing implementation does.

Processes: the *worker process* talks to LiveKit and handles job requests. A job *runs* in the
worker process itself with ``coroutine`` and ``thread`` isolation, and in a job process of its
own with ``process`` isolation.

Failures, declared per hook: each spec declares, once and beside itself, what its
implementations may return and what a failing one does (:func:`spec`, :class:`OnFailure`);
containment and the hook reference page read that declaration. A failure is an
implementation that raises, or returns a value of the wrong type. ``SKIP`` (most hooks)
logs it once per plugin and hook, then counts it, and treats it as ``None``. ``FAIL_CLOSED``
(every hook that decides whose call it is, whether it may run or which keys it uses) fails
what the hook was deciding for and names the plugin: never a fallback to what would have
happened without it. ``RAISE`` leaves the exception to the caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from .models import (
    JobView,
    PoolView,
    ReloadEvent,
    RouteDecision,
    SessionInfo,
    SessionLaunch,
    SessionOutcome,
    TenantContext,
    Verdict,
)

if TYPE_CHECKING:
    import typer
    from livekit.agents import AgentServer, AgentSession, JobProcess

    from .isolation import IsolationBackend
    from .pool import AgentPool
    from .runoptions import RunContext, RunOption, RunOptions

from .contracts import (
    CONTRACT_ATTRIBUTE,
    PROJECT,
    HookContract,
    OnFailure,
    hookimpl,
    hookspec,
    spec,
)

__all__ = [
    "CONTRACT_ATTRIBUTE",
    "PROJECT",
    "HookContract",
    "OnFailure",
    "contract_of",
    "hookimpl",
    "hookspec",
    "spec",
]


def contract_of(hook: str) -> HookContract | None:
    """The declared contract of the hook called `hook`; None for a name no spec has."""
    function = globals().get(hook)
    found = getattr(function, CONTRACT_ATTRIBUTE, None)
    return found if isinstance(found, HookContract) else None


ProcessRole = Literal["worker", "job"]
"""Which process hosts the pool: the worker process, or a job process of ``process``
isolation (see :func:`openrtc_process_started`)."""
RegisterBackend = Callable[[str, "Callable[[], IsolationBackend]"], None]


# ---------------------------------------------------------------------------------------------
# routing: which agent takes a job
# ---------------------------------------------------------------------------------------------


@spec(result=RouteDecision, firstresult=True)
def openrtc_route_job(job: JobView, pool: PoolView) -> RouteDecision | None:
    """Choose the agent for a job request, before the job is accepted.

    Called: in the worker process, once per job request. Also where the job runs, for a job
    that arrives with no routing decision (livekit's console mode, ``simulate_job``).

    :param job: what the request carries: job id, room name and sid, dispatch name, job and
        room metadata (raw and parsed), dispatch attributes.
    :param pool: the agents this worker hosts, its default agent, their session options.
    :return: a decision naming the agent, or None to let the next strategy decide.

    Order: stops at the first non-None result. Built-in strategies, in call order: job
    metadata ``{"agent": ...}``, room metadata ``{"agent": ...}``, room-name prefix. A plain
    implementation runs before them, a ``trylast`` one after them. The pool's default agent is
    a ``wrapper=True`` implementation around the whole chain, so it applies only when every
    strategy returned None.

    Failure: a decision naming an agent this worker does not host, or no decision at all,
    rejects the job with ``terminate=False`` so another worker can take it.
    """


# ---------------------------------------------------------------------------------------------
# isolation: how a job runs (in the worker's loop, in a process, ...)
# ---------------------------------------------------------------------------------------------


@spec()
def openrtc_register_isolation_backends(register: RegisterBackend) -> None:
    """Offer isolation backends by name.

    Called: in the worker process when a server is built, and by the ``openrtc`` command to
    check a target's ``isolation=`` before the worker starts.

    :param register: call ``register(name, factory)``; ``factory()`` returns an
        :class:`~openrtc_core.isolation.IsolationBackend`, one per server built (and one
        when the ``openrtc`` command checks a target's backend).

    Order: the first registration of a name in call order wins; the built-ins
    (``coroutine``, ``process``, ``thread``) register ``trylast``, so a plugin's backend of
    the same name replaces them.

    Failure: a pool naming a backend nobody registered fails to build its server, naming the
    backends that exist.
    """


# ---------------------------------------------------------------------------------------------
# tenancy: who a job belongs to, whether it may run, what its session gets
# ---------------------------------------------------------------------------------------------


@spec(result=TenantContext, on_failure=OnFailure.FAIL_CLOSED, firstresult=True)
def openrtc_resolve_tenant(job: JobView) -> TenantContext | None:
    """Say which tenant a job belongs to.

    Called: in the worker process for each routed job request, before admission. With
    ``process`` isolation, again in the job process (so resolvers must be deterministic); the
    in-process backends hand the admission-time tenant to the session.

    :param job: the job request.
    :return: the tenant, or None when this plugin cannot tell.

    Order: stops at the first non-None result.

    Failure: a resolver that fails refuses the job at admission and, where the job runs
    (``process`` isolation resolves again), fails its session: a job never runs as no
    tenant because its resolver broke.
    """


@spec(result=Verdict, on_failure=OnFailure.FAIL_CLOSED)
def openrtc_admit_job(
    job: JobView, decision: RouteDecision, tenant: TenantContext | None
) -> Verdict | None:
    """Accept or refuse a routed job before it is accepted (caps, breakers, draining).

    Called: in the worker process, for each routed job request, after the tenant is resolved
    and before the worker's own session cap is checked. No ``await`` happens between this
    call and the accept, so a count a plugin takes here cannot race another request.

    :param job: the job request.
    :param decision: the agent routing chose.
    :param tenant: the resolved tenant, if any.
    :return: ``Verdict.refuse(reason, terminate=...)`` to refuse, or None (or
        ``Verdict.admit()``) to let it through.

    Order: every implementation is asked; the first refusal in call order wins.

    """


@spec(result=Verdict, awaited=True, on_failure=OnFailure.FAIL_CLOSED)
def openrtc_claim_job(
    job: JobView, decision: RouteDecision, tenant: TenantContext | None
) -> Awaitable[Verdict | None] | None:
    """An admission step that must wait (a fleet-wide count in a shared store): return an
    awaitable resolving to a refusal, or None.

    Called: in the worker process, for each job every ``openrtc_admit_job`` let through,
    after them; the awaitables of all implementations are awaited one after the other, and
    the worker's own session cap is checked after the last. A job refused after a plugin
    admitted or claimed it, or that ends, is announced by ``openrtc_job_released``, so a
    plugin that counted it can count it out.

    Order: every implementation is asked; the first refusal, in call order, wins.

    """


@spec()
def openrtc_job_released(
    job: JobView, tenant: TenantContext | None, outcome: SessionOutcome | None
) -> None:
    """A job that admission let through holds no slot any more: it was refused after all
    (by a later plugin or the worker's cap), its accept failed, or it ended.

    Called: in the worker process, once per admitted job. `outcome` is how its session
    ended when the worker knows: always with ``coroutine`` and ``thread`` isolation; with
    ``process`` isolation only a job process that crashed is known to have failed (a session
    that failed inside a healthy job process is reported as completed). None when the job
    never ran.
    """


@spec(result=Mapping, on_failure=OnFailure.FAIL_CLOSED)
def openrtc_session_options(
    agent: str,
    tenant: TenantContext | None,
    job: JobView,
    pool: PoolView,
    userdata: Mapping[str, Any],
) -> Mapping[str, Any] | None:
    """Contribute ``AgentSession`` keyword arguments for one session (provider keys, ...).

    Called: where the job runs, once per session, after the agent is built and before its
    ``AgentSession`` is.

    :param agent: the agent name the session runs.
    :param tenant: the resolved tenant, if any.
    :param job: the job.
    :param pool: the pool's view; ``pool.configured(agent)`` is what the session gets before
        any contribution (pool defaults with the agent's overrides applied).
    :param userdata: what prewarm stored (``JobProcess.userdata``), read-only: a plugin that
        loaded a shared model at prewarm hands it to sessions here.
    :return: keyword arguments to apply over the configured options, or None.

    Order: applied over the configured options in call order, with the earliest-called plugin
    winning on the same key.

    Failure: the session fails, naming the plugin, instead of starting on the pool's own
    providers and keys (a tenant whose key is unset never borrows the pool's).
    """


# ---------------------------------------------------------------------------------------------
# session start: how a routed job's session starts
# ---------------------------------------------------------------------------------------------


@spec(on_failure=OnFailure.RAISE, firstresult=True)
def openrtc_start_session(launch: SessionLaunch) -> Awaitable[None] | None:
    """Take over how a routed job's session starts.

    Called: where the job runs, once per session, with the agent and its ``AgentSession``
    built. The default (no plugin takes over) joins the room with
    ``session.start(agent, room=ctx.room)`` and greets if a greeting is configured.

    :param launch: the job, the session info, livekit's ``JobContext``, the agent, the
        session, the greeting, and the callbacks ``fail(error)`` and ``mark_connected()``.
    :return: an awaitable (a coroutine of the plugin's) that starts the session; the core
        awaits it, then reports the session started. It owns the greeting too. None leaves
        the start to the next implementation.

    Order: stops at the first non-None result.

    Failure: an exception, raised here or by the awaitable, fails this session, and only
    it, like any exception while a session starts.
    """


# ---------------------------------------------------------------------------------------------
# live code: agent code that fails in a session, or is loaded again while the worker runs
# ---------------------------------------------------------------------------------------------


@spec(result=bool, firstresult=True)
def openrtc_agent_error(
    info: SessionInfo, session: AgentSession[Any], error: BaseException
) -> bool | None:
    """The agent's own code raised ``error`` in a live session (``on_enter``, a ``*_node``
    method, a tool). Return True if the plugin dealt with it and the session goes on (a
    reload strategy sending the session back to code that worked); otherwise the session
    ends as failed, and only it.

    Called: where the job runs, from livekit's error log, once per exception.

    Order: stops at the first non-None result.

    Failure: a failing implementation counts as None, so the session fails.
    """


@spec()
def openrtc_code_reloaded(event: ReloadEvent) -> None:
    """Agent code was reloaded, or a reload was refused or undone (``event.kind``).

    Called: by the reload strategy, in the process where it happened: the worker process
    for ``applied``/``rejected`` of the pool, the process hosting the session for
    ``switched`` and ``rolled_back`` (a job process with ``process`` isolation).
    """


# ---------------------------------------------------------------------------------------------
# start-up: what would stop a worker, said before it starts
# ---------------------------------------------------------------------------------------------


@spec(on_failure=OnFailure.FAIL_CLOSED)
def openrtc_check_pool(pool: PoolView) -> None:
    """Check what a plugin needs from the pool and its environment before a worker starts.

    Raise an :class:`~openrtc_core.OpenRTCError` whose message names the input that is wrong
    and what to do (a tenants file naming an unset variable, an agent the pool lacks); the
    command prints it as one ``error:`` line and exits 1, and no worker starts.

    Called: by the ``openrtc`` run verbs (and ``simulate``) before a worker starts, and in
    each worker process as its server is built. A plugin that follows a file while the worker
    runs checks each new version the same way and keeps the last good one.

    :param pool: the pool's view: its agents, its default agent, the run's options.

    Failure: any exception stops the worker from starting; an ``OpenRTCError`` is shown as
    is, anything else names the plugin.
    """


# ---------------------------------------------------------------------------------------------
# lifecycle notifications
# ---------------------------------------------------------------------------------------------


@spec()
def openrtc_worker_started(pool: PoolView, server: AgentServer) -> None:
    """The worker is running; registration with LiveKit may still be under way.

    Called: in the worker process, once per server, from livekit's ``worker_started`` event.
    """


@spec()
def openrtc_session_started(info: SessionInfo, session: AgentSession[Any]) -> None:
    """A session started for a job, with its agent; ``session`` is the live AgentSession.

    Called: where the job runs, once per session, right after it started.
    """


@spec()
def openrtc_session_ended(info: SessionInfo, outcome: SessionOutcome) -> None:
    """A session ended; ``outcome`` says whether it completed, failed (and why) or was cut.

    Called: where the job runs, exactly once per session that was opened, including sessions
    whose agent or session failed to build or start.
    """


@spec()
def openrtc_drain_started(pool: PoolView) -> None:
    """The worker stopped taking jobs and waits for the live ones to end.

    Called: in the worker process, once, when ``AgentServer.drain`` starts (SIGTERM under
    ``start``, or a plugin calling it).
    """


@spec()
def openrtc_worker_unhealthy(pool: PoolView, reason: str) -> None:
    """The worker holds something it cannot get rid of, said in `reason`: a task an agent left
    behind that goes on running after it was cancelled (it catches ``CancelledError``). The
    worker goes on serving; only a new process frees it.

    Called: in the worker process, each time it finds one (coroutine isolation checks a
    job's leftover tasks a few seconds after its call ended). A supervisor of several
    workers drains such a worker and starts its replacement.
    """


# ---------------------------------------------------------------------------------------------
# process lifecycle: what a plugin runs beside the jobs, in each process hosting the pool
# ---------------------------------------------------------------------------------------------


@spec(awaited=True)
def openrtc_process_started(pool: AgentPool, role: ProcessRole) -> Awaitable[None] | None:
    """This process hosts the pool now: start what the plugin runs beside its jobs here (a
    file watcher, a connection); return an awaitable (a coroutine) for work that waits.

    :param pool: the pool itself (not a view): what a plugin that changes the pool's code
        needs (``pool.adopt``, ``pool.stamp_versions``, ``pool.sessions``). Its
        ``run_options`` are the run's, in a job process too.
    :param role: ``"worker"``: the process that talks to LiveKit and routes jobs (its jobs
        run here with ``coroutine`` and ``thread`` isolation); ``"job"``: a job process of
        ``process`` isolation, which runs its jobs and nothing else.

    Called: once in each process hosting the pool, in its event loop. In the worker process,
    once per server, right after ``openrtc_worker_started``; the worker does not wait for
    it, so a job may arrive while it runs (``openrtc_before_job`` is where a job waits). In
    a job process, before its first job (awaited: the job waits).

    Failure: logged, and the process goes on without what the plugin would have started.
    """


@spec(awaited=True)
def openrtc_before_job(pool: AgentPool, role: ProcessRole, job: JobView) -> Awaitable[None] | None:
    """A job is about to be built where it runs: return an awaitable for what must happen
    before its agent is chosen and built (bring the pool's code up to date, say).

    :param pool: the pool itself, as in :func:`openrtc_process_started`.
    :param role: where the job runs: ``"worker"`` or ``"job"`` (a job process).
    :param job: the job about to run.

    Called: where the job runs, once per job, in the event loop that runs it (a job thread's
    own loop with ``thread`` isolation), before routing falls back, tenants resolve and the
    session is built; each implementation's awaitable is awaited in call order.

    Failure: logged, and the job is built as if the plugin had returned None.
    """


@spec(awaited=True)
def openrtc_worker_closing(pool: AgentPool) -> Awaitable[None] | None:
    """The worker's server is closing, its jobs over: stop what ``openrtc_process_started``
    started in the worker process; return an awaitable for work that waits.

    Called: in the worker process, once per server, in its event loop, after livekit closed
    the server and after the worker's ``openrtc_process_started`` finished. A job process
    ends with its jobs and is not told.

    Failure: logged; the worker closes all the same.
    """


# ---------------------------------------------------------------------------------------------
# prewarm: shared models loaded once per worker process
# ---------------------------------------------------------------------------------------------


@spec(on_failure=OnFailure.RAISE)
def openrtc_prewarm(proc: JobProcess, pool: PoolView) -> None:
    """Load shared objects into ``proc.userdata``.

    Called: where jobs run, before the first job: once per worker with ``coroutine``
    isolation, once per job thread or job process otherwise.

    Use a namespaced key (``"yourplugin.model"``) and hand the object to sessions from
    ``openrtc_session_options`` (it receives ``userdata``). The built-in loads the VAD under
    ``"openrtc.vad"`` when some agent is configured without one, and contributes it that way.

    Failure: a worker without its shared models is broken and says so.
    """


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


@spec(historic=True)
def openrtc_register_commands(app: typer.Typer) -> None:
    """Add subcommands to the ``openrtc`` command line (``@app.command()``).

    Called: by the ``openrtc`` command, once, before it parses its arguments; historic, so a
    plugin registered later still sees the app.
    """


AddRunOption = Callable[["RunOption"], None]


@spec()
def openrtc_add_run_options(add: AddRunOption) -> None:
    """Add options to the run verbs: ``add(RunOption(name=..., flag=..., help=..., ...))``.

    Each :class:`~openrtc_core.RunOption` names its flag, the verbs that take it, its
    environment variable, its help and how its text becomes a value; ``pool.run(name=...)``
    takes it too, and ``AgentPool(name=...)`` with ``pool_keyword``. The core shows it in
    each verb's help, takes it off the command line before livekit's CLI sees it, and
    resolves one value per run (command line, then code, then the variable, then the
    default), read as ``run.options`` (:func:`openrtc_take_over_run`) or
    ``PoolView.run_options``. Processes the run starts see the same values.

    Called: whenever the core needs the declared options: the ``openrtc`` command building
    its verbs, a run resolving its values, ``AgentPool`` sorting its keywords.

    Failure: a plugin that fails here adds no option; a flag of it given on the command line
    is an error saying the plugin is broken. Two plugins adding the same flag, name or
    variable stop the command, naming both.
    """


@spec(result=int, on_failure=OnFailure.RAISE, firstresult=True)
def openrtc_take_over_run(run: RunContext) -> int | None:
    """Run the verb yourself, and return the command's exit status; None to leave it to the
    next plugin, and in the end to the core, which runs one worker in this process.

    ``run`` (:class:`~openrtc_core.RunContext`) holds the pool, the verb, the resolved
    ``options``, the arguments for livekit's CLI, and what the core offers a plugin that
    runs workers elsewhere: ``prewarm()`` (the pool's prewarm, once, before forking) and
    ``run_worker(index, count, port_slot)`` (one normal worker in the calling, forked
    process), and ``command``, the command line that started this process.

    Called: once per run verb, in the process the command started, after the options are
    resolved and the pool checked.

    Order: the first non-None result wins: a deploy controller (``tryfirst``) ahead of a
    supervisor of several workers ahead of the plain worker.

    Failure: not contained: an :class:`~openrtc_core.OpenRTCError` is shown as one
    ``error:`` line and the command exits 1.
    """


@spec(result=str, firstresult=True)
def openrtc_describe_run(verb: str, options: RunOptions) -> str | None:
    """Say in one line how `verb` would run here (``openrtc plugins`` prints it for
    ``start``), when this plugin would take it over; None otherwise.

    Called: by ``openrtc plugins``, in its own process.

    Order: the same as :func:`openrtc_take_over_run`; the first line wins.
    """


@spec(result=Mapping)
def openrtc_log_fields() -> Mapping[str, Any] | None:
    """Fields to put on every log record a worker writes (``{"generation": 3}``); a field a
    record already has is kept.

    Called: in each worker process, once, as its logging is set up.
    """
