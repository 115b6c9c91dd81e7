"""The scripted providers, unit-tested and driven through a real livekit ``AgentSession``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import (
    Agent,
    AgentSession,
    APIConnectionError,
    function_tool,
    llm,
    vad,
)
from livekit.agents.voice import io
from livekit.agents.voice.events import (
    ConversationItemAddedEvent,
    ErrorEvent,
    UserInputTranscribedEvent,
)
from livekit.agents.voice.run_result import RunResult

from openrtc_testing import (
    Rule,
    ScriptedLLM,
    ScriptedSTT,
    ScriptedTTS,
    ScriptedVAD,
    silence_frames,
    speech_frames,
)

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


class SupportAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a helpful support agent.")
        self.lookups: list[str] = []

    @function_tool
    async def lookup_order(self, order_id: str) -> str:
        """Look up the shipping status of an order.

        Args:
            order_id: The order number.
        """
        self.lookups.append(order_id)
        return f"order {order_id} ships tomorrow"


def support_llm(**kwargs: object) -> ScriptedLLM:
    return ScriptedLLM(
        rules=[
            Rule(
                when="where is my order",
                call="lookup_order",
                args={"order_id": "A-17"},
                after_tool="Good news: {output}.",
            ),
            Rule(when="refund", call="issue_refund", args={"amount": 10}),
            Rule(when="crash", raise_error="scripted provider outage"),
            Rule(when=r"^(hi|hello)\b", reply="Hi! You said: {user}"),
        ],
        default_reply="I did not get that.",
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
async def text_session() -> AsyncIterator[tuple[AgentSession[None], ScriptedLLM, SupportAgent]]:
    scripted = support_llm()
    agent = SupportAgent()
    session: AgentSession[None] = AgentSession(
        llm=scripted, vad=None, turn_handling={"turn_detection": None}
    )
    await session.start(agent)
    try:
        yield session, scripted, agent
    finally:
        await session.aclose()


def assistant_text(event_assert: object) -> str:
    item = event_assert.event().item  # type: ignore[attr-defined]
    assert isinstance(item, llm.ChatMessage)
    return item.text_content or ""


# --------------------------------------------------------------------------------------------
# ScriptedLLM through AgentSession
# --------------------------------------------------------------------------------------------


async def test_text_reply_through_session(
    text_session: tuple[AgentSession[None], ScriptedLLM, SupportAgent],
) -> None:
    session, scripted, _ = text_session
    result: RunResult[Any] = await session.run(user_input="Hello there")

    msg = result.expect.next_event().is_message(role="assistant")
    assert assistant_text(msg) == "Hi! You said: Hello there"
    result.expect.no_more_events()

    assert scripted.calls[-1].kind == "reply"
    assert scripted.calls[-1].user_text == "Hello there"
    assert scripted.calls[-1].tools == ("lookup_order",)


async def test_default_reply_when_no_rule_matches(
    text_session: tuple[AgentSession[None], ScriptedLLM, SupportAgent],
) -> None:
    session, _, _ = text_session
    result: RunResult[Any] = await session.run(user_input="tell me a joke")
    msg = result.expect.next_event().is_message(role="assistant")
    assert assistant_text(msg) == "I did not get that."


async def test_tool_call_then_after_tool_reply(
    text_session: tuple[AgentSession[None], ScriptedLLM, SupportAgent],
) -> None:
    session, scripted, agent = text_session
    result: RunResult[Any] = await session.run(user_input="Where is my order?")

    result.expect.next_event().is_function_call(name="lookup_order", arguments={"order_id": "A-17"})
    result.expect.next_event().is_function_call_output(output="order A-17 ships tomorrow")
    msg = result.expect.next_event().is_message(role="assistant")
    assert assistant_text(msg) == "Good news: order A-17 ships tomorrow."
    result.expect.no_more_events()

    assert agent.lookups == ["A-17"]
    assert [c.kind for c in scripted.calls] == ["tool_call", "after_tool"]
    assert scripted.calls[1].tool_output == "order A-17 ships tomorrow"


async def test_call_to_unregistered_tool_says_so(
    text_session: tuple[AgentSession[None], ScriptedLLM, SupportAgent],
) -> None:
    session, scripted, _ = text_session
    result: RunResult[Any] = await session.run(user_input="I want a refund")
    msg = result.expect.next_event().is_message(role="assistant")
    assert "issue_refund" in assistant_text(msg)
    assert "missing" in assistant_text(msg)
    result.expect.no_more_events()
    assert scripted.calls[-1].kind == "missing_tool"


async def test_greeting_via_generate_reply(
    text_session: tuple[AgentSession[None], ScriptedLLM, SupportAgent],
) -> None:
    session, scripted, _ = text_session
    handle = session.generate_reply(instructions="Greet the user warmly.")
    await handle
    [item] = [i for i in handle.chat_items if isinstance(i, llm.ChatMessage)]
    assert item.role == "assistant"
    assert item.text_content == "Hello! How can I help you today?"
    assert scripted.calls[-1].kind == "greeting"
    assert scripted.calls[-1].user_text is None

    # after a user turn was answered, an instruction-only reply is a greeting again
    await session.run(user_input="hello")
    handle = session.generate_reply(instructions="Ask if there is anything else.")
    await handle
    assert scripted.calls[-1].kind == "greeting"


async def test_raise_error_surfaces_as_provider_error(
    text_session: tuple[AgentSession[None], ScriptedLLM, SupportAgent],
) -> None:
    session, scripted, _ = text_session
    errors: list[ErrorEvent] = []
    session.on("error", errors.append)

    with pytest.raises(APIConnectionError, match="scripted provider outage"):
        await session.run(user_input="please crash now")

    assert scripted.calls[-1].kind == "error"
    assert len(errors) == 1
    assert errors[0].source is scripted
    assert isinstance(errors[0].error, llm.LLMError)
    assert errors[0].error.recoverable is False

    # one failure is below max_unrecoverable_errors: the session keeps answering
    result: RunResult[Any] = await session.run(user_input="hi again")
    msg = result.expect.next_event().is_message(role="assistant")
    assert assistant_text(msg) == "Hi! You said: hi again"


# --------------------------------------------------------------------------------------------
# ScriptedLLM directly
# --------------------------------------------------------------------------------------------


def user_ctx(text: str) -> llm.ChatContext:
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="system", content="be brief")
    ctx.add_message(role="user", content=text)
    return ctx


async def test_streaming_chunks_delay_and_usage() -> None:
    scripted = ScriptedLLM(
        rules=[Rule(when="count", reply="one two three four five")],
        chunk_words=2,
        token_delay_s=0.05,
    )
    started = time.perf_counter()
    chunks: list[llm.ChatChunk] = []
    async with scripted.chat(chat_ctx=user_ctx("count please")) as stream:
        async for chunk in stream:
            chunks.append(chunk)
    elapsed = time.perf_counter() - started

    contents = [c.delta.content for c in chunks if c.delta and c.delta.content]
    assert contents == ["one two ", "three four ", "five"]
    assert elapsed >= 0.09  # two gaps of 50 ms between three chunks
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert scripted.model == "scripted-llm"
    assert scripted.provider == "openrtc-scripted"


async def test_the_call_log_keeps_only_the_latest_requests() -> None:
    scripted = ScriptedLLM(keep_calls=2)
    for text in ("first", "second", "third"):
        async with scripted.chat(chat_ctx=user_ctx(text)) as stream:
            async for _ in stream:
                pass
    assert [c.user_text for c in scripted.calls] == ["second", "third"]
    with pytest.raises(ValueError, match="keep_calls"):
        ScriptedLLM(keep_calls=0)


async def test_tool_call_chunk_carries_json_arguments() -> None:
    scripted = support_llm()
    agent = SupportAgent()
    tools = [agent.lookup_order]
    response = await scripted.chat(
        chat_ctx=user_ctx("where is my order?"), tools=list(tools)
    ).collect()
    [call] = response.tool_calls
    assert call.name == "lookup_order"
    assert json.loads(call.arguments) == {"order_id": "A-17"}
    assert call.call_id.startswith("call_")
    assert response.text == ""


def test_rule_matching() -> None:
    assert Rule(when="ORDER").matches("where is my order")
    assert Rule(when=r"order\s+#?\d+").matches("status of order #42?")
    assert not Rule(when=r"^order").matches("my order")
    assert Rule(when="what?(").matches("so what?( really")  # invalid regex: substring only
    assert not Rule(when="what?(").matches("nothing")


# --------------------------------------------------------------------------------------------
# ScriptedTTS / ScriptedSTT / ScriptedVAD
# --------------------------------------------------------------------------------------------


async def test_tts_tone_duration_and_frames() -> None:
    tts = ScriptedTTS()
    text = "hello world"  # 11 chars * 60 ms
    frames = [ev.frame async for ev in tts.synthesize(text)]
    total = sum(f.duration for f in frames)
    assert total == pytest.approx(0.66, abs=1e-6)
    assert all(f.sample_rate == 24000 and f.num_channels == 1 for f in frames)
    assert max(f.duration for f in frames) <= 0.0201
    assert len(frames) >= 30
    pcm = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    assert 0 < np.abs(pcm).max() < 0.1 * 32768  # quiet, but not silent
    assert tts.synthesized == [text]

    capped = ScriptedTTS(max_duration_s=0.5)
    audio = await capped.synthesize("x" * 100).collect()
    assert audio.duration == pytest.approx(0.5, abs=1e-6)
    assert await _collect_frames(capped, "   ") == []


async def _collect_frames(tts: ScriptedTTS, text: str) -> list[rtc.AudioFrame]:
    return [ev.frame async for ev in tts.synthesize(text)]


async def test_tts_realtime_paces_frames() -> None:
    tts = ScriptedTTS(realtime=True)
    started = time.perf_counter()
    frames = await _collect_frames(tts, "abcdefgh")  # 0.48 s of audio
    elapsed = time.perf_counter() - started
    assert sum(f.duration for f in frames) == pytest.approx(0.48, abs=1e-6)
    assert elapsed >= 0.4


async def test_stt_returns_transcripts_in_order() -> None:
    stt = ScriptedSTT(["first", "second"])
    audio = speech_frames(0.2)
    texts = [(await stt.recognize(audio)).alternatives[0].text for _ in range(3)]
    assert texts == ["first", "second", ""]
    assert stt.recognized == ["first", "second", ""]
    assert stt.audio_durations == [pytest.approx(0.2)] * 3
    assert stt.remaining == []
    assert stt.capabilities.streaming is False


async def _run_vad(
    frames: list[rtc.AudioFrame], *, flush_after: int | None = None
) -> list[vad.VADEvent]:
    stream = ScriptedVAD(min_speech_s=0.06, min_silence_s=0.2).stream()
    for i, frame in enumerate(frames):
        stream.push_frame(frame)
        if flush_after is not None and i + 1 == flush_after:
            stream.flush()
    stream.end_input()
    events = [ev async for ev in stream]
    await stream.aclose()
    return events


async def test_vad_detects_tone_and_ignores_silence() -> None:
    events = await _run_vad(silence_frames(0.2) + speech_frames(0.5) + silence_frames(0.4))
    kinds = [ev.type for ev in events if ev.type != vad.VADEventType.INFERENCE_DONE]
    assert kinds == [vad.VADEventType.START_OF_SPEECH, vad.VADEventType.END_OF_SPEECH]
    assert sum(1 for ev in events if ev.type == vad.VADEventType.INFERENCE_DONE) == 55

    end = next(ev for ev in events if ev.type == vad.VADEventType.END_OF_SPEECH)
    # the utterance: all of the tone plus the silence it took to declare the end
    assert sum(f.duration for f in end.frames) == pytest.approx(0.7, abs=0.001)
    assert end.speech_duration == pytest.approx(0.5)
    assert end.silence_duration == pytest.approx(0.2)

    assert [ev.type for ev in await _run_vad(silence_frames(1.0))] == [
        vad.VADEventType.INFERENCE_DONE
    ] * 50


async def test_vad_flush_is_a_hard_boundary() -> None:
    frames = speech_frames(0.3) + silence_frames(0.4)
    events = await _run_vad(frames, flush_after=10)  # flush in the middle of the tone
    kinds = [ev.type for ev in events if ev.type != vad.VADEventType.INFERENCE_DONE]
    # speech started, the flush dropped it, the rest of the tone starts a new utterance
    assert kinds == [
        vad.VADEventType.START_OF_SPEECH,
        vad.VADEventType.START_OF_SPEECH,
        vad.VADEventType.END_OF_SPEECH,
    ]
    end = next(ev for ev in events if ev.type == vad.VADEventType.END_OF_SPEECH)
    assert end.speech_duration == pytest.approx(0.1)


# --------------------------------------------------------------------------------------------
# a full audio turn: audio in -> VAD -> STT -> LLM -> TTS -> audio out
# --------------------------------------------------------------------------------------------


class QueueAudioInput(io.AudioInput):
    def __init__(self) -> None:
        super().__init__(label="test-queue-input")
        self.queue: asyncio.Queue[rtc.AudioFrame] = asyncio.Queue()

    async def __anext__(self) -> rtc.AudioFrame:
        return await self.queue.get()


class CollectingAudioOutput(io.AudioOutput):
    """An audio sink that "plays" instantly and keeps every frame."""

    def __init__(self) -> None:
        super().__init__(
            label="test-collector", capabilities=io.AudioOutputCapabilities(pause=False)
        )
        self.frames: list[rtc.AudioFrame] = []
        self._segment_s = 0.0
        self._capturing = False

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if not self._capturing:
            self._capturing = True
            self.on_playback_started(created_at=time.time())
        self.frames.append(frame)
        self._segment_s += frame.duration

    def _finish(self, *, interrupted: bool) -> None:
        if self._capturing:
            self._capturing = False
            played, self._segment_s = self._segment_s, 0.0
            self.on_playback_finished(playback_position=played, interrupted=interrupted)

    def flush(self) -> None:
        super().flush()
        self._finish(interrupted=False)

    def clear_buffer(self) -> None:
        self._finish(interrupted=True)


async def test_audio_turn_through_full_pipeline() -> None:
    scripted_llm = ScriptedLLM(rules=[Rule(when="order", reply="Your order ships tomorrow.")])
    scripted_stt = ScriptedSTT(["where is my order"])
    scripted_tts = ScriptedTTS()
    session: AgentSession[None] = AgentSession(
        llm=scripted_llm,
        stt=scripted_stt,
        tts=scripted_tts,
        vad=ScriptedVAD(),
        turn_handling={
            "turn_detection": "vad",
            "endpointing": {"min_delay": 0.05, "max_delay": 0.5},
            "interruption": {"enabled": False},
        },
        session_close_transcript_timeout=0.1,
    )
    audio_in = QueueAudioInput()
    audio_out = CollectingAudioOutput()
    session.input.audio = audio_in
    session.output.audio = audio_out

    transcripts: list[UserInputTranscribedEvent] = []
    session.on("user_input_transcribed", transcripts.append)
    answered: asyncio.Future[llm.ChatMessage] = asyncio.get_running_loop().create_future()

    def on_item(ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if isinstance(item, llm.ChatMessage) and item.role == "assistant" and not answered.done():
            answered.set_result(item)

    session.on("conversation_item_added", on_item)
    await session.start(Agent(instructions="You answer order questions."))
    try:
        for frame in speech_frames(0.6) + silence_frames(0.6):
            audio_in.queue.put_nowait(frame)
        reply = await asyncio.wait_for(answered, 30)  # generous: a deadline, not a pace
        assert reply.text_content == "Your order ships tomorrow."
        # the reply's audio reached the output
        await asyncio.wait_for(audio_out.wait_for_playout(), 30)
    finally:
        await session.aclose()

    assert [(t.transcript, t.is_final) for t in transcripts] == [("where is my order", True)]
    assert scripted_stt.recognized == ["where is my order"]
    assert scripted_stt.audio_durations[0] == pytest.approx(0.9, abs=1e-6)  # tone + end silence
    assert scripted_llm.calls[0].user_text == "where is my order"
    assert scripted_tts.synthesized == ["Your order ships tomorrow."]
    played = sum(f.duration for f in audio_out.frames)
    # 26 characters at 60 ms, plus the 10 ms silent end-of-segment marker livekit's AudioEmitter
    # appends when tts.StreamAdapter flushes after each sentence
    assert played == pytest.approx(26 * 0.06 + 0.01, abs=1e-6)
    assert {f.sample_rate for f in audio_out.frames} == {24000}
