"""A voice-mode simulated call: the caller speaks each line as real speech into the session
and listens for the agent's audio.

The session runs the pool's VAD and turn detector on the caller's audio; the scripted STT
answers with the line when the VAD-segmented speech ends, the scripted TTS makes audio of
the reply's length, and the caller's earpiece plays it in real time. Per turn the report
has what a caller hears, *end of speech to first agent audio*, beside the turn detector's
and the transcript's delays (livekit's own per-message metrics); per call, the VAD's
inference time for this call alone, and the frames the line delivered late or dropped.

A line listed in the script's ``barge_in`` starts :data:`BARGE_IN_AFTER_S` after the agent's
previous reply began to play, while it still plays: the agent should stop talking (its
playback is cut) and answer the new line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

from livekit.agents import llm

from .caller import SimulatedCall
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


class VoiceCall(SimulatedCall):
    """One voice-mode caller (see the module's docstring)."""

    def __init__(self, *args: Any, mic: CallerMic, ear: Earpiece, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mic = mic
        self.ear = ear
        self._previous: Playback | None = None

    async def _turn(self, index: int, text: str) -> dict[str, Any]:
        clip = await asyncio.to_thread(speak, text, sample_rate=self.mic.sample_rate)
        barging = index in self.script.barge_in
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
        if index + 1 not in self.script.barge_in:
            await self._unless_failed(playback.done.wait(), REPLY_TIMEOUT_S, text)
            await self._reply_recorded(seen)
        turn = self._turn_record(text, clip, seen, speech_end, playback)
        if barging:
            turn["barged_in"] = interrupted_reply is not None and (
                interrupted_reply.finished_at is None or interrupted_reply.finished_at > spoke_at
            )
            turn["interrupted_reply"] = interrupted_reply is not None and (
                interrupted_reply.interrupted
            )
            if self.report["turns"]:  # the reply it cut: now known to be cut or not
                self.report["turns"][-1]["interrupted"] = turn["interrupted_reply"]
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
        return {
            "user": text,
            "heard": user.text_content if user is not None else "",
            "reply": reply,
            "events": [],
            "version": self.version(),
            "speech_s": speech_stop - speech_start,
            "heard_latency_s": playback.started_at - speech_end,
            "latency_s": playback.started_at - speech_end,
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

    async def _finish(self, outcome: str, error: str = "") -> None:
        vad = self.session.vad
        self.report["voice"] = {
            "sample_rate": self.mic.sample_rate,
            "frames_sent": self.mic.frames_sent,
            "frames_late": self.mic.frames_late,
            "frames_dropped": self.mic.frames_dropped,
            "max_input_lag_s": self.mic.max_lag_s,
            "vad_inference_s": vad.inference_s if isinstance(vad, MeteredVAD) else None,
            "vad_inferences": vad.inferences if isinstance(vad, MeteredVAD) else None,
            "agent_audio_s": sum(p.captured_s for p in self.ear.playbacks),
            "barge_ins": sum(1 for t in self.report["turns"] if "barged_in" in t),
            "barge_ins_handled": sum(1 for t in self.report["turns"] if t.get("interrupted_reply")),
        }
        self.mic.close()
        self.ear.close()
        await super()._finish(outcome, error)
