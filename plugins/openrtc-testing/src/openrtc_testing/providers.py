"""Scripted, network-free STT / LLM / TTS / VAD providers.

Each provider is a real subclass of the livekit-agents base class it stands in for, so an
``AgentSession`` drives it through exactly the code paths a cloud provider goes through
(retries, error events, metrics, the TTS audio emitter, the STT stream adapter).

* :class:`ScriptedLLM` answers from :class:`Rule` s: canned replies, tool calls, errors.
* :class:`ScriptedSTT` hands out a list of transcripts, one per recognized speech segment.
* :class:`ScriptedTTS` renders a quiet tone whose length follows the text.
* :class:`ScriptedVAD` is an energy detector, so tone frames are "speech" and zeros are silence.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import numpy as np
from livekit import rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectionError,
    APIConnectOptions,
    NotGivenOr,
    llm,
    stt,
    tts,
    utils,
    vad,
)
from livekit.agents.language import LanguageCode
from livekit.agents.utils.audio import calculate_audio_duration

__all__ = [
    "Rule",
    "ScriptedCall",
    "ScriptedLLM",
    "ScriptedSTT",
    "ScriptedTTS",
    "ScriptedVAD",
    "silence_frames",
    "speech_frames",
]

logger = logging.getLogger("openrtc.testing.providers")

PROVIDER_NAME = "openrtc-scripted"


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:12]


class _Named:
    """``model`` and ``provider`` as livekit reports them, for every scripted provider."""

    _name: str

    @property
    def model(self) -> str:
        return self._name

    @property
    def provider(self) -> str:
        return PROVIDER_NAME


# --------------------------------------------------------------------------------------------
# LLM
# --------------------------------------------------------------------------------------------


def _copy_args(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return dict(value)


@attrs.frozen
class Rule:
    """One scripted behaviour of :class:`ScriptedLLM`.

    ``when`` matches the latest user text: case-insensitively as a substring, or as a regular
    expression through :func:`re.search`. A matching rule then, in order of precedence:

    * ``raise_error``: fails the LLM request with a non-retryable ``APIConnectionError``;
    * ``call``: asks for the tool of that name with ``args`` (JSON-encoded), and once the tool
      has run, replies ``after_tool`` with ``{output}`` replaced by the tool's output;
    * ``reply``: streams that text.

    ``{user}`` in ``reply`` / ``after_tool`` is replaced with the user's text.
    """

    when: str
    reply: str | None = None
    call: str | None = None
    args: Mapping[str, Any] = attrs.field(factory=dict, converter=_copy_args, hash=False)
    after_tool: str = "Done: {output}"
    raise_error: str | None = None

    def matches(self, text: str) -> bool:
        if self.when.lower() in text.lower():
            return True
        try:
            return re.search(self.when, text, re.IGNORECASE) is not None
        except re.error:
            return False


ScriptedCallKind = Literal["reply", "greeting", "tool_call", "missing_tool", "after_tool", "error"]


@attrs.frozen
class ScriptedCall:
    """What :class:`ScriptedLLM` saw and did for one ``chat()`` request."""

    kind: ScriptedCallKind
    user_text: str | None
    """The latest user message text (None when the context has no user message)."""
    tools: tuple[str, ...]
    """Names of the tools offered to the LLM."""
    reply: str | None = None
    """The text streamed back (None for a tool call or an error)."""
    tool_name: str | None = None
    tool_arguments: Mapping[str, Any] | None = attrs.field(default=None, hash=False)
    tool_output: str | None = None
    """For ``after_tool``: the output of the tool that just ran."""
    rule: Rule | None = None
    error: str | None = None


@attrs.frozen
class _Decision:
    call: ScriptedCall
    text: str | None = None
    tool_call: llm.FunctionToolCall | None = None
    error: str | None = None


def _tool_names(tools: Sequence[llm.Tool | llm.Toolset]) -> list[str]:
    names: list[str] = []
    for tool in tools:
        if isinstance(tool, llm.Toolset):
            names.extend(_tool_names(tool.tools))
        else:
            names.append(tool.id)
    return names


def _fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


_SKIPPED_ROLES = ("system", "developer")


class ScriptedLLM(_Named, llm.LLM[Any]):
    """An LLM that follows a script instead of a model.

    How a request is answered, from the chat context it is given:

    1. the last item is a tool's output: stream the ``after_tool`` text of the rule that asked
       for that tool (default ``"Done: {output}"``);
    2. no user message since the last assistant message (e.g. the greeting asked for by
       ``session.generate_reply(instructions=...)``): stream ``greeting_reply``;
    3. the first rule matching the latest user text decides (see :class:`Rule`);
    4. nothing matches: stream ``default_reply``.

    Replies are streamed ``chunk_words`` words at a time, ``token_delay_s`` apart (after an
    initial ``first_token_delay_s``), followed by a usage chunk. Requests are logged in
    :attr:`calls`, the latest ``keep_calls`` of them (a long simulation stays bounded).
    """

    def __init__(
        self,
        *,
        rules: Sequence[Rule] = (),
        default_reply: str = "Okay.",
        greeting_reply: str = "Hello! How can I help you today?",
        name: str = "scripted-llm",
        token_delay_s: float = 0.0,
        first_token_delay_s: float = 0.0,
        chunk_words: int = 1,
        keep_calls: int = 1000,
    ) -> None:
        super().__init__()
        if chunk_words < 1:
            raise ValueError("chunk_words must be >= 1")
        if keep_calls < 1:
            raise ValueError("keep_calls must be >= 1")
        if token_delay_s < 0 or first_token_delay_s < 0:
            raise ValueError("delays must be >= 0")
        self.rules: list[Rule] = list(rules)
        self.default_reply = default_reply
        self.greeting_reply = greeting_reply
        self.token_delay_s = token_delay_s
        self.first_token_delay_s = first_token_delay_s
        self.chunk_words = chunk_words
        self._name = name
        self.calls: collections.deque[ScriptedCall] = collections.deque(maxlen=keep_calls)

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> ScriptedLLMStream:
        return ScriptedLLMStream(
            self, chat_ctx=chat_ctx, tools=list(tools or []), conn_options=conn_options
        )

    # -- the script ----------------------------------------------------------------------------

    def _decide(
        self, chat_ctx: llm.ChatContext, tools: Sequence[llm.Tool | llm.Toolset]
    ) -> _Decision:
        """Work out the answer to ``chat_ctx`` (pure: does not log to :attr:`calls`)."""
        offered = tuple(_tool_names(tools))
        items = [
            item
            for item in chat_ctx.items
            if not (item.type == "message" and item.role in _SKIPPED_ROLES)
            and item.type in ("message", "function_call", "function_call_output")
        ]

        last_user_idx = -1
        last_assistant_idx = -1
        for idx, item in enumerate(items):
            if item.type == "message" and item.role == "user":
                last_user_idx = idx
            elif item.type == "message" and item.role == "assistant":
                last_assistant_idx = idx
        user_text: str | None = None
        if last_user_idx >= 0:
            user_msg = items[last_user_idx]
            assert isinstance(user_msg, llm.ChatMessage)
            user_text = user_msg.text_content or ""

        if items and isinstance(items[-1], llm.FunctionCallOutput):
            out = items[-1]
            call_name = out.name
            if not call_name:
                for item in items:
                    if isinstance(item, llm.FunctionCall) and item.call_id == out.call_id:
                        call_name = item.name
            rule = self._rule_for_tool(call_name, user_text)
            template = rule.after_tool if rule is not None else "Done: {output}"
            text = _fill(template, output=out.output, user=user_text or "")
            return _Decision(
                call=ScriptedCall(
                    kind="after_tool",
                    user_text=user_text,
                    tools=offered,
                    reply=text,
                    tool_name=call_name,
                    tool_output=out.output,
                    rule=rule,
                ),
                text=text,
            )

        if user_text is None or last_assistant_idx > last_user_idx:
            return _Decision(
                call=ScriptedCall(
                    kind="greeting", user_text=user_text, tools=offered, reply=self.greeting_reply
                ),
                text=self.greeting_reply,
            )

        rule = next((r for r in self.rules if r.matches(user_text)), None)
        if rule is None:
            text = _fill(self.default_reply, user=user_text)
            return _Decision(
                call=ScriptedCall(kind="reply", user_text=user_text, tools=offered, reply=text),
                text=text,
            )

        if rule.raise_error is not None:
            return _Decision(
                call=ScriptedCall(
                    kind="error",
                    user_text=user_text,
                    tools=offered,
                    rule=rule,
                    error=rule.raise_error,
                ),
                error=rule.raise_error,
            )

        if rule.call is not None:
            if rule.call not in offered:
                text = f"Sorry, I can't do that right now: the tool {rule.call!r} is missing."
                return _Decision(
                    call=ScriptedCall(
                        kind="missing_tool",
                        user_text=user_text,
                        tools=offered,
                        reply=text,
                        tool_name=rule.call,
                        tool_arguments=rule.args,
                        rule=rule,
                    ),
                    text=text,
                )
            tool_call = llm.FunctionToolCall(
                name=rule.call,
                arguments=json.dumps(dict(rule.args)),
                call_id=_new_id("call_"),
            )
            return _Decision(
                call=ScriptedCall(
                    kind="tool_call",
                    user_text=user_text,
                    tools=offered,
                    tool_name=rule.call,
                    tool_arguments=rule.args,
                    rule=rule,
                ),
                tool_call=tool_call,
            )

        text = _fill(rule.reply if rule.reply is not None else self.default_reply, user=user_text)
        return _Decision(
            call=ScriptedCall(
                kind="reply", user_text=user_text, tools=offered, reply=text, rule=rule
            ),
            text=text,
        )

    def _rule_for_tool(self, tool_name: str, user_text: str | None) -> Rule | None:
        candidates = [r for r in self.rules if r.call == tool_name]
        if user_text is not None:
            for rule in candidates:
                if rule.matches(user_text):
                    return rule
        return candidates[0] if candidates else None


def _chunks(text: str, words_per_chunk: int) -> list[str]:
    tokens = re.findall(r"\s*\S+\s*", text)
    if not tokens:
        return [text] if text else []
    return [
        "".join(tokens[i : i + words_per_chunk]) for i in range(0, len(tokens), words_per_chunk)
    ]


class ScriptedLLMStream(llm.LLMStream):
    def __init__(
        self,
        scripted: ScriptedLLM,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
    ) -> None:
        super().__init__(scripted, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._scripted = scripted

    async def _run(self) -> None:
        decision = self._scripted._decide(self._chat_ctx, self._tools)
        self._scripted.calls.append(decision.call)
        request_id = _new_id("scripted-")
        prompt_tokens = sum(
            len((item.text_content or "").split())
            for item in self._chat_ctx.items
            if isinstance(item, llm.ChatMessage)
        )

        if self._scripted.first_token_delay_s:
            await asyncio.sleep(self._scripted.first_token_delay_s)

        if decision.error is not None:
            raise APIConnectionError(decision.error, retryable=False)

        completion_tokens = 0
        if decision.tool_call is not None:
            self._event_ch.send_nowait(
                llm.ChatChunk(
                    id=request_id,
                    delta=llm.ChoiceDelta(role="assistant", tool_calls=[decision.tool_call]),
                )
            )
            completion_tokens = 1 + len(decision.tool_call.arguments.split())
        elif decision.text is not None:
            for i, piece in enumerate(_chunks(decision.text, self._scripted.chunk_words)):
                if i and self._scripted.token_delay_s:
                    await asyncio.sleep(self._scripted.token_delay_s)
                self._event_ch.send_nowait(
                    llm.ChatChunk(
                        id=request_id, delta=llm.ChoiceDelta(role="assistant", content=piece)
                    )
                )
                completion_tokens += len(piece.split())

        self._event_ch.send_nowait(
            llm.ChatChunk(
                id=request_id,
                usage=llm.CompletionUsage(
                    completion_tokens=completion_tokens,
                    prompt_tokens=prompt_tokens,
                    total_tokens=completion_tokens + prompt_tokens,
                ),
            )
        )


# --------------------------------------------------------------------------------------------
# STT
# --------------------------------------------------------------------------------------------


class ScriptedSTT(_Named, stt.STT[Any]):
    """A non-streaming STT returning ``transcripts`` in order, one per ``recognize()`` call.

    With a VAD in the session, livekit wraps it in ``stt.StreamAdapter``, which calls
    ``recognize()`` once per detected speech segment. Once the list is used up, further
    segments recognize as ``exhausted_text`` (default: empty, which the adapter drops).
    """

    def __init__(
        self,
        transcripts: Sequence[str] = (),
        *,
        name: str = "scripted-stt",
        language: str = "en",
        exhausted_text: str = "",
        delay_s: float = 0.0,
    ) -> None:
        super().__init__(
            capabilities=stt.STTCapabilities(
                streaming=False, interim_results=False, offline_recognize=True
            )
        )
        self._pending: list[str] = list(transcripts)
        self._name = name
        self._language = LanguageCode(language)
        self.exhausted_text = exhausted_text
        self.delay_s = delay_s
        self.recognized: list[str] = []
        """Every transcript handed out, in order."""
        self.audio_durations: list[float] = []
        """The duration of the audio given to each ``recognize()`` call."""

    @property
    def remaining(self) -> list[str]:
        return list(self._pending)

    def push_transcripts(self, *transcripts: str) -> None:
        self._pending.extend(transcripts)

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        duration = calculate_audio_duration(buffer)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        text = self._pending.pop(0) if self._pending else self.exhausted_text
        self.recognized.append(text)
        self.audio_durations.append(duration)
        lang = LanguageCode(language) if isinstance(language, str) else self._language
        now = time.time()
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=_new_id("scripted-stt-"),
            alternatives=[
                stt.SpeechData(
                    language=lang,
                    text=text,
                    start_time=0.0,
                    end_time=duration,
                    confidence=1.0,
                )
            ],
            speech_end_time=now,
        )


# --------------------------------------------------------------------------------------------
# TTS
# --------------------------------------------------------------------------------------------


class ScriptedTTS(_Named, tts.TTS[Any]):
    """A non-streaming TTS that "speaks" a quiet sine tone.

    The tone lasts ``ms_per_char`` per character of text, clamped to
    ``[min_duration_s, max_duration_s]`` (blank text gives no audio), and is pushed in
    ``frame_ms`` frames. With ``realtime=True`` the frames are paced at playback speed.
    """

    def __init__(
        self,
        *,
        name: str = "scripted-tts",
        sample_rate: int = 24000,
        ms_per_char: float = 60.0,
        min_duration_s: float = 0.1,
        max_duration_s: float = 8.0,
        frequency_hz: float = 220.0,
        amplitude: float = 0.05,
        frame_ms: int = 20,
        realtime: bool = False,
    ) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=sample_rate,
            num_channels=1,
        )
        if frame_ms <= 0 or sample_rate <= 0:
            raise ValueError("frame_ms and sample_rate must be positive")
        self._name = name
        self.ms_per_char = ms_per_char
        self.min_duration_s = min_duration_s
        self.max_duration_s = max_duration_s
        self.frequency_hz = frequency_hz
        self.amplitude = amplitude
        self.frame_ms = frame_ms
        self.realtime = realtime
        self.synthesized: list[str] = []
        """Every text synthesized, in order."""

    def duration_for(self, text: str) -> float:
        """Seconds of audio :meth:`synthesize` produces for ``text``."""
        if not text.strip():
            return 0.0
        seconds = len(text) * self.ms_per_char / 1000.0
        return min(max(seconds, self.min_duration_s), self.max_duration_s)

    def render(self, text: str) -> bytes:
        """The int16 PCM bytes for ``text``: a tone with 5 ms fades at both ends."""
        samples = round(self.duration_for(text) * self.sample_rate)
        if samples <= 0:
            return b""
        t = np.arange(samples, dtype=np.float64) / self.sample_rate
        wave = self.amplitude * np.sin(2.0 * math.pi * self.frequency_hz * t)
        fade = min(samples // 2, int(self.sample_rate * 0.005))
        if fade > 0:
            ramp = np.linspace(0.0, 1.0, fade)
            wave[:fade] *= ramp
            wave[-fade:] *= ramp[::-1]
        return bytes((wave * 32767.0).astype(np.int16).tobytes())

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> ScriptedChunkedStream:
        return ScriptedChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class ScriptedChunkedStream(tts.ChunkedStream):
    def __init__(self, *, tts: ScriptedTTS, input_text: str, conn_options: APIConnectOptions):
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._scripted = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        scripted = self._scripted
        scripted.synthesized.append(self._input_text)
        output_emitter.initialize(
            request_id=_new_id("scripted-tts-"),
            sample_rate=scripted.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
            frame_size_ms=scripted.frame_ms,
        )
        pcm = scripted.render(self._input_text)
        bytes_per_frame = scripted.sample_rate * scripted.frame_ms // 1000 * 2
        frame_s = scripted.frame_ms / 1000.0
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i, offset in enumerate(range(0, len(pcm), bytes_per_frame)):
            if scripted.realtime and i:
                delay = started + i * frame_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            output_emitter.push(pcm[offset : offset + bytes_per_frame])
        # no flush(): ending the segment merges the held-back tail into the final frame,
        # while a flush would make the emitter append a 10 ms silent end marker


# --------------------------------------------------------------------------------------------
# VAD
# --------------------------------------------------------------------------------------------


def _rms(frame: rtc.AudioFrame) -> float:
    data = np.frombuffer(frame.data, dtype=np.int16)
    if data.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(data.astype(np.float64) / 32768.0))))


class ScriptedVAD(_Named, vad.VAD):
    """An energy-threshold VAD.

    A frame is speech when its RMS (of samples scaled to [-1, 1]) exceeds ``threshold``.
    Speech starts after ``min_speech_s`` of consecutive speech frames and ends after
    ``min_silence_s`` of consecutive non-speech frames. Every pushed frame yields an
    ``INFERENCE_DONE`` event; ``END_OF_SPEECH`` carries every frame of the utterance.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.01,
        min_speech_s: float = 0.05,
        min_silence_s: float = 0.3,
        update_interval: float = 0.02,
    ) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=update_interval))
        self.threshold = threshold
        self.min_speech_s = min_speech_s
        self.min_silence_s = min_silence_s
        self._name = "energy-threshold"

    def stream(self) -> ScriptedVADStream:
        return ScriptedVADStream(self)


class ScriptedVADStream(vad.VADStream):
    def __init__(self, scripted: ScriptedVAD) -> None:
        self._scripted = scripted
        super().__init__(scripted)

    async def _main_task(self) -> None:
        opts = self._scripted
        speaking = False
        # runs are counted in samples so thresholds are exact (no float drift over frames)
        speech_run = 0  # consecutive speech (while silent) / total speech (while speaking)
        silence_run = 0  # consecutive silence
        utterance: list[rtc.AudioFrame] = []
        samples_index = 0
        sample_rate = 0

        def reset() -> None:
            nonlocal speaking, speech_run, silence_run, utterance
            speaking = False
            speech_run = 0
            silence_run = 0
            utterance = []

        def seconds(samples: int) -> float:
            return samples / sample_rate if sample_rate else 0.0

        async for item in self._input_ch:
            if not isinstance(item, rtc.AudioFrame):
                reset()  # flush: a hard segment boundary
                continue
            started = time.perf_counter()
            if item.sample_rate != sample_rate:
                if sample_rate:
                    logger.warning(
                        "ScriptedVAD input sample rate changed from %d to %d, resetting",
                        sample_rate,
                        item.sample_rate,
                    )
                    reset()
                sample_rate = item.sample_rate
            n = item.samples_per_channel
            samples_index += n
            level = _rms(item)
            is_speech = level > opts.threshold
            probability = min(1.0, level / (2 * opts.threshold)) if opts.threshold > 0 else 1.0

            if is_speech:
                speech_run += n
                silence_run = 0
            else:
                silence_run += n
                if not speaking:
                    speech_run = 0

            if speaking or is_speech:
                utterance.append(item)
            inference_duration = time.perf_counter() - started

            self._event_ch.send_nowait(
                vad.VADEvent(
                    type=vad.VADEventType.INFERENCE_DONE,
                    samples_index=samples_index,
                    timestamp=seconds(samples_index),
                    speech_duration=seconds(speech_run),
                    silence_duration=seconds(silence_run),
                    frames=[item],
                    probability=probability,
                    inference_duration=inference_duration,
                    speaking=speaking or is_speech,
                    raw_accumulated_speech=seconds(speech_run),
                    raw_accumulated_silence=seconds(silence_run),
                )
            )

            if not speaking:
                if is_speech and speech_run >= round(opts.min_speech_s * sample_rate):
                    speaking = True
                    self._event_ch.send_nowait(
                        vad.VADEvent(
                            type=vad.VADEventType.START_OF_SPEECH,
                            samples_index=samples_index,
                            timestamp=seconds(samples_index),
                            speech_duration=seconds(speech_run),
                            silence_duration=0.0,
                            frames=list(utterance),
                            speaking=True,
                        )
                    )
                elif not is_speech:
                    utterance = []
            elif silence_run >= round(opts.min_silence_s * sample_rate):
                self._event_ch.send_nowait(
                    vad.VADEvent(
                        type=vad.VADEventType.END_OF_SPEECH,
                        samples_index=samples_index,
                        timestamp=seconds(samples_index),
                        speech_duration=seconds(speech_run),
                        silence_duration=seconds(silence_run),
                        frames=list(utterance),
                        speaking=False,
                    )
                )
                reset()


# --------------------------------------------------------------------------------------------
# audio helpers
# --------------------------------------------------------------------------------------------


def _frames_from(
    samples: np.ndarray[Any, Any], sample_rate: int, frame_ms: int
) -> list[rtc.AudioFrame]:
    per_frame = max(1, sample_rate * frame_ms // 1000)
    pcm = samples.astype(np.int16)
    frames = []
    for start in range(0, len(pcm), per_frame):
        chunk = pcm[start : start + per_frame]
        frames.append(
            rtc.AudioFrame(
                data=chunk.tobytes(),
                sample_rate=sample_rate,
                num_channels=1,
                samples_per_channel=len(chunk),
            )
        )
    return frames


def speech_frames(
    duration_s: float,
    sample_rate: int = 16000,
    *,
    frequency_hz: float = 300.0,
    amplitude: float = 0.3,
    frame_ms: int = 20,
) -> list[rtc.AudioFrame]:
    """Mono ``frame_ms`` frames of a sine tone, loud enough to count as speech for
    :class:`ScriptedVAD`."""
    n = round(duration_s * sample_rate)
    t = np.arange(n, dtype=np.float64) / sample_rate
    wave = amplitude * 32767.0 * np.sin(2.0 * math.pi * frequency_hz * t)
    return _frames_from(wave, sample_rate, frame_ms)


def silence_frames(
    duration_s: float, sample_rate: int = 16000, *, frame_ms: int = 20
) -> list[rtc.AudioFrame]:
    """Mono ``frame_ms`` frames of digital silence."""
    n = round(duration_s * sample_rate)
    return _frames_from(np.zeros(n), sample_rate, frame_ms)
