"""The plugin host: stevedore decides which modules are imported (:mod:`.discovery`), pluggy
how they are called.

Core code talks to plugins only through :class:`PluginHost`'s typed methods. Each plugin's
hook implementation is called on its own, so one broken plugin is logged and skipped
instead of failing the call for every other plugin.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from . import hookspecs
from ._version import __version__
from .containment import HookErrors, StandIn, contained_plugin
from .discovery import (
    DISABLE_ENV,
    ENTRY_POINT_GROUP,
    STRICT_ENV,
    TRACE_ENV,
    disabled_from_env,
    entry_point_distributions,
    env_flag,
    import_entry_points,
    strict_message,
)
from .errors import PluginLoadError, PoolConfigError
from .hints import Hint, hint_for_keyword, why_missing
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
from .options import merge_options
from .runoptions import Declared, RunContext, RunOption, RunOptions, check_declared

if TYPE_CHECKING:
    import typer
    from livekit.agents import AgentServer, AgentSession, JobProcess

    from .hookspecs import ProcessRole
    from .isolation import IsolationBackend
    from .pool import AgentPool

logger = logging.getLogger("openrtc.plugins")

VERB_FLAGS = ("--entry-points", "--help")
"""The run verbs' own flags: no run option may take them."""


@attrs.frozen(kw_only=True)
class PluginRecord:
    """One plugin the host saw: loaded, failed or disabled."""

    name: str
    status: str  # "loaded" | "failed" | "disabled"
    source: str  # "builtin" | "entry-point" | "explicit"
    module: str = ""
    distribution: str = ""
    version: str = ""
    hooks: tuple[str, ...] = ()
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _builtin_plugins() -> list[tuple[str, object]]:
    # Imported here: the built-ins import the host's models, not the other way round.
    from .builtin import deploy, isolation, prewarm, routing

    return [
        *routing.STRATEGIES,
        ("openrtc.isolation", isolation),
        ("openrtc.prewarm", prewarm),
        ("openrtc.deploy", deploy),
    ]


@attrs.define
class PluginHost:
    """Loads plugins and calls their hooks through one typed method per hook."""

    strict: bool = attrs.field(factory=lambda: env_flag(STRICT_ENV))
    disabled: frozenset[str] = attrs.field(factory=disabled_from_env, converter=frozenset)
    _pm: pluggy.PluginManager = attrs.field(init=False)
    _records: list[PluginRecord] = attrs.field(init=False, factory=list)
    _loaded_entry_points: bool = attrs.field(init=False, default=False)
    _dists: dict[tuple[str, str], dict[str, str]] | None = attrs.field(init=False, default=None)
    _deferring: bool = attrs.field(init=False, default=False)
    errors: HookErrors = attrs.field(init=False, factory=HookErrors)
    """Failures of hook implementations, per plugin and hook."""
    _worker: list[tuple[str, object]] = attrs.field(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        if env_flag(TRACE_ENV):
            self._pm.trace.root.setwriter(lambda text: logger.info("hook %s", text.rstrip()))
            self._pm.enable_tracing()
        for name, plugin in _builtin_plugins():
            self._register(name, plugin, source="builtin")

    # -- loading ---------------------------------------------------------------------------

    @property
    def records(self) -> list[PluginRecord]:
        return list(self._records)

    def failed(self) -> dict[str, str]:
        """The plugins that failed to load, with why."""
        return {r.name: r.error for r in self._records if r.status == "failed"}

    def why_missing(self, what: str, hint: Hint) -> str:
        """Why `what`, which `hint`'s plugin would add, is not there (see :mod:`.hints`)."""
        return why_missing(what, hint, self.failed(), self.disabled)

    def refuse_missing(self, call: str, keywords: Iterable[str]) -> None:
        """A :class:`PoolConfigError` for the first of `keywords` (given to `call`, such as
        ``pool.run``) that one of our plugins would take, were it here (see :mod:`.hints`)."""
        for keyword in sorted(keywords):
            hint = hint_for_keyword(keyword)
            if hint is not None:
                raise PoolConfigError(self.why_missing(f"{call}({keyword}=)", hint))

    @property
    def manager(self) -> pluggy.PluginManager:
        return self._pm

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a plugin object or module given in code (``AgentPool(plugins=[...])``)."""
        plugin_name = name or _plugin_name(plugin)
        registered = self._pm.get_plugin(plugin_name)
        if isinstance(registered, StandIn) and registered.openrtc_plugin == plugin:
            return plugin_name  # given again (a worker plugin on a second server)
        if registered is not None and name is None:
            # Another object of the same class: number it rather than refuse it.
            plugin_name = next(
                f"{plugin_name}#{n}"
                for n in itertools.count(2)
                if not self._pm.has_plugin(f"{plugin_name}#{n}")
            )
        self._register(plugin_name, plugin, source="explicit")
        return plugin_name

    def use_worker_plugins(self, plugins: Sequence[object]) -> None:
        """Make `plugins` the worker plugins: those given for one server, replacing any given
        for an earlier server of the same pool (``create_server(plugins=...)``)."""
        if [plugin for _, plugin in self._worker] == list(plugins):
            return
        for name, _ in self._worker:
            self._pm.unregister(name=name)
        self._records = [r for r in self._records if r.name not in dict(self._worker)]
        self._worker = [(self.register(plugin), plugin) for plugin in plugins]

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Import and register every plugin installed under `group`, once.

        A plugin that fails to import is skipped with one warning, unless strict loading is on
        (``OPENRTC_STRICT_PLUGINS=1``), where it raises :class:`PluginLoadError`. Disabled
        plugins are never imported.
        """
        if self._loaded_entry_points:
            return
        self._loaded_entry_points = True
        installed = sorted({ep.name for ep in importlib.metadata.entry_points(group=group)})
        for name in installed:
            if name in self.disabled:
                self._records.append(
                    PluginRecord(name=name, status="disabled", source="entry-point")
                )
        loaded, failures, first_time = import_entry_points(
            group, tuple(n for n in installed if n not in self.disabled)
        )
        if first_time:
            self._warn_unknown_disabled(installed)
        for ext in loaded:
            self._deferring = True
            try:
                self._register(
                    ext.name,
                    ext.plugin,
                    source="entry-point",
                    entry_point=ext.entry_point,
                    warn=first_time,
                )
            finally:
                self._deferring = False
        self._deferring = True
        try:
            for entry_point, exc in failures:
                self._fail(entry_point.name, entry_point, exc, warn=first_time)
        finally:
            self._deferring = False
        failed = [r for r in self._records if r.status == "failed" and r.source == "entry-point"]
        if self.strict and failed:
            raise PluginLoadError(strict_message([(r.name, r.module, r.error) for r in failed]))

    def _warn_unknown_disabled(self, installed: Sequence[str]) -> None:
        """Warn (once per process, with the entry points) about disabled names no plugin has:
        a typo there would otherwise leave the plugin it meant running, silently."""
        known = {*installed, *(name for name, _ in _builtin_plugins())}
        known |= {r.name for r in self._records}
        unknown = sorted(self.disabled - known)
        if unknown:
            logger.warning(
                "%s names no plugin called %s; the plugins are: %s",
                DISABLE_ENV,
                ", ".join(unknown),
                ", ".join(sorted(known)),
            )

    def _register(
        self,
        name: str,
        plugin: object,
        *,
        source: str,
        entry_point: importlib.metadata.EntryPoint | None = None,
        warn: bool = True,
    ) -> None:
        dist = self._dist_info(entry_point)
        if source == "builtin":
            dist = {"distribution": "openrtc-core", "version": __version__}
        module = entry_point.value if entry_point is not None else _module_of(plugin)
        if name in self.disabled:
            self._records.append(
                PluginRecord(name=name, status="disabled", source=source, module=module, **dist)
            )
            logger.info("plugin %s disabled by %s", name, DISABLE_ENV)
            return
        stand_in = contained_plugin(self._pm, name, plugin, self.errors)
        try:
            self._pm.register(stand_in, name=name)
            self._pm.check_pending()
        except Exception as exc:
            if self._pm.is_registered(stand_in):
                self._pm.unregister(stand_in)
            self._fail(name, entry_point, exc, source=source, module=module, warn=warn)
            return
        hooks = tuple(sorted(c.name for c in self._pm.get_hookcallers(stand_in) or ()))
        self._records.append(
            PluginRecord(
                name=name, status="loaded", source=source, module=module, hooks=hooks, **dist
            )
        )

    def _fail(
        self,
        name: str,
        entry_point: importlib.metadata.EntryPoint | None,
        exc: BaseException,
        *,
        source: str = "entry-point",
        module: str = "",
        warn: bool = True,
    ) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        dist = self._dist_info(entry_point)
        where = module or (entry_point.value if entry_point is not None else "")
        self._records.append(
            PluginRecord(
                name=name, status="failed", source=source, module=where, error=reason, **dist
            )
        )
        if self.strict and not self._deferring:
            raise PluginLoadError(strict_message([(name, where, reason)])) from exc
        if not warn or self.strict:
            return
        logger.warning(
            "skipping plugin %s (%s): %s; set %s=1 to make this fatal",
            name,
            where,
            reason,
            STRICT_ENV,
        )

    def _dist_info(self, entry_point: importlib.metadata.EntryPoint | None) -> dict[str, Any]:
        if entry_point is None:
            return {}
        if self._dists is None:
            self._dists = entry_point_distributions()
        return dict(self._dists.get((entry_point.name, entry_point.value), {}))

    # -- calling ---------------------------------------------------------------------------
    #
    # Hooks are called through pluggy, so ordering, firstresult, wrappers and tracing behave as
    # pluggy documents. Each plain implementation was wrapped at registration (containment),
    # so a plugin that raises, or returns the wrong type, is logged and skipped.

    def route_job(self, job: JobView, pool: PoolView) -> RouteDecision | None:
        result: RouteDecision | None = self._pm.hook.openrtc_route_job(job=job, pool=pool)
        return result

    def resolve_tenant(self, job: JobView) -> TenantContext | None:
        """The job's tenant; None when no plugin tells.

        :raises HookFailedError: a resolver failed (the job must not run as no tenant).
        """
        result: TenantContext | None = self._pm.hook.openrtc_resolve_tenant(job=job)
        return result

    def admit_job(
        self, job: JobView, decision: RouteDecision, tenant: TenantContext | None
    ) -> Verdict:
        verdicts = self._pm.hook.openrtc_admit_job(job=job, decision=decision, tenant=tenant)
        for verdict in verdicts:
            if isinstance(verdict, Verdict) and not verdict.admitted:
                return verdict
        return Verdict.admit()

    async def claim_job(
        self, job: JobView, decision: RouteDecision, tenant: TenantContext | None
    ) -> Verdict:
        """Every plugin's claim, awaited in call order; the first refusal wins."""
        claims = self._pm.hook.openrtc_claim_job(job=job, decision=decision, tenant=tenant)
        for claim in claims:
            verdict = claim if isinstance(claim, Verdict) else await claim
            if verdict is not None and not verdict.admitted:
                return verdict
        return Verdict.admit()

    def job_released(
        self, job: JobView, tenant: TenantContext | None, outcome: SessionOutcome | None
    ) -> None:
        self._pm.hook.openrtc_job_released(job=job, tenant=tenant, outcome=outcome)

    def check_pool(self, pool: PoolView) -> None:
        """Every plugin's start-up check of `pool`.

        :raises HookFailedError: a plugin found something that would stop the worker.
        """
        self._pm.hook.openrtc_check_pool(pool=pool)

    def session_options(
        self,
        agent: str,
        tenant: TenantContext | None,
        job: JobView,
        pool: PoolView,
        userdata: Mapping[str, Any],
    ) -> dict[str, Any]:
        # A failing contribution raises HookFailedError: the session fails, never starting
        # without it (on the pool's own keys).
        contributions = self._pm.hook.openrtc_session_options(
            agent=agent, tenant=tenant, job=job, pool=pool, userdata=MappingProxyType(userdata)
        )
        # The earliest-called plugin wins on a shared key, so apply in reverse call order.
        return merge_options(*reversed(contributions))

    def start_session(self, launch: SessionLaunch) -> Awaitable[None] | None:
        """A plugin's start of the session, to await; None for the default start."""
        start: Awaitable[None] | None = self._pm.hook.openrtc_start_session(launch=launch)
        return start

    def isolation_backends(self) -> dict[str, Callable[[], IsolationBackend]]:
        return self._collect_registry(self._pm.hook.openrtc_register_isolation_backends)

    def _collect_registry(self, caller: Any) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def register(name: str, factory: Any) -> None:
            if not name or not isinstance(name, str):
                raise ValueError(f"{caller.name}: a registered name must be a non-empty string")
            # The first registration in call order wins; built-ins register last of all.
            found.setdefault(name, factory)

        caller(register=register)
        return found

    def agent_error(
        self, info: SessionInfo, session: AgentSession[Any], error: BaseException
    ) -> bool:
        """Whether a plugin handled an exception from the agent's code (the session goes on)."""
        return bool(self._pm.hook.openrtc_agent_error(info=info, session=session, error=error))

    def code_reloaded(self, event: ReloadEvent) -> None:
        self._pm.hook.openrtc_code_reloaded(event=event)

    def worker_started(self, pool: PoolView, server: AgentServer) -> None:
        self._pm.hook.openrtc_worker_started(pool=pool, server=server)

    async def process_started(self, pool: AgentPool, role: ProcessRole) -> None:
        await _each(self._pm.hook.openrtc_process_started(pool=pool, role=role))

    async def before_job(self, pool: AgentPool, role: ProcessRole, job: JobView) -> None:
        await _each(self._pm.hook.openrtc_before_job(pool=pool, role=role, job=job))

    async def worker_closing(self, pool: AgentPool) -> None:
        await _each(self._pm.hook.openrtc_worker_closing(pool=pool))

    def session_started(self, info: SessionInfo, session: AgentSession[Any]) -> None:
        self._pm.hook.openrtc_session_started(info=info, session=session)

    def session_ended(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        self._pm.hook.openrtc_session_ended(info=info, outcome=outcome)

    def drain_started(self, pool: PoolView) -> None:
        self._pm.hook.openrtc_drain_started(pool=pool)

    def worker_unhealthy(self, pool: PoolView, reason: str) -> None:
        self._pm.hook.openrtc_worker_unhealthy(pool=pool, reason=reason)

    def prewarm(self, proc: JobProcess, pool: PoolView) -> None:
        # Not contained: a worker without its shared models is broken, and should say so.
        self._pm.hook.openrtc_prewarm(proc=proc, pool=pool)

    def run_options(self) -> dict[str, Declared]:
        """Every run option the plugins add, by name (see :mod:`.runoptions`).

        :raises PoolConfigError: two plugins add the same flag, name or variable.
        """
        declared: list[Declared] = []
        distributions = {r.name: r.distribution for r in self._records}
        for impl in reversed(self._pm.hook.openrtc_add_run_options.get_hookimpls()):
            # Each plugin gets an `add` of its own, so a clash can name both plugins.
            plugin = impl.plugin_name

            def add(option: RunOption, plugin: str = plugin) -> None:
                if not isinstance(option, RunOption):
                    raise TypeError(f"add() takes a RunOption, not {type(option).__name__}")
                declared.append(Declared(option, plugin, distributions.get(plugin, "")))

            impl.function(*(add for _ in impl.argnames))  # pluggy passes arguments by position
        return check_declared(declared, {flag: "openrtc-core" for flag in VERB_FLAGS})

    def take_over_run(self, run: RunContext) -> int | None:
        """The exit status of the plugin that ran the verb itself; None when none did."""
        status: int | None = self._pm.hook.openrtc_take_over_run(run=run)
        return status

    def describe_run(self, verb: str, options: RunOptions) -> str | None:
        said: str | None = self._pm.hook.openrtc_describe_run(verb=verb, options=options)
        return said

    def log_fields(self) -> dict[str, Any]:
        """The fields plugins put on every log record (the first plugin called wins a key)."""
        return merge_options(*reversed(self._pm.hook.openrtc_log_fields()))

    def register_commands(self, app: typer.Typer) -> None:
        self._pm.hook.openrtc_register_commands.call_historic(kwargs={"app": app})


async def _each(results: Sequence[Any]) -> None:
    """The awaitables an awaited notification returned, awaited in call order (containment
    has made each failing one log and resolve to None)."""
    for result in results:
        if inspect.isawaitable(result):
            await result


def _plugin_name(plugin: object) -> str:
    if isinstance(plugin, ModuleType):
        return plugin.__name__
    return f"{type(plugin).__module__}.{type(plugin).__qualname__}"


def _module_of(plugin: object) -> str:
    if isinstance(plugin, ModuleType):
        return plugin.__name__
    return type(plugin).__module__
