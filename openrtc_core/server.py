"""Server assembly: livekit's ``AgentServer`` for a pool, with one universal ``rtc_session``.

The pieces, each in its own module: the request handler (:mod:`.admission`) routes and admits
jobs; the isolation backend (:mod:`.isolation`) decides where they run; the entrypoint
(:mod:`.entrypoint`) builds and starts each session there.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from livekit.agents import AgentServer
from livekit.agents.types import NOT_GIVEN, NotGivenOr

from . import _livekit
from ._livekit import jobs as livekit_jobs
from .admission import JobLedger, PoolRequestHandler
from .deployment import deploy_version, install_deploy_log_fields
from .entrypoint import PoolEntrypoint, PoolPrewarm, register_worker_plugins
from .errors import PoolConfigError
from .identity import install_worker_log_fields
from .isolation import IsolationBackend, WorkerSpec
from .isolation.coroutine.leftovers import stop_leftover_tasks
from .models import AGENT_ATTRIBUTE
from .options import SERVER_KEYWORDS_OWNED
from .routing import Router

if TYPE_CHECKING:
    from .plugins import PluginHost
    from .pool import AgentPool

logger = logging.getLogger("openrtc.worker")

HTTP_PORT_ENV: Final = "OPENRTC_HTTP_PORT"
"""The worker's health/HTTP port (livekit's default is 8081 in production, 0 in dev)."""
PRELOADED_CORE: Final = "openrtc_core"


class PoolServer(AgentServer):
    """livekit's AgentServer, telling plugins when the worker hosts the pool, starts draining
    and closes, and ending the calls a drain timeout cuts in the open."""

    def __init__(self, pool: AgentPool, *, deploy: str = "", **options: Any) -> None:
        super().__init__(**options)
        self.openrtc_pool = pool
        self.deploy = deploy
        """The worker's deployment version (see :mod:`.deployment`)."""
        self.cut_calls: list[tuple[str, str]] = []
        """``(job id, agent)`` of the calls the last drain's timeout cut."""
        self._hosting: asyncio.Task[None] | None = None
        self.owns_loop = False
        """The worker's event loop is its own (``openrtc start``): at close, every task left
        in it is cancelled, and the process exits rather than wait for one that will not
        stop (see :mod:`.isolation.coroutine.leftovers`)."""

    def start_hosting(self) -> None:
        """Tell plugins this process hosts the pool (``openrtc_process_started``), in the
        worker's loop, without holding up the worker."""
        pool = self.openrtc_pool
        self._hosting = asyncio.ensure_future(pool.plugins.process_started(pool, "worker"))

    async def run(self, *, devmode: bool = False, unregistered: bool = False) -> None:
        # From the first line the worker logs (livekit's CLI set up logging just before).
        install_deploy_log_fields(self.deploy, self.openrtc_pool.plugins.log_fields())
        await super().run(devmode=devmode, unregistered=unregistered)

    async def aclose(self) -> None:
        await super().aclose()
        if self._hosting is not None:
            await asyncio.gather(self._hosting, return_exceptions=True)
            await self.openrtc_pool.plugins.worker_closing(self.openrtc_pool)
        await stop_leftover_tasks(owns_loop=self.owns_loop)

    async def drain(self, timeout: NotGivenOr[int | None] = NOT_GIVEN) -> None:
        if not self.draining:
            self.openrtc_pool.plugins.drain_started(self.openrtc_pool.view())
        try:
            await super().drain(timeout)
        except TimeoutError:
            await self._end_cut_calls()
            raise

    async def _end_cut_calls(self) -> None:
        """The drain timed out: end the calls still live while the worker is still connected,
        so LiveKit hears that each ended (livekit's own close drops the connection first and
        leaves them RUNNING there), and name them in one line."""
        self.cut_calls = [
            (job.job.id, (job.accept_arguments.attributes or {}).get(AGENT_ATTRIBUTE, ""))
            for job in self.active_jobs
        ]
        if not self.cut_calls:
            return
        logger.error(
            "drain timed out with %d call(s) still live; ending them and reporting them to "
            "LiveKit as ended: %s",
            len(self.cut_calls),
            ", ".join(f"{job} ({agent or 'unrouted'})" for job, agent in self.cut_calls),
        )
        await _livekit.end_jobs_and_report(self)


def isolation_backend(pool: AgentPool) -> IsolationBackend:
    """A new instance of the backend the pool's ``isolation=`` names."""
    name = pool.settings.isolation
    backends = pool.plugins.isolation_backends()
    factory = backends.get(name)
    if factory is None:
        raise PoolConfigError(
            f"isolation={name!r} is not an installed isolation backend; "
            f"available: {', '.join(sorted(backends))}."
        )
    backend = factory()
    if not isinstance(backend, IsolationBackend):
        raise PoolConfigError(
            f"isolation backend {name!r} does not implement openrtc_core.IsolationBackend "
            "(name, traits, server_options(), job_pool(), install())"
        )
    return backend


def plugin_modules(plugins: PluginHost) -> list[str]:
    """The modules of the installed plugins loaded from entry points, in load order."""
    return [
        record.module.partition(":")[0]
        for record in plugins.records
        if record.status == "loaded" and record.source == "entry-point" and record.module
    ]


def _with_preloads(options: Mapping[str, Any], backend: Mapping[str, Any]) -> dict[str, Any]:
    """The backend's server options, its forkserver preloads added after the user's own."""
    merged = dict(backend)
    if "preload_modules" in backend:
        wanted = [*(options.get("preload_modules") or ()), *backend["preload_modules"]]
        merged["preload_modules"] = list(dict.fromkeys(wanted))
    return merged


def configured_port(pool: AgentPool) -> int | None:
    """The health/HTTP port asked for: ``OPENRTC_HTTP_PORT``, else the pool's
    ``server_options``; None for livekit's default."""
    if os.environ.get(HTTP_PORT_ENV, "").strip():
        return _port_from_env()
    port = pool.settings.server_options.get("port")
    return None if port is None else int(port)


def _port_from_env() -> int:
    raw = os.environ[HTTP_PORT_ENV].strip()
    if not raw.isdigit() or int(raw) > 65535:
        raise PoolConfigError(
            f"{HTTP_PORT_ENV}={raw!r} is not a port: use a number from 0 to 65535 "
            "(0 picks a free one)"
        )
    return int(raw)


def check_servable(pool: AgentPool) -> IsolationBackend:
    """What would stop a worker of `pool` at start, raised now as a :class:`PoolConfigError`
    (or a plugin's check failing, ``openrtc_check_pool``); the pool's isolation backend when
    nothing would."""
    if not pool.agents:
        raise PoolConfigError(
            "the pool has no agents: register at least one with pool.add(name, AgentClass)"
        )
    backend = isolation_backend(pool)
    pool.plugins.check_pool(pool.view())
    return backend


def _unhealthy(pool: AgentPool, reason: str) -> None:
    logger.error("this worker cannot recover by itself: %s", reason)
    pool.plugins.worker_unhealthy(pool.view(), reason)


def build_server(
    pool: AgentPool,
    *,
    plugins: Sequence[object] = (),
    **server_kwargs: Any,
) -> AgentServer:
    """Build livekit's ``AgentServer`` for `pool`.

    `plugins` are registered for this worker only and travel with the entrypoint into job
    processes (the testing plugin's simulated callers use this), as do the pool's run
    options. Keyword arguments go to ``AgentServer`` (``ws_url``, ``api_key``, ``port``,
    ``drain_timeout``, ...).

    The worker names its deployment version (:func:`.deployment.deploy_version`) on every
    job it accepts, every session and every log line.
    """
    owned = sorted(set(server_kwargs) & SERVER_KEYWORDS_OWNED)
    if owned:
        raise PoolConfigError(f"create_server: {', '.join(owned)} are set by the pool")
    pool.plugins.refuse_missing("create_server", server_kwargs)  # a missing plugin's option
    register_worker_plugins(pool, plugins)
    backend = check_servable(pool)
    deploy = deploy_version(pool)
    ledger = JobLedger(
        shares_tenants=backend.traits.jobs_run_in_worker, released=pool.plugins.job_released
    )
    worker = WorkerSpec(
        settings=pool.settings,
        session_cap=pool.settings.max_sessions or backend.traits.default_max_sessions,
        preload_modules=(PRELOADED_CORE, *plugin_modules(pool.plugins)),
        calls=ledger.calls,
        unhealthy=functools.partial(_unhealthy, pool),
    )
    options = {**pool.settings.server_options, **server_kwargs}
    if "port" not in options and os.environ.get(HTTP_PORT_ENV, "").strip():
        options["port"] = _port_from_env()
    options.update(_with_preloads(options, backend.server_options(worker)))
    server = PoolServer(pool, deploy=deploy, setup_fnc=PoolPrewarm(pool, plugins), **options)
    entrypoint = PoolEntrypoint(pool, plugins, ledger=ledger, deploy=deploy)
    job_pool = backend.job_pool(worker)
    if job_pool is not None:
        # The backend runs jobs itself instead of livekit's process pool (see _livekit).
        entrypoint.openrtc_job_pool = job_pool
        livekit_jobs.install_job_pool_selector()
    server.rtc_session(
        entrypoint,
        agent_name=pool.settings.agent_name,
        on_request=PoolRequestHandler(
            router=Router(pool.plugins, pool.view),
            plugins=pool.plugins,
            server=server,
            session_cap=worker.session_cap,
            ledger=ledger,
            deploy=deploy,
        ),
    )
    backend.install(server)

    def _on_started() -> None:
        # The executors exist now: a job that closes releases what admission counted.
        _livekit.on_job_closed(server, ledger.job_closed)
        install_worker_log_fields()
        pool.plugins.worker_started(pool.view(), server)
        server.start_hosting()

    server.on("worker_started", _on_started)
    return server
