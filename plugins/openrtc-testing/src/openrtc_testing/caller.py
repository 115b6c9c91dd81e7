"""Simulated calls: a scripted caller drives a real AgentSession in text mode, with no room.

Only a worker given the :class:`~openrtc_testing.simulation.Simulation` plugin runs them
(tests and ``openrtc simulate``); a production worker never has it, ignores the script and
joins the room as usual. The job metadata carries the script::

    {"agent": "support", "openrtc.simulate": {"turns": ["hi", "bye"], "hold_s": 2.0}}

``pause_s`` (optional) paces the caller like a person on the phone: before each line it
waits that many seconds, or a uniformly random time in ``[low, high]`` when given as a pair,
for listening to the agent's reply, thinking and speaking. Without it, each line follows the
previous reply at once.

When the call ends, the transcript and outcome are posted to the simulation's report URL,
``/openrtc/simulation/report`` on the loopback dispatch server, which stores them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
import attrs
from livekit.agents import AgentSession, JobContext, llm

from openrtc_core import SessionInfo, run_turn, worker_identity

if TYPE_CHECKING:
    from livekit.agents.voice.run_result import RunEvent

logger = logging.getLogger("openrtc.simulation")

SIMULATE_KEY = "openrtc.simulate"
"""The job-metadata key that carries a simulated caller's script."""
MAX_TURNS = 1000
MAX_SCRIPT_S = 3600.0


class ScriptError(ValueError):
    """The caller script in the job metadata is not usable."""


def _seconds(raw: object, field: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw <= MAX_SCRIPT_S:
        raise ScriptError(f"{SIMULATE_KEY}.{field} must be a number from 0 to {MAX_SCRIPT_S:g}")
    return float(raw)


def _pause(raw: object) -> tuple[float, float]:
    if isinstance(raw, Sequence) and not isinstance(raw, str):
        if len(raw) != 2:
            raise ScriptError(
                f"{SIMULATE_KEY}.pause_s must be a number or a [low, high] pair, "
                f"got {len(raw)} values"
            )
        low, high = (_seconds(v, "pause_s") for v in raw)
        if low > high:
            raise ScriptError(f"{SIMULATE_KEY}.pause_s: low ({low:g}) is above high ({high:g})")
        return low, high
    pause = _seconds(raw, "pause_s")
    return pause, pause


VOICE_RATES = (16000, 48000)


def _barge_in(raw: object, turns: int) -> tuple[int, ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ScriptError(f"{SIMULATE_KEY}.barge_in must be a list of line numbers")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in raw):
        raise ScriptError(f"{SIMULATE_KEY}.barge_in must contain only line numbers")
    wrong = [i for i in raw if not 1 <= i < turns]
    if wrong:
        raise ScriptError(
            f"{SIMULATE_KEY}.barge_in: line(s) {wrong} cannot interrupt a reply; give "
            f"numbers from 1 to {turns - 1} (line 0 has no reply before it)"
        )
    return tuple(sorted(set(raw)))


@attrs.frozen(kw_only=True)
class CallerScript:
    turns: tuple[str, ...] = ()
    hold_s: float = 0.0
    pause_s: tuple[float, float] = (0.0, 0.0)
    """Seconds before each caller line, drawn uniformly from [low, high]."""
    voice: bool = False
    """Speak the lines as audio into the session (VAD, turn detector) instead of text."""
    sample_rate: int = 16000
    """The caller's line, in voice mode: 16 or 48 kHz."""
    barge_in: tuple[int, ...] = ()
    """Lines (0-based) the caller starts while the agent still speaks its previous reply."""

    def next_pause(self) -> float:
        low, high = self.pause_s
        return low if low == high else random.uniform(low, high)

    @classmethod
    def parse(cls, raw: object) -> CallerScript:
        if not isinstance(raw, Mapping):
            raise ScriptError(
                f'{SIMULATE_KEY} must be an object like {{"turns": ["hi"], "hold_s": 1}}, '
                f"got {type(raw).__name__}"
            )
        turns = raw.get("turns", [])
        if not isinstance(turns, Sequence) or isinstance(turns, str):
            raise ScriptError(f"{SIMULATE_KEY}.turns must be a list of strings")
        if not all(isinstance(t, str) for t in turns):
            raise ScriptError(f"{SIMULATE_KEY}.turns must contain only strings")
        if len(turns) > MAX_TURNS:
            raise ScriptError(f"{SIMULATE_KEY}.turns has {len(turns)} turns; at most {MAX_TURNS}")
        voice = raw.get("voice", False)
        if not isinstance(voice, bool):
            raise ScriptError(f"{SIMULATE_KEY}.voice must be true or false")
        rate = raw.get("sample_rate", VOICE_RATES[0])
        if rate not in VOICE_RATES or isinstance(rate, bool):
            raise ScriptError(
                f"{SIMULATE_KEY}.sample_rate must be one of {', '.join(map(str, VOICE_RATES))}"
            )
        barge_in = _barge_in(raw.get("barge_in", []), len(turns))
        if barge_in and not voice:
            raise ScriptError(f"{SIMULATE_KEY}.barge_in needs voice mode (voice: true)")
        return cls(
            turns=tuple(turns),
            hold_s=_seconds(raw.get("hold_s", 0.0), "hold_s"),
            pause_s=_pause(raw.get("pause_s", 0.0)),
            voice=voice,
            sample_rate=int(rate),
            barge_in=barge_in,
        )


def _item_dict(item: llm.ChatItem) -> dict[str, Any]:
    if isinstance(item, llm.ChatMessage):
        return {"type": "message", "role": item.role, "text": item.text_content or ""}
    if isinstance(item, llm.FunctionCall):
        return {"type": "function_call", "name": item.name, "arguments": item.arguments}
    if isinstance(item, llm.FunctionCallOutput):
        return {
            "type": "function_call_output",
            "name": item.name,
            "output": item.output,
            "is_error": item.is_error,
        }
    return {"type": getattr(item, "type", type(item).__name__)}


def _event_dicts(events: Sequence[RunEvent]) -> list[dict[str, Any]]:
    return [_item_dict(ev.item) for ev in events]


def _provider_label(value: object) -> str:
    if value is None:
        return ""
    model = getattr(value, "model", None)
    return str(model) if model else type(value).__name__


class SimulatedCall:
    """One scripted caller driving a started session, as a task of the job.

    The entrypoint returns once the session is up, as a real one does; the caller goes on in
    the background. It ends the job when its script is done; if the job is shut down first
    (terminated by the server, drained, failed), the report says so.
    """

    def __init__(
        self,
        ctx: JobContext,
        session: AgentSession[Any],
        *,
        info: SessionInfo,
        script: CallerScript,
        greeting: str | None,
        on_failed: Callable[[str], None],
        failure: Callable[[], str],
        report_to: str,
        version: Callable[[], str] = str,
    ) -> None:
        self.ctx = ctx
        self.session = session
        self.script = script
        self.greeting = greeting
        self.on_failed = on_failed
        self.failure = failure
        """The session's failure so far ("" while it has none): the call's outcome follows."""
        self.version = version
        """The code version the session runs now (a reload may switch it between turns)."""
        self.report_to = report_to
        self.started = time.monotonic()
        self.report = new_report(info, outcome="running")
        self.report["providers"] = {
            key: _provider_label(getattr(session, key)) for key in ("llm", "stt", "tts", "vad")
        }
        self.report["session_started_at"] = time.time()
        self._posted = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._converse(), name=f"caller-{self.ctx.job.id}")
        self.ctx.add_shutdown_callback(self._on_job_shutdown)

    async def _converse(self) -> None:
        try:
            if self.greeting:
                await self.session.generate_reply(instructions=self.greeting)
            self.report["greeting"] = [
                _item_dict(item) for item in self.session.history.items if _is_agent_output(item)
            ]
            for index, text in enumerate(self.script.turns):
                pause = 0.0 if index in self.script.barge_in else self.script.next_pause()
                if pause:
                    await asyncio.sleep(pause)
                if self.failure():
                    break  # a failed session takes no more turns
                self.report["turns"].append(await self._turn(index, text))
            if self.script.hold_s:
                await asyncio.sleep(self.script.hold_s)
        except Exception as exc:
            # The session's own failure, when it failed first, is what caused this one.
            error = self.failure() or f"{type(exc).__name__}: {exc}"
            await self._finish("failed", error)
            self.on_failed(error)
            return
        if self.failure():
            await self._finish("failed", self.failure())
            return
        await self._finish("completed")
        self.ctx.shutdown(reason="simulated call completed")

    async def _turn(self, index: int, text: str) -> dict[str, Any]:
        """One caller line and the agent's answer, with the code version that gave it."""
        started = time.monotonic()
        seen = len(self.session.history.items)
        error = ""
        try:
            result = await run_turn(self.session, text)
            events = _event_dicts(result.events)
        except Exception as exc:
            if self.failure():
                raise  # the session failed: so does the call
            # The turn failed but the session goes on (a plugin handled the error, e.g. a
            # reload sending the session back to code that worked): whatever the agent says
            # next answers this line.
            error = f"{type(exc).__name__}: {exc}"
            await self._settle()
            events = [
                _item_dict(item)
                for item in self.session.history.items[seen:]
                if _is_agent_output(item)
            ]
        turn: dict[str, Any] = {
            "user": text,
            "events": events,
            "reply": " ".join(
                e["text"] for e in events if e["type"] == "message" and e["role"] == "assistant"
            ),
            "version": self.version(),
            "latency_s": time.monotonic() - started,
        }
        if error:
            turn["error"] = error
        return turn

    async def _settle(self, timeout_s: float = 10.0) -> None:
        """Wait until the agent has said what it has to say (its current speech is done)."""
        deadline = time.monotonic() + timeout_s
        await asyncio.sleep(0)
        while time.monotonic() < deadline:
            speech = self.session.current_speech
            if speech is None:
                await asyncio.sleep(0.05)
                if self.session.current_speech is None:
                    return
                continue
            with contextlib.suppress(Exception):
                await asyncio.wait_for(speech.wait_for_playout(), deadline - time.monotonic())

    async def _finish(self, outcome: str, error: str = "") -> None:
        if self._posted:
            return
        self._posted = True
        self.report["outcome"] = outcome
        self.report["error"] = error
        self.report["duration_s"] = time.monotonic() - self.started
        await post_report(self.report_to, self.report)

    async def _on_job_shutdown(self, reason: str) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            if self.failure():
                await self._finish("failed", self.failure())
            else:
                await self._finish("ended", f"the job ended first: {reason}")


def new_report(info: SessionInfo, *, outcome: str, error: str = "") -> dict[str, Any]:
    """The fields every simulation report has, before the call adds what it did."""
    return {
        "job_id": info.job_id,
        "agent": info.agent,
        "room": info.room_name,
        "tenant": info.tenant.tenant_id if info.tenant else None,
        "version": info.version,
        "deploy": info.deploy,
        "outcome": outcome,
        "error": error,
        "greeting": [],
        "turns": [],
        "providers": {},
        "pid": os.getpid(),
        **_worker_fields(),
    }


def _worker_fields() -> dict[str, int | None]:
    """Which of a supervisor's workers ran the call (openrtc-workers), by index and pid (the
    worker's, which differs from ``pid`` under process isolation); None with one."""
    identity = worker_identity()
    return {
        "worker": identity.index if identity is not None else None,
        "worker_pid": identity.pid if identity is not None else None,
    }


def _is_agent_output(item: llm.ChatItem) -> bool:
    if isinstance(item, llm.ChatMessage):
        return item.role == "assistant"
    return isinstance(item, llm.FunctionCall | llm.FunctionCallOutput)


async def post_report(url: str, report: dict[str, Any]) -> None:
    """POST a call's report to `url`; a refusal or an unreachable server is only logged."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.post(url, json=report) as resp,
        ):
            if resp.status >= 300:
                logger.warning(
                    "simulation report was refused (HTTP %s)",
                    resp.status,
                    extra={"job_id": report.get("job_id", "")},
                )
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.warning(
            "could not post the simulation report: %s",
            exc,
            extra={"job_id": report.get("job_id", "")},
        )
