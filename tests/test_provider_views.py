"""Sessions of one pool share provider objects but never each other's events."""

from __future__ import annotations

from typing import Any

import pytest
from livekit.agents import Agent, AgentSession
from livekit.agents.voice.run_result import RunResult

from openrtc_core import AgentPool, JobView
from openrtc_core.session import build_session, session_options
from openrtc_testing import Rule, ScriptedLLM

pytestmark = pytest.mark.asyncio

SHARED = ScriptedLLM(
    name="shared",
    rules=[Rule(when="fail", raise_error="provider down"), Rule(when="hi", reply="hello")],
)
POOL = AgentPool(llm=SHARED, vad=None, turn_handling={"turn_detection": None}, load_plugins=False)


class Plain(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Answer.")


POOL.add("plain", Plain)


def _session(job_id: str) -> AgentSession[Any]:
    options = session_options(
        POOL.plugins,
        POOL.view(),
        "plain",
        job=JobView(job_id=job_id, room_name=job_id),
        tenant=None,
        userdata={},
    )
    return build_session(options)


async def test_one_sessions_errors_and_metrics_stay_in_that_session() -> None:
    noisy, quiet = _session("noisy"), _session("quiet")
    assert noisy.llm is not quiet.llm  # each a view of the shared provider
    assert isinstance(noisy.llm, ScriptedLLM)
    assert noisy.llm.model == "shared"
    errors: list[str] = []
    metrics: list[str] = []
    closed: list[str] = []
    quiet.on("error", lambda ev: errors.append(str(ev.error)))
    quiet.on("metrics_collected", lambda ev: metrics.append(type(ev.metrics).__name__))
    quiet.on("close", lambda ev: closed.append(ev.reason.value))
    noisy_errors: list[str] = []
    noisy.on("error", lambda ev: noisy_errors.append(str(ev.error)))
    await noisy.start(Plain())
    await quiet.start(Plain())
    try:
        # More failed requests than livekit's max_unrecoverable_errors (3): the noisy
        # session may close itself; the quiet one must not even hear of it.
        for _ in range(5):
            try:
                await noisy.run(user_input="please fail")
            except Exception:
                continue
        result: RunResult[Any] = await quiet.run(user_input="hi")
        assert result.events[-1].item.text_content == "hello"  # type: ignore[union-attr]
        assert closed == []
    finally:
        await quiet.aclose()
        await noisy.aclose()
    assert len(noisy_errors) >= 4
    assert errors == []
    # quiet heard the metrics of its own single turn only, not the noisy session's.
    assert 1 <= len(metrics) <= 2
