"""The simulation plugin: jobs carrying a caller script run with no room, driven by it.

A worker gets it only when simulation is asked for, never from an entry point::

    server = pool.create_server(plugins=[Simulation(server_url)], ws_url=server_url, ...)

``openrtc simulate``, the ``openrtc_worker`` fixture and the benchmarks do exactly that. It
travels with livekit's entrypoint into job processes (process isolation), so it is a small
frozen value; the calls it runs are kept per process, by job id.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Awaitable, Mapping
from typing import Any

import attrs
from livekit.agents import get_job_context

from openrtc_core import (
    SHARED_VAD_KEY,
    JobView,
    Outcome,
    PoolView,
    SessionInfo,
    SessionLaunch,
    SessionOutcome,
    hookimpl,
    job_view,
    worker_identity,
)

from . import offline
from .caller import (
    SIMULATE_KEY,
    CallerScript,
    ScriptError,
    SimulatedCall,
    new_report,
    post_report,
)
from .dispatch import REPORT_PATH, WORKER_PATH
from .providers import ScriptedSTT, ScriptedTTS
from .voice import MeteredVAD
from .voice_call import VoiceCall
from .voice_caller import VoiceCaller
from .voice_clips import VoiceUnavailable

_CALLS: weakref.WeakValueDictionary[str, SimulatedCall] = weakref.WeakValueDictionary()


def report_url(server_url: str, path: str = REPORT_PATH) -> str:
    """Where reports go: the HTTP form of the (loopback) LiveKit URL, at `path`."""
    url = server_url.rstrip("/")
    if url.startswith("ws://"):
        url = "http://" + url[len("ws://") :]
    elif url.startswith("wss://"):
        url = "https://" + url[len("wss://") :]
    return url + path


_POSTS: set[asyncio.Task[None]] = set()


def is_simulated(job: JobView) -> bool:
    """Whether `job` carries a caller script."""
    return SIMULATE_KEY in job.job_metadata


def _voice(job: JobView) -> bool:
    """Whether `job`'s caller speaks (a script that does not parse fails when it starts)."""
    try:
        return CallerScript.parse(job.job_metadata[SIMULATE_KEY]).voice
    except ScriptError:
        return False


_TURN_DETECTORS: list[Any] = []


def _turn_detector() -> Any:
    """livekit's local end-of-turn model, one per process (its first use loads it)."""
    if not _TURN_DETECTORS:
        from livekit.agents import inference

        _TURN_DETECTORS.append(inference.TurnDetector())
    return _TURN_DETECTORS[0]


def voice_options(configured: Mapping[str, Any], userdata: Mapping[str, Any]) -> dict[str, Any]:
    """A voice call's session options: a scripted STT answering each line the caller speaks,
    a scripted TTS making audio of each reply's length, the pool's VAD (the shared one when
    the agent names none) metered for this call, and livekit's local turn detector when the
    pool configures no turn handling."""
    options: dict[str, Any] = {
        "stt": ScriptedSTT(name="scripted (the caller's lines)"),
        "tts": ScriptedTTS(name="scripted (audio of the reply's length)"),
    }
    shared = configured["vad"] if "vad" in configured else userdata.get(SHARED_VAD_KEY)
    if shared is not None:
        options["vad"] = MeteredVAD(shared)
    if "turn_handling" not in configured:
        options["turn_handling"] = {"turn_detection": _turn_detector()}
    return options


@attrs.frozen
class Simulation:
    """Runs simulated calls on one worker; `server_url` is the loopback LiveKit URL."""

    server_url: str

    @hookimpl
    def openrtc_worker_started(self, pool: PoolView, server: Any) -> None:
        # livekit's AgentServer event, on every registration (again after a reconnect).
        server.on("worker_registered", self._registered)

    def _registered(self, worker_id: str, server_info: object) -> None:
        # Which process this LiveKit worker id is: the loopback server names the calls a
        # dead worker held with its index and pid.
        identity = worker_identity()
        said = {
            "worker_id": worker_id,
            "worker": identity.index if identity is not None else None,
            "pid": identity.pid if identity is not None else os.getpid(),
        }
        task = asyncio.ensure_future(post_report(report_url(self.server_url, WORKER_PATH), said))
        _POSTS.add(task)
        task.add_done_callback(_POSTS.discard)

    @hookimpl
    def openrtc_session_options(
        self, agent: str, job: JobView, pool: PoolView, userdata: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        # Providers that need keys or a network become scripted ones, in simulated calls only.
        if not is_simulated(job):
            return None
        configured = pool.configured(agent)
        options = offline.replacements(configured)
        if _voice(job):
            options.update(voice_options(configured, userdata))
        return options or None

    @hookimpl
    def openrtc_start_session(self, launch: SessionLaunch) -> Awaitable[None] | None:
        if not is_simulated(launch.job):
            return None
        # Parsed before the session starts: a bad script fails the job at once.
        script = CallerScript.parse(launch.job.job_metadata[SIMULATE_KEY])
        return self._start(launch, script)

    async def _start(self, launch: SessionLaunch, script: CallerScript) -> None:
        call_args: dict[str, Any] = {
            "info": launch.info,
            "script": script,
            "greeting": launch.greeting,
            "on_failed": launch.fail,
            "failure": launch.failure,
            "report_to": report_url(self.server_url),
            "version": launch.version,
        }
        call: SimulatedCall
        if script.voice:
            if launch.session.vad is None:
                raise VoiceUnavailable(
                    f"agent {launch.info.agent!r} has no VAD (vad=None): a voice-mode call "
                    "needs one; give the pool or the agent a VAD, or simulate in text mode"
                )
            caller = VoiceCaller.attach(
                launch.session,
                script.sample_rate,
                barge_in=script.barge_in,
                failure=launch.failure,
            )
            await launch.session.start(launch.agent, record=False)
            launch.mark_connected()
            call = VoiceCall(launch.ctx, launch.session, caller=caller, **call_args)
        else:
            await launch.session.start(launch.agent)
            launch.mark_connected()
            call = SimulatedCall(launch.ctx, launch.session, **call_args)
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
