"""The simulation plugin: jobs carrying a caller script run with no room, driven by it.

A worker gets it only when simulation is asked for, never from an entry point::

    server = pool.create_server(plugins=[Simulation(server_url)], ws_url=server_url, ...)

``openrtc simulate``, the ``openrtc_worker`` fixture and the benchmarks do exactly that. It
travels with livekit's entrypoint into job processes (process isolation), so it is a small
frozen value; the calls it runs are kept per process, by job id.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Mapping
from typing import Any

import attrs
from livekit.agents import get_job_context

from openrtc_core import (
    JobView,
    Outcome,
    PoolView,
    SessionInfo,
    SessionLaunch,
    SessionOutcome,
    hookimpl,
    job_view,
)

from . import offline
from .caller import SIMULATE_KEY, CallerScript, SimulatedCall, new_report, post_report
from .dispatch import REPORT_PATH

_CALLS: weakref.WeakValueDictionary[str, SimulatedCall] = weakref.WeakValueDictionary()


def report_url(server_url: str) -> str:
    """Where reports go: the HTTP form of the (loopback) LiveKit URL, at REPORT_PATH."""
    url = server_url.rstrip("/")
    if url.startswith("ws://"):
        url = "http://" + url[len("ws://") :]
    elif url.startswith("wss://"):
        url = "https://" + url[len("wss://") :]
    return url + REPORT_PATH


def is_simulated(job: JobView) -> bool:
    """Whether `job` carries a caller script."""
    return SIMULATE_KEY in job.job_metadata


@attrs.frozen
class Simulation:
    """Runs simulated calls on one worker; `server_url` is the loopback LiveKit URL."""

    server_url: str

    @hookimpl
    def openrtc_session_options(
        self, agent: str, job: JobView, pool: PoolView
    ) -> Mapping[str, Any] | None:
        # Providers that need keys or a network become scripted ones, in simulated calls only.
        if not is_simulated(job):
            return None
        return offline.replacements(pool.configured(agent)) or None

    @hookimpl
    def openrtc_start_session(self, launch: SessionLaunch) -> Awaitable[None] | None:
        if not is_simulated(launch.job):
            return None
        # Parsed before the session starts: a bad script fails the job at once.
        script = CallerScript.parse(launch.job.job_metadata[SIMULATE_KEY])
        return self._start(launch, script)

    async def _start(self, launch: SessionLaunch, script: CallerScript) -> None:
        await launch.session.start(launch.agent)
        launch.mark_connected()
        call = SimulatedCall(
            launch.ctx,
            launch.session,
            info=launch.info,
            script=script,
            greeting=launch.greeting,
            on_failed=launch.fail,
            failure=launch.failure,
            report_to=report_url(self.server_url),
            version=launch.version,
        )
        _CALLS[launch.info.job_id] = call
        call.start()

    @hookimpl
    def openrtc_session_ended(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        # A call whose session never started still reports, so a driver never waits for it.
        if info.job_id in _CALLS or outcome.outcome is not Outcome.FAILED:
            return
        ctx = get_job_context(required=False)
        if ctx is None or not is_simulated(job_view(ctx.job, warn=False)):
            return
        report = new_report(info, outcome="failed", error=outcome.error)
        url = report_url(self.server_url)

        async def post(_reason: str) -> None:
            await post_report(url, report)

        ctx.add_shutdown_callback(post)
