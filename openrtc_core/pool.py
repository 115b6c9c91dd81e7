"""AgentPool: many livekit Agents behind one worker.

The pool registers one universal ``rtc_session`` on livekit's ``AgentServer``. At request time
it routes the job to an agent (plugins decide), admits it (plugins may refuse), and accepts it
naming the agent in the participant attribute ``openrtc.agent``. In the job, the session factory
builds the ``AgentSession`` from pool defaults, the agent's overrides and plugin contributions.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs
from livekit.agents import Agent, AgentServer

from .errors import PoolConfigError
from .isolation import IsolationBackend
from .models import PoolView, TenantContext
from .options import check_session_options
from .plugins import PluginHost
from .registry import SessionRegistry
from .routing import Router

if TYPE_CHECKING:
    from .coroutine import CoroutineJobPool
    from .models import AgentContext

logger = logging.getLogger("openrtc.pool")

AGENT_ATTRIBUTE: Final = "openrtc.agent"
AGENTS_ENTRY_POINT_GROUP: Final = "openrtc.agents"
HTTP_PORT_ENV: Final = "OPENRTC_HTTP_PORT"
"""The worker's health/HTTP port (livekit's default is 8081 in production, 0 in dev)."""
NAME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")

AgentFactory = Callable[["AgentContext"], Agent]
AgentTarget = type[Agent] | AgentFactory


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()

_SERVER_KEYWORDS_OWNED = frozenset(
    {
        "setup_fnc",
        "job_executor_type",
        "job_memory_limit_mb",
        "job_memory_warn_mb",
        "load_fnc",
        "load_threshold",
    }
)
# num_idle_processes stays the user's for process isolation (warm job processes); the
# coroutine backend sets it itself, as its share of livekit's load estimate.


@attrs.frozen(kw_only=True)
class PoolSettings:
    """Worker-level settings of a pool (everything that is not a session option)."""

    agent_name: str = ""
    isolation: str = "coroutine"
    max_sessions: int | None = None
    greeting: str | None = None
    job_memory_limit_mb: float = 0
    job_memory_warn_mb: float = 1000
    server_options: Mapping[str, Any] = attrs.field(factory=dict)
    version: str = ""


@attrs.frozen(kw_only=True)
class AgentSpec:
    """One registered agent: its name, how to build it, and its session overrides."""

    name: str
    target: AgentTarget
    overrides: Mapping[str, Any] = attrs.field(factory=dict)
    greeting: str | _Unset | None = UNSET
    default: bool = False

    @property
    def is_factory(self) -> bool:
        return not isinstance(self.target, type)

    def greeting_or(self, pool_greeting: str | None) -> str | None:
        return pool_greeting if isinstance(self.greeting, _Unset) else self.greeting


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


def _caller_module(depth: int) -> tuple[str, str]:
    frame = sys._getframe(depth)
    module = str(frame.f_globals.get("__name__", ""))
    file = str(frame.f_globals.get("__file__") or "")
    return module, file


@attrs.frozen
class ModuleOrigin:
    """Where a pool was built, so a job process can rebuild the same pool by importing it.

    livekit ships the entrypoint to a job process by pickling; a pool pickles as this
    reference (a pool holds lambdas, live plugin managers and loaded models, which must not be
    copied). `index` tells apart several pools built by one module.
    """

    module: str
    file: str
    index: int

    @property
    def key(self) -> str:
        return f"{_canonical_module(self.module)}:{self.index}"

    def rebuild(self) -> AgentPool:
        name = _canonical_module(self.module)
        if name == "__main__":
            # multiprocessing imports the main script as __mp_main__ in the child.
            main = sys.modules.get("__mp_main__") or sys.modules.get("__main__")
            if main is None or self.key not in _POOLS:
                _import_from_file("__mp_main__", self.file)
        elif name not in sys.modules:
            try:
                importlib.import_module(name)
            except ImportError:
                if not self.file:
                    raise
                _import_from_file(name, self.file)
        pool = _POOLS.get(self.key)
        if pool is None:
            raise RuntimeError(
                f"the pool defined in {self.module} ({self.file}) was not rebuilt in this job "
                "process: create the AgentPool at module level, unconditionally, so importing "
                "the module recreates it."
            )
        return pool


def _canonical_module(name: str) -> str:
    return "__main__" if name == "__mp_main__" else name


def _import_from_file(name: str, file: str) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import the pool module from {file!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


@attrs.frozen
class CallOrigin:
    """A pool built by calling a function (for example from a directory of agent modules)."""

    function: str  # "module:qualname"
    args: tuple[Any, ...] = ()

    @property
    def key(self) -> str:
        return f"call:{self.function}:{self.args!r}"

    def rebuild(self) -> AgentPool:
        if self.key in _POOLS:
            return _POOLS[self.key]
        module_name, _, qualname = self.function.partition(":")
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
        pool = target(*self.args)
        if not isinstance(pool, AgentPool):
            raise RuntimeError(f"{self.function} did not return an AgentPool")
        return pool


Origin = ModuleOrigin | CallOrigin

_POOLS: dict[str, AgentPool] = {}
_POOLS_PER_MODULE: dict[str, int] = {}


def _with_preloads(options: Mapping[str, Any], backend: Mapping[str, Any]) -> dict[str, Any]:
    """The backend's server options, its forkserver preloads added to the user's own."""
    merged = dict(backend)
    if "preload_modules" in backend:
        wanted = [*(options.get("preload_modules") or ()), *backend["preload_modules"]]
        merged["preload_modules"] = list(dict.fromkeys(wanted))
    return merged


def _restore_pool(origin: Origin, replay: tuple[str, ...]) -> AgentPool:
    pool = origin.rebuild()
    for step in replay:
        if step == "discover_entry_points" and step not in pool._replay:
            pool.discover_entry_points()
    return pool


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
        version: str = "",
        plugins: Sequence[object] = (),
        load_plugins: bool = True,
        **session_defaults: Any,
    ) -> None:
        owned = sorted(set(server_options or {}) & _SERVER_KEYWORDS_OWNED)
        if owned:
            raise PoolConfigError(
                f"server_options: {', '.join(owned)} are set by the pool; use "
                "AgentPool(isolation=..., job_memory_limit_mb=..., job_memory_warn_mb=...) "
                "and the prewarm hook instead."
            )
        if max_sessions is not None and (
            isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1
        ):
            raise PoolConfigError(
                f"max_sessions={max_sessions!r}: use a whole number of at least 1, or None for "
                "the backend's default (50 for coroutine isolation)."
            )
        self.settings = PoolSettings(
            agent_name=agent_name,
            isolation=isolation,
            max_sessions=max_sessions,
            greeting=greeting,
            job_memory_limit_mb=job_memory_limit_mb,
            job_memory_warn_mb=job_memory_warn_mb,
            server_options=dict(server_options or {}),
            version=version,
        )
        self.session_defaults: dict[str, Any] = check_session_options(
            session_defaults, where="AgentPool(...)"
        )
        self._agents: dict[str, AgentSpec] = {}
        self.sessions = SessionRegistry()
        self.coroutine_pool: CoroutineJobPool | None = None
        # job id -> tenant resolved at admission, for jobs that start in this process.
        self.admitted_tenants: dict[str, TenantContext | None] = {}
        self.jobs_run_here = False
        # max_sessions, or the backend's default cap (coroutine: 50); None for no cap.
        self.session_cap: int | None = None
        self._plugins = PluginHost()
        for plugin in plugins:
            self._plugins.register(plugin)
        self._load_plugins = load_plugins
        self._plugins_loaded = False
        self._replay: list[str] = []
        self.router = Router(self)
        self._origin: Origin = self._register_origin()

    # -- identity across processes -------------------------------------------------------

    def _register_origin(self) -> Origin:
        module, file = _caller_module(3)
        canonical = _canonical_module(module)
        index = _POOLS_PER_MODULE.get(canonical, 0)
        _POOLS_PER_MODULE[canonical] = index + 1
        origin = ModuleOrigin(module, file, index)
        _POOLS.setdefault(origin.key, self)
        return origin

    def _set_origin(self, origin: Origin) -> None:
        """Declare how a job process rebuilds this pool (for pools built by a function)."""
        self._origin = origin
        _POOLS[origin.key] = self

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_pool, (self._origin, tuple(self._replay)))

    # -- plugins ---------------------------------------------------------------------------

    @property
    def plugins(self) -> PluginHost:
        """The plugin host, with installed plugins loaded on first use."""
        if self._load_plugins and not self._plugins_loaded:
            self._plugins_loaded = True
            self._plugins.load_entry_points()
        return self._plugins

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

    def view(self) -> PoolView:
        return PoolView(
            agents=frozenset(self._agents),
            default_agent=self.default_agent,
            dispatch_name=self.settings.agent_name,
        )

    def needs_shared_vad(self) -> bool:
        """True when some agent would use the pool's shared VAD (none was given)."""
        if "vad" in self.session_defaults:
            return False
        return any("vad" not in s.overrides for s in self._agents.values()) or not self._agents

    def discover_entry_points(self, group: str = AGENTS_ENTRY_POINT_GROUP) -> list[str]:
        """Register the agents that installed packages expose under `group`.

        An entry point may name an ``Agent`` subclass (registered under the entry point's name,
        or the name its ``@openrtc_core.agent(...)`` decorator sets) or a function
        ``register(pool)`` that adds agents itself. Returns the names added.
        """
        from .targets import register_agent_object

        before = set(self._agents)
        for entry_point in sorted(importlib.metadata.entry_points(group=group), key=_ep_name):
            try:
                obj = entry_point.load()
            except Exception as exc:
                logger.warning(
                    "skipping agent entry point %s (%s): %s: %s",
                    entry_point.name,
                    entry_point.value,
                    type(exc).__name__,
                    exc,
                )
                continue
            register_agent_object(self, obj, default_name=entry_point.name)
        if "discover_entry_points" not in self._replay:
            self._replay.append("discover_entry_points")
        return sorted(set(self._agents) - before)

    # -- worker ----------------------------------------------------------------------------

    def isolation_backend(self) -> IsolationBackend:
        backends = self.plugins.isolation_backends()
        factory = backends.get(self.settings.isolation)
        if factory is None:
            raise PoolConfigError(
                f"isolation={self.settings.isolation!r} is not an installed isolation backend; "
                f"available: {', '.join(sorted(backends))}."
            )
        backend = factory()
        if not isinstance(backend, IsolationBackend):
            raise PoolConfigError(
                f"isolation backend {self.settings.isolation!r} does not implement "
                "server_options() and install()"
            )
        return backend

    def create_server(self, *, simulate: bool = False, **server_kwargs: Any) -> AgentServer:
        """Build livekit's ``AgentServer`` for this pool, with one universal ``rtc_session``.

        `simulate` switches on simulated jobs (scripted callers, no room): for tests and
        ``openrtc simulate`` only, never in production. Other keyword arguments go to
        ``AgentServer`` (``ws_url``, ``api_key``, ``port``, ``drain_timeout``, ...).
        """
        from .worker import PoolEntrypoint, PoolPrewarm, PoolRequestHandler, PoolServer

        if not self._agents:
            raise PoolConfigError(
                "the pool has no agents: register at least one with pool.add(name, AgentClass)"
            )
        backend = self.isolation_backend()
        self.jobs_run_here = bool(getattr(backend, "jobs_run_in_worker", False))
        self.session_cap = self.settings.max_sessions or getattr(
            backend, "default_max_sessions", None
        )
        owned = sorted(set(server_kwargs) & _SERVER_KEYWORDS_OWNED)
        if owned:
            raise PoolConfigError(f"create_server: {', '.join(owned)} are set by the pool")
        options = {**self.settings.server_options, **server_kwargs}
        if "port" not in options and os.environ.get(HTTP_PORT_ENV, "").strip():
            options["port"] = _port_from_env()
        options.update(_with_preloads(options, backend.server_options(self)))
        server = PoolServer(self, setup_fnc=PoolPrewarm(self), **options)
        entrypoint = PoolEntrypoint(self, simulate=simulate)
        job_pool = getattr(backend, "job_pool", None)
        if job_pool is not None:
            # The backend runs jobs itself instead of livekit's process pool (see _livekit).
            entrypoint.openrtc_job_pool = job_pool(self)
        server.rtc_session(
            entrypoint,
            agent_name=self.settings.agent_name,
            on_request=PoolRequestHandler(self, server, simulate=simulate),
        )
        backend.install(server, self)

        def _on_started() -> None:
            self.plugins.worker_started(self, server)

        server.on("worker_started", _on_started)
        return server

    def run(self, argv: Sequence[str] | None = None, *, prog_name: str | None = None) -> None:
        """Run the worker with livekit's CLI: ``python app.py dev|start|console|connect``.

        Call it under ``if __name__ == "__main__":`` (job processes re-import the module).
        """
        from .cli import run_livekit_cli

        run_livekit_cli(self, list(sys.argv[1:] if argv is None else argv), prog_name=prog_name)

    def describe(self) -> str:
        names = ", ".join(
            f"{s.name}{' (default)' if s.default else ''}" for s in self._agents.values()
        )
        return f"AgentPool[{self.settings.isolation}] agents: {names or 'none'}"

    def __repr__(self) -> str:
        return f"<{self.describe()}>"


def _port_from_env() -> int:
    raw = os.environ[HTTP_PORT_ENV].strip()
    if not raw.isdigit() or int(raw) > 65535:
        raise PoolConfigError(
            f"{HTTP_PORT_ENV}={raw!r} is not a port: use a number from 0 to 65535 "
            "(0 picks a free one)"
        )
    return int(raw)


def _ep_name(entry_point: importlib.metadata.EntryPoint) -> str:
    return entry_point.name
