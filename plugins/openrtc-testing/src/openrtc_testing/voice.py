"""The audio ends of a voice-mode simulated call: the caller's microphone, the caller's
earpiece, and a meter on the session's VAD.

- :class:`CallerMic` is the session's audio input: 20 ms frames in real time, speech clips
  when the caller speaks and silence otherwise, as a phone line delivers them. A consumer
  that falls behind gets late frames; one more than a jitter buffer behind loses frames, as
  a real line would, and both are counted.
- :class:`Earpiece` is the session's audio output: it plays what the agent says in real
  time (no device, just the clock), notes when each reply's audio starts, and reports the
  playback finished, or interrupted when the agent stops talking because the caller spoke.
- :class:`MeteredVAD` wraps the pool's VAD (the prewarmed, shared one) so one call's VAD
  inference time is counted for that call alone: livekit's own VAD metrics go to the VAD
  object, which every session in the process shares.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Final

import attrs
from livekit import rtc
from livekit.agents import vad
from livekit.agents.voice import io

from .voice_clips import Clip

FRAME_MS: Final = 20
JITTER_BUFFER_S: Final = 0.2
"""How far behind real time a consumer may fall before the line drops frames."""


@attrs.define(eq=False)
class _Utterance:
    pcm: bytes
    speech_end: int
    """Byte offset in `pcm` where the speech ends (the clip's trailing silence after it)."""
    said: asyncio.Future[float]
    """Resolved with the monotonic time the frame holding the end of speech went out."""
    offset: int = 0


class CallerMic(io.AudioInput):
    """The caller's microphone (see the module's docstring)."""

    def __init__(self, sample_rate: int, *, frame_ms: int = FRAME_MS) -> None:
        super().__init__(label="openrtc.simulated-caller")
        self.sample_rate = sample_rate
        self.frame_s = frame_ms / 1000
        self.frame_bytes = sample_rate * frame_ms // 1000 * 2
        self._silence = bytes(self.frame_bytes)
        self._queue: collections.deque[_Utterance] = collections.deque()
        self._next_at: float | None = None
        self.closed = False
        self.frames_sent = 0
        self.frames_late = 0
        """Frames delivered more than a frame behind their time."""
        self.frames_dropped = 0
        """Frames lost because the consumer was more than the jitter buffer behind."""
        self.max_lag_s = 0.0

    def say(self, clip: Clip) -> asyncio.Future[float]:
        """Speak `clip` after what is queued; resolves with the (monotonic) time the end of
        its speech went out on the line."""
        if clip.sample_rate != self.sample_rate:
            raise ValueError(f"a {clip.sample_rate} Hz clip on a {self.sample_rate} Hz line")
        _, end_s = clip.speech_bounds()
        end = min(len(clip.pcm), round(end_s * self.sample_rate) * 2)
        said: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._queue.append(_Utterance(clip.pcm, end, said))
        return said

    @property
    def speaking(self) -> bool:
        return bool(self._queue)

    def close(self) -> None:
        """Hang up: the input ends; a clip still queued never finishes."""
        self.closed = True
        for utterance in self._queue:
            if not utterance.said.done():
                utterance.said.cancel()
        self._queue.clear()

    def __aiter__(self) -> AsyncIterator[rtc.AudioFrame]:
        return self

    async def __anext__(self) -> rtc.AudioFrame:
        if self.closed:
            raise StopAsyncIteration
        now = time.monotonic()
        if self._next_at is None:
            self._next_at = now
        lag = now - self._next_at
        if lag < 0:
            await asyncio.sleep(-lag)
            if self.closed:
                raise StopAsyncIteration
        else:
            self.max_lag_s = max(self.max_lag_s, lag)
            if lag > self.frame_s:
                self.frames_late += 1
            if lag > JITTER_BUFFER_S:
                lost = int(lag / self.frame_s)
                for _ in range(lost):
                    self._take()
                self.frames_dropped += lost
                self._next_at += lost * self.frame_s
        pcm = self._take()
        self._next_at += self.frame_s
        self.frames_sent += 1
        return rtc.AudioFrame(
            data=pcm,
            sample_rate=self.sample_rate,
            num_channels=1,
            samples_per_channel=len(pcm) // 2,
        )

    def _take(self) -> bytes:
        """The next frame's PCM: from the clip being spoken, else silence."""
        if not self._queue:
            return self._silence
        utterance = self._queue[0]
        start = utterance.offset
        chunk = utterance.pcm[start : start + self.frame_bytes]
        utterance.offset = start + self.frame_bytes
        if utterance.offset >= utterance.speech_end and not utterance.said.done():
            utterance.said.set_result(time.monotonic())
        if utterance.offset >= len(utterance.pcm):
            self._queue.popleft()
        return chunk.ljust(self.frame_bytes, b"\0")


@attrs.define(eq=False)
class Playback:
    """One stretch of agent audio: a reply, or the part of it heard before an interruption."""

    started_at: float
    """When its first audio reached the earpiece (monotonic)."""
    captured_s: float = 0.0
    finished_at: float | None = None
    interrupted: bool = False
    heard_s: float = 0.0
    done: asyncio.Event = attrs.field(factory=asyncio.Event)


class Earpiece(io.AudioOutput):
    """The caller's earpiece (see the module's docstring)."""

    def __init__(self) -> None:
        # It can pause, as a phone line's jitter buffer can hold audio: livekit pauses the
        # agent on a noise that may be the caller starting to speak, and resumes it when it
        # was not (resume_false_interruption).
        super().__init__(
            label="openrtc.simulated-earpiece",
            capabilities=io.AudioOutputCapabilities(pause=True),
            sample_rate=None,
        )
        self.playbacks: list[Playback] = []
        self._capturing: Playback | None = None
        self._playing: dict[Playback, asyncio.Task[None]] = {}
        self._busy_until = 0.0
        self._new_audio = asyncio.Event()
        self._paused_at: float | None = None
        self.pauses = 0

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if self._capturing is None:
            start = max(time.monotonic(), self._busy_until)
            self._capturing = Playback(started_at=start)
            self.playbacks.append(self._capturing)
            self._new_audio.set()
        self._capturing.captured_s += frame.duration

    def flush(self) -> None:
        super().flush()
        playback, self._capturing = self._capturing, None
        if playback is None:
            return
        self._busy_until = playback.started_at + playback.captured_s
        self._playing[playback] = asyncio.create_task(self._play_out(playback))

    async def _play_out(self, playback: Playback) -> None:
        # A pause cancels this task; resume() starts another from the moved-on start.
        await asyncio.sleep(max(0.0, playback.started_at + playback.captured_s - time.monotonic()))
        self._playing.pop(playback, None)
        self._finish(playback, interrupted=False)

    def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = time.monotonic()
            self.pauses += 1
            for task in self._playing.values():
                task.cancel()

    def resume(self) -> None:
        if self._paused_at is None:
            return
        held = time.monotonic() - self._paused_at
        self._paused_at = None
        for playback in [*self._playing, *([self._capturing] if self._capturing else [])]:
            playback.started_at += held
        self._busy_until += held
        for playback in list(self._playing):
            self._playing[playback] = asyncio.create_task(self._play_out(playback))

    def clear_buffer(self) -> None:
        self._paused_at = None
        now = time.monotonic()
        cut = [p for p in self._playing if p.started_at <= now]
        if self._capturing is not None:
            cut.append(self._capturing)
            self._capturing = None
        for playback in cut:
            task = self._playing.pop(playback, None)
            if task is not None:
                task.cancel()
            self._finish(playback, interrupted=True)
        for playback in list(self._playing):  # queued, never started: dropped unheard
            self._playing.pop(playback).cancel()
            self._finish(playback, interrupted=True)
        self._busy_until = now

    def _finish(self, playback: Playback, *, interrupted: bool) -> None:
        now = time.monotonic()
        playback.finished_at = now
        playback.interrupted = interrupted
        playback.heard_s = max(0.0, min(playback.captured_s, now - playback.started_at))
        playback.done.set()
        self.on_playback_finished(playback_position=playback.heard_s, interrupted=interrupted)

    async def next_playback(self, after: float, timeout: float) -> Playback:
        """The first playback that started at or after the monotonic time `after`.

        :raises TimeoutError: none started within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            for playback in self.playbacks:
                if playback.started_at >= after:
                    return playback
            self._new_audio.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no agent audio within {timeout:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_audio.wait(), remaining)

    def close(self) -> None:
        for task in self._playing.values():
            task.cancel()
        self._playing.clear()


class MeteredVAD(vad.VAD):
    """The session's VAD, counting the inference time of this session's streams alone."""

    def __init__(self, inner: vad.VAD) -> None:
        super().__init__(capabilities=inner.capabilities)
        self.inner = inner
        self.inference_s = 0.0
        self.inferences = 0

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def provider(self) -> str:
        return self.inner.provider

    def stream(self) -> vad.VADStream:
        return _MeteredStream(self, self.inner.stream())


class _MeteredStream(vad.VADStream):
    """The inner VAD's stream, as it is; its inference events counted on the meter."""

    def __init__(self, meter: MeteredVAD, inner: vad.VADStream) -> None:
        # Not VADStream.__init__: the inner stream runs the tasks; this one only relays.
        self._meter = meter
        self._inner = inner

    async def _main_task(self) -> None:  # the inner stream's task does the work
        return None

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        self._inner.push_frame(frame)

    def flush(self) -> None:
        self._inner.flush()

    def end_input(self) -> None:
        self._inner.end_input()

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __anext__(self) -> vad.VADEvent:
        event = await self._inner.__anext__()
        if event.type == vad.VADEventType.INFERENCE_DONE:
            self._meter.inference_s += event.inference_duration
            self._meter.inferences += 1
        return event

    def __aiter__(self) -> AsyncIterator[vad.VADEvent]:
        return self
