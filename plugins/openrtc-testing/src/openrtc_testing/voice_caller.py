"""A voice caller on a started ``AgentSession``: speaks lines, listens, times what it hears.

It imports nothing of OpenRTC, so a plain livekit-agents worker (the benchmarks' variants A
and B) runs exactly the caller an OpenRTC simulated call runs
(:class:`~openrtc_testing.voice_call.VoiceCall`)::

    caller = VoiceCaller.attach(session, sample_rate=16000)  # before session.start()
    await session.start(agent, record=False)
    turn = await caller.turn(0, "Hi, I need some help with my order.")
    figures = caller.figures()
    caller.close()

Per turn it records what a caller hears, *end of speech to first agent audio*, beside the
turn detector's and the transcript's delays (livekit's own per-message metrics); per call,
the VAD's inference time for this call alone (with a :class:`~openrtc_testing.voice.MeteredVAD`)
and the frames the line delivered late or dropped.

A line listed in ``barge_in`` starts :data:`BARGE_IN_AFTER_S` after the agent's previous
reply began to play, while it still plays: the agent should stop talking (its playback is
cut) and answer the new line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from livekit.agents import AgentSession, llm

from .providers import ScriptedSTT
from .voice import CallerMic, Earpiece, MeteredVAD, Playback
from .voice_clips import Clip, speak

REPLY_TIMEOUT_S: Final = 30.0
"""How long a caller waits for the agent's audio after speaking a line."""
BARGE_IN_AFTER_S: Final = 0.4
"""How long into the agent's reply a barging-in caller starts to speak."""
WAITED_OUT_MARGIN_S: Final = 0.05
_POLL_S: Final = 0.25
T = TypeVar("T")


class VoiceFailure(RuntimeError):
    """The voice call could not go on (no agent audio, the session failed)."""


def _no_failure() -> str:
    return ""


class VoiceCaller:
    """One caller's mouth and ear on a session (see the module's docstring)."""

    def __init__(
        self,
        session: AgentSession[Any],
        mic: CallerMic,
        ear: Earpiece,
        *,
        barge_in: tuple[int, ...] = (),
        failure: Callable[[], str] = _no_failure,
    ) -> None:
        self.session = session
        self.mic = mic
        self.ear = ear
        self.barge_in = barge_in
        self.failure = failure
        """The session's failure so far ("" while it has none): the turn stops on it."""
        self.barge_ins = 0
        self.barge_ins_handled = 0
        self._previous: Playback | None = None
        self._last_turn: dict[str, Any] | None = None

    @classmethod
    def attach(
        cls,
        session: AgentSession[Any],
        sample_rate: int,
        *,
        barge_in: tuple[int, ...] = (),
        failure: Callable[[], str] = _no_failure,
    ) -> VoiceCaller:
        """A caller whose microphone and earpiece are `session`'s audio input and output;
        start the session after this, without a room and with ``record=False``."""
        mic, ear = CallerMic(sample_rate), Earpiece()
        session.input.audio = mic
        session.output.audio = ear
        return cls(session, mic, ear, barge_in=barge_in, failure=failure)

    async def turn(self, index: int, text: str) -> dict[str, Any]:
        """Speak line `index` (`text`) and wait for the agent's answer to play out (or only
        to start, when the next line barges in on it); the turn's record."""
        clip = await asyncio.to_thread(speak, text, sample_rate=self.mic.sample_rate)
        barging = index in self.barge_in
        interrupted_reply: Playback | None = None
        if barging and self._previous is not None:
            interrupted_reply = self._previous
            start_at = interrupted_reply.started_at + BARGE_IN_AFTER_S
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        stt = self.session.stt
        if isinstance(stt, ScriptedSTT):
            stt.push_transcripts(text)  # what the STT hears once the VAD segments this speech
        seen = len(self.session.history.items)
        spoke_at = time.monotonic()
        speech_end = await self._unless_failed(self.mic.say(clip), clip.duration_s + 10, text)
        playback = await self._unless_failed(
            self.ear.next_playback(after=spoke_at, timeout=REPLY_TIMEOUT_S),
            REPLY_TIMEOUT_S + 1,
            text,
        )
        self._previous = playback
        if index + 1 not in self.barge_in:
            await self._unless_failed(playback.done.wait(), REPLY_TIMEOUT_S, text)
            await self._reply_recorded(seen)
        turn = self._turn_record(text, clip, seen, speech_end, playback)
        if barging:
            self.barge_ins += 1
            turn["barged_in"] = interrupted_reply is not None and (
                interrupted_reply.finished_at is None or interrupted_reply.finished_at > spoke_at
            )
            turn["interrupted_reply"] = interrupted_reply is not None and (
                interrupted_reply.interrupted
            )
            self.barge_ins_handled += int(turn["interrupted_reply"])
            if self._last_turn is not None:  # the reply it cut: now known to be cut or not
                self._last_turn["interrupted"] = turn["interrupted_reply"]
        self._last_turn = turn
        return turn

    async def _reply_recorded(self, seen: int, timeout: float = 2.0) -> None:
        """Until the agent's reply is in the history (livekit adds it just after playout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = self.session.history.items[seen:]
            users = [
                i for i, m in enumerate(new) if isinstance(m, llm.ChatMessage) and m.role == "user"
            ]
            after = new[users[0] + 1 :] if users else []
            if any(isinstance(m, llm.ChatMessage) and m.role == "assistant" for m in after):
                return
            await asyncio.sleep(0.02)

    def _turn_record(
        self, text: str, clip: Clip, seen: int, speech_end: float, playback: Playback
    ) -> dict[str, Any]:
        new = self.session.history.items[seen:]
        user = next((m for m in new if isinstance(m, llm.ChatMessage) and m.role == "user"), None)
        metrics: dict[str, Any] = dict(user.metrics) if user is not None else {}
        answers = new[new.index(user) + 1 :] if user is not None else new
        reply = " ".join(
            m.text_content or ""
            for m in answers  # not the reply it interrupted, recorded once cut
            if isinstance(m, llm.ChatMessage) and m.role == "assistant"
        )
        speech_start, speech_stop = clip.speech_bounds()
        end_of_turn = metrics.get("end_of_turn_delay")
        longest = self.session.options.endpointing.get("max_delay")
        heard = playback.started_at - speech_end
        return {
            "user": text,
            "heard": user.text_content if user is not None else "",
            "reply": reply,
            "speech_s": speech_stop - speech_start,
            "heard_latency_s": heard,
            "latency_s": heard,
            "end_of_turn_delay_s": end_of_turn,
            # The detector never said "done": the turn ended when the longest wait ran out.
            "turn_waited_out": isinstance(end_of_turn, float)
            and longest is not None
            and end_of_turn >= longest - WAITED_OUT_MARGIN_S,
            "transcription_delay_s": metrics.get("transcription_delay"),
            "reply_audio_s": playback.captured_s,
            "interrupted": playback.interrupted,
        }

    async def _unless_failed(self, work: Awaitable[T], timeout: float, line: str) -> T:
        """`work`'s result; :class:`VoiceFailure` when the session fails first or it takes
        longer than `timeout`."""
        task = asyncio.ensure_future(work)
        deadline = time.monotonic() + timeout
        try:
            while not task.done():
                if self.failure():
                    raise VoiceFailure(self.failure())
                if time.monotonic() > deadline:
                    raise VoiceFailure(f"no agent audio within {timeout:g} s of {line!r}")
                await asyncio.wait({task}, timeout=_POLL_S)
            try:
                return task.result()
            except TimeoutError as exc:
                raise VoiceFailure(f"{exc} after {line!r}") from None
        finally:
            task.cancel()

    def figures(self) -> dict[str, Any]:
        """The call's audio figures: the line's frames, the VAD's time, the agent's audio."""
        vad = self.session.vad
        metered = vad if isinstance(vad, MeteredVAD) else None
        return {
            "sample_rate": self.mic.sample_rate,
            "frames_sent": self.mic.frames_sent,
            "frames_late": self.mic.frames_late,
            "frames_dropped": self.mic.frames_dropped,
            "max_input_lag_s": self.mic.max_lag_s,
            "vad_inference_s": metered.inference_s if metered is not None else None,
            "vad_inferences": metered.inferences if metered is not None else None,
            "agent_audio_s": sum(p.captured_s for p in self.ear.playbacks),
            "barge_ins": self.barge_ins,
            "barge_ins_handled": self.barge_ins_handled,
        }

    def close(self) -> None:
        """Hang up: the line and the earpiece stop."""
        self.mic.close()
        self.ear.close()
