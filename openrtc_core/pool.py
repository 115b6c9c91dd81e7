"""AgentPool: the agents one worker hosts, their session options and the pool's settings.

The pool is a registry. Building livekit's ``AgentServer`` from it is
:mod:`openrtc_core.server`'s job; finding it again in a job process is
:mod:`openrtc_core.origins`'; loading it from a CLI target is :mod:`openrtc_core.targets`'.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import attrs
from livekit.agents import Agent

from . import origins, runoptions
from .errors import PoolConfigError
from .models import PoolSettings, PoolView
from .options import check_pool_settings, check_session_options, merge_options, session_keywords
from .plugins import PluginHost
from .registry import SessionRegistry
from .server import build_server

if TYPE_CHECKING:
    from livekit.agents import AgentServer

    from .models import AgentContext

NAME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")

AgentFactory = Callable[["AgentContext"], Agent]
AgentTarget = type[Agent] | AgentFactory


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()
"""The value of an agent's `greeting` when the pool's greeting applies to it."""
Unset = _Unset


@attrs.frozen(kw_only=True)
class AgentSpec:
    """One registered agent: its name, how to build it, and its session overrides."""

    name: str
    target: AgentTarget
    overrides: Mapping[str, Any] = attrs.field(factory=dict)
    greeting: str | _Unset | None = UNSET
    default: bool = False
    version: str = ""
    """The code version of `target` (a content hash) when a reload strategy stamped one."""

    @property
    def is_factory(self) -> bool:
        return not isinstance(self.target, type)

    def greeting_or(self, pool_greeting: str | None) -> str | None:
        return pool_greeting if isinstance(self.greeting, _Unset) else self.greeting


RESTART_SETTINGS: Final = (
    "agent_name",
    "isolation",
    "max_sessions",
    "job_memory_limit_mb",
    "job_memory_warn_mb",
    "server_options",
)
"""Pool settings a running worker cannot change: they shape its registration and executors."""


@attrs.frozen(kw_only=True)
class PoolChange:
    """What :meth:`AgentPool.adopt` changed: agents by name, and what it could not change."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    code_changed: tuple[str, ...] = ()
    """Agents whose code version differs (their live sessions may switch to the new code)."""
    options_changed: tuple[str, ...] = ()
    """Agents whose session options, greeting or default flag differ (new calls get them)."""
    needs_restart: tuple[str, ...] = ()
    """Worker settings that differ and were kept: they apply at the next start."""

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.code_changed or self.options_changed)


@attrs.frozen
class PoolState:
    """What :meth:`AgentPool.adopt` replaces, captured to put back (:meth:`AgentPool.restore`)."""

    agents: Mapping[str, AgentSpec]
    session_defaults: Mapping[str, Any]
    declared: PoolSettings
    greeting: str | None


def _same_option(old: object, new: object) -> bool:
    """Whether two option values are alike: equal, or objects of classes of the same name
    (a provider instance built again by reloaded code never compares equal)."""
    if isinstance(old, str | int | float | bool | type(None)) or isinstance(
        new, str | int | float | bool | type(None)
    ):
        return old == new
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return old.keys() == new.keys() and all(_same_option(old[k], new[k]) for k in old)
    if isinstance(old, list | tuple) and isinstance(new, list | tuple):
        return len(old) == len(new) and all(map(_same_option, old, new))
    return type(old).__qualname__ == type(new).__qualname__


def _same_setup(old: AgentSpec, new: AgentSpec) -> bool:
    return (
        old.greeting == new.greeting
        and old.default == new.default
        and _same_option(dict(old.overrides), dict(new.overrides))
    )


def validate_agent_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise PoolConfigError(
            f"agent name {name!r} is not allowed: use lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit (for example 'support' or 'sales-eu')."
        )
    return name


def check_agent_target(name: str, agent: object) -> AgentTarget:
    if isinstance(agent, type):
        if issubclass(agent, Agent):
            return agent
        raise PoolConfigError(
            f"agent {name!r}: {agent.__qualname__} is a class but not a livekit Agent subclass; "
            "pass a subclass of livekit.agents.Agent, or a factory function returning an Agent."
        )
    if isinstance(agent, Agent):
        raise PoolConfigError(
            f"agent {name!r}: got an Agent instance ({type(agent).__qualname__}); one instance "
            "cannot serve many calls. Pass the class, or a factory such as "
            f"`lambda ctx: {type(agent).__qualname__}(...)`."
        )
    if callable(agent):
        return agent
    raise PoolConfigError(
        f"agent {name!r}: {agent!r} is neither an Agent subclass nor a callable; pass a "
        "livekit.agents.Agent subclass or a factory `ctx -> Agent`."
    )


class AgentPool:
    """Many livekit ``Agent`` classes served by one worker.

    Keyword arguments that are not pool settings are session defaults, passed to livekit's
    ``AgentSession`` for every agent unless an agent overrides them (``pool.add(..., llm=...)``).
    """

    def __init__(
        self,
        *,
        agent_name: str = "",
        isolation: str = "coroutine",
        max_sessions: int | None = None,
        greeting: str | None = None,
        job_memory_limit_mb: float = 0,
        job_memory_warn_mb: float = 1000,
        server_options: Mapping[str, Any] | None = None,
        code_version: str = "",
        plugins: Sequence[object] = (),
        load_plugins: bool = True,
        **session_defaults: Any,
    ) -> None:
        check_pool_settings(max_sessions=max_sessions, server_options=server_options or {})
        if "version" in session_defaults:
            warnings.warn(
                "AgentPool(version=...) is now AgentPool(code_version=...): the version of "
                "the pool's code (the deployment version is --deploy-version)",
                DeprecationWarning,
                stacklevel=2,
            )
            code_version = code_version or str(session_defaults.pop("version"))
        self._plugins = PluginHost()
        for plugin in plugins:
            self._plugins.register(plugin)
        self._load_plugins = load_plugins
        self._plugins_loaded = False
        self._pool_keywords = self._take_pool_keywords(session_defaults)
        """Run options given here (``AgentPool(tenants=...)``), as given."""
        self._run_options: runoptions.RunOptions | None = None
        self._settings = PoolSettings(
            agent_name=agent_name,
            isolation=isolation,
            max_sessions=max_sessions,
            greeting=greeting,
            job_memory_limit_mb=job_memory_limit_mb,
            job_memory_warn_mb=job_memory_warn_mb,
            server_options=dict(server_options or {}),
            code_version=code_version,
        )
        self._declared = self._settings
        """The settings as the code gave them (a command line may replace ``settings``)."""
        self._session_defaults: Mapping[str, Any] = MappingProxyType(
            check_session_options(session_defaults, where="AgentPool(...)", pool_settings=True)
        )
        self._agents: dict[str, AgentSpec] = {}
        self._view: PoolView | None = None
        self.sessions = SessionRegistry()
        self.replayed: set[str] = set()
        """Origin replay steps already applied to this pool in this process."""
        self._origin: origins.Origin = origins.module_origin(sys._getframe(1).f_globals)
        origins.remember(self._origin, self)

    @property
    def session_defaults(self) -> Mapping[str, Any]:
        """The session options every agent gets unless it overrides them (read-only)."""
        return self._session_defaults

    @property
    def settings(self) -> PoolSettings:
        """Worker-level settings; replace them whole (``attrs.evolve``), never in part."""
        return self._settings

    @settings.setter
    def settings(self, settings: PoolSettings) -> None:
        self._settings = settings
        self._view = None

    # -- identity across processes -------------------------------------------------------

    @property
    def origin(self) -> origins.Origin:
        """How a job process finds this pool again (see :mod:`openrtc_core.origins`)."""
        return self._origin

    @origin.setter
    def origin(self, origin: origins.Origin) -> None:
        self._origin = origin
        origins.remember(origin, self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (origins.restore_pool, (self._origin,))

    # -- plugins ---------------------------------------------------------------------------

    @property
    def plugins(self) -> PluginHost:
        """The plugin host, with installed plugins loaded on first use."""
        if self._load_plugins and not self._plugins_loaded:
            self._plugins_loaded = True
            self._plugins.load_entry_points()
        return self._plugins

    def _take_pool_keywords(self, keywords: dict[str, Any]) -> dict[str, Any]:
        """Take out of `keywords` the run options plugins let ``AgentPool(...)`` set; the rest
        are session defaults."""
        others = set(keywords) - session_keywords()
        if not others:
            return {}
        declared = self.plugins.run_options()
        if self._load_plugins:
            # A keyword of a plugin that is not here (not installed, disabled): say so, rather
            # than take it for a misspelt session option.
            self.plugins.refuse_missing("AgentPool", others - set(declared))
        return {
            name: keywords.pop(name)
            for name in sorted(others)
            if name in declared and declared[name].option.pool_keyword
        }

    @property
    def run_options(self) -> runoptions.RunOptions:
        """The values of the options plugins add (:mod:`.runoptions`) for this pool's run:
        those the command line resolved, else (a server built in code) from the pool's own
        keywords, the environment and the defaults."""
        if self._run_options is None:
            self._run_options = runoptions.inherited() or self.resolve_run_options("")
        return self._run_options

    def resolve_run_options(
        self,
        verb: str,
        flags: runoptions.Given | None = None,
        run_keywords: Mapping[str, Any] | None = None,
    ) -> runoptions.RunOptions:
        """The run options' values for `verb`, given `flags` (from the command line) and
        `run_keywords` (``pool.run(...)``, ``create_server(...)``) above the pool's own."""
        return runoptions.resolve(
            self.plugins.run_options(),
            verb,
            flags=flags,
            run_keywords=run_keywords,
            pool_keywords=self._pool_keywords,
        )

    def use_run_options(self, options: runoptions.RunOptions) -> None:
        """Make `options` this pool's run options (a run resolved them)."""
        self._run_options = options
        self._view = None

    # -- agents ----------------------------------------------------------------------------

    def add(
        self,
        name: str,
        agent: AgentTarget,
        *,
        default: bool = False,
        greeting: str | _Unset | None = UNSET,
        **overrides: Any,
    ) -> AgentSpec:
        """Register an agent under `name`: an ``Agent`` subclass or a factory ``ctx -> Agent``.

        Keyword arguments override the pool's session defaults for this agent, key by key.
        ``greeting=None`` turns the pool's greeting off for it; ``default=True`` routes jobs
        that no other rule matched to it.
        """
        validate_agent_name(name)
        if name in self._agents:
            raise PoolConfigError(
                f"agent {name!r} is already registered; each agent name must be unique in a pool."
            )
        target = check_agent_target(name, agent)
        if default:
            current = self.default_agent
            if current is not None:
                raise PoolConfigError(
                    f"agent {name!r} cannot be the default: {current!r} already is."
                )
        if not (greeting is None or isinstance(greeting, str | _Unset)):
            raise PoolConfigError(f"agent {name!r}: greeting must be a string or None")
        spec = AgentSpec(
            name=name,
            target=target,
            overrides=check_session_options(overrides, where=f"pool.add({name!r}, ...)"),
            greeting=greeting,
            default=default,
        )
        self._agents[name] = spec
        self._view = None
        return spec

    @property
    def agents(self) -> Mapping[str, AgentSpec]:
        return dict(self._agents)

    @property
    def default_agent(self) -> str | None:
        return next((s.name for s in self._agents.values() if s.default), None)

    def get(self, name: str) -> AgentSpec:
        try:
            return self._agents[name]
        except KeyError:
            raise PoolConfigError(
                f"no agent named {name!r} in this pool; registered: {', '.join(self._agents)}"
            ) from None

    def stamp_versions(self, versions: Mapping[str, str]) -> None:
        """Record the code version of each named agent (sessions carry it from then on)."""
        for name, version in versions.items():
            spec = self.get(name)
            self._agents[name] = attrs.evolve(spec, version=version)
        self._view = None

    def adopt(self, other: AgentPool, *, versions: Mapping[str, str] | None = None) -> PoolChange:
        """Take `other`'s agents, session defaults and greeting, as one step.

        `other` is this pool's code loaded again (a reload strategy builds it); `versions`
        stamps code versions on its agents. New sessions get the adopted agents at once;
        live ones keep what they were built with. Worker settings that differ (isolation,
        max_sessions, ...) cannot change in a running worker: they are kept and listed in
        the result's ``needs_restart``.
        """
        stamped = {
            name: attrs.evolve(spec, version=(versions or {}).get(name, spec.version))
            for name, spec in other._agents.items()
        }
        defaults_changed = not _same_option(
            dict(self._session_defaults), dict(other._session_defaults)
        )
        greeting_changed = self.settings.greeting != other.settings.greeting
        change = PoolChange(
            added=tuple(n for n in stamped if n not in self._agents),
            removed=tuple(n for n in self._agents if n not in stamped),
            code_changed=tuple(
                n
                for n, spec in stamped.items()
                if n in self._agents and spec.version != self._agents[n].version
            ),
            options_changed=tuple(
                n
                for n, spec in stamped.items()
                if n in self._agents
                and (defaults_changed or greeting_changed or not _same_setup(self._agents[n], spec))
            ),
            needs_restart=tuple(
                key
                for key in RESTART_SETTINGS
                if getattr(self._declared, key) != getattr(other._declared, key)
            )
            + tuple(
                key
                for key in sorted({*self._pool_keywords, *other._pool_keywords})
                if self._pool_keywords.get(key) != other._pool_keywords.get(key)
            ),
        )
        self._declared = other._declared
        self._agents = stamped
        self._session_defaults = other._session_defaults
        self._settings = attrs.evolve(self._settings, greeting=other.settings.greeting)
        self._view = None
        return change

    def capture(self) -> PoolState:
        """The agents, session defaults and greeting as they are now (to restore later)."""
        return PoolState(
            agents=dict(self._agents),
            session_defaults=self._session_defaults,
            declared=self._declared,
            greeting=self.settings.greeting,
        )

    def restore(self, state: PoolState) -> None:
        """Put back what :meth:`capture` saw: new sessions get those agents again."""
        self._agents = dict(state.agents)
        self._session_defaults = state.session_defaults
        self._declared = state.declared
        self._settings = attrs.evolve(self._settings, greeting=state.greeting)
        self._view = None

    def configured_options(self, name: str) -> dict[str, Any]:
        """`name`'s session options: the pool defaults with the agent's overrides applied."""
        return merge_options(self.session_defaults, self.get(name).overrides)

    def view(self) -> PoolView:
        """The frozen view hooks receive (rebuilt when agents or settings change)."""
        if self._view is None:
            self._view = self._build_view()
        return self._view

    def _build_view(self) -> PoolView:
        return PoolView(
            agents=frozenset(self._agents),
            default_agent=self.default_agent,
            dispatch_name=self.settings.agent_name,
            isolation=self.settings.isolation,
            code_version=self.settings.code_version,
            options={name: self.configured_options(name) for name in self._agents},
            agent_versions={n: s.version for n, s in self._agents.items() if s.version},
            run_options=dict(self.run_options),
        )

    # -- running ---------------------------------------------------------------------------

    def create_server(self, *, plugins: Sequence[object] = (), **kwargs: Any) -> AgentServer:
        """Build livekit's ``AgentServer`` for this pool (see :func:`.server.build_server`).

        Keywords that name a run option a plugin adds (as they would on the command line)
        set it for this server, above the pool's own; the others go to ``AgentServer``.
        """
        declared = self.plugins.run_options()
        run_keywords = {k: kwargs.pop(k) for k in list(kwargs) if k in declared}
        if run_keywords:
            self.use_run_options(self.resolve_run_options("", run_keywords=run_keywords))
        return build_server(self, plugins=plugins, **kwargs)

    def run(
        self,
        argv: Sequence[str] | None = None,
        *,
        prog_name: str | None = None,
        plugins: Sequence[object] = (),
        **options: Any,
    ) -> None:
        """Run the worker with livekit's CLI: ``python app.py dev|start|console|connect``.

        Keywords set the run options plugins add, as their flags would, below a flag given
        on the command line (``deploy_version="v1.4"``, or a plugin's, by its name);
        ``openrtc VERB --help`` lists them. `plugins` are registered for the worker(s) only,
        like ``create_server(plugins=...)``. Call it under ``if __name__ == "__main__":``
        (job processes re-import the module).
        """
        # The command line is the top layer, above the pool: imported when a pool runs.
        from .cli import run_livekit

        args = list(sys.argv[1:] if argv is None else argv)
        run_livekit(self, args, prog_name=prog_name, plugins=plugins, run_keywords=options)

    def describe(self) -> str:
        names = ", ".join(
            f"{s.name}{' (default)' if s.default else ''}" for s in self._agents.values()
        )
        return f"AgentPool[{self.settings.isolation}] agents: {names or 'none'}"

    def __repr__(self) -> str:
        return f"<{self.describe()}>"
