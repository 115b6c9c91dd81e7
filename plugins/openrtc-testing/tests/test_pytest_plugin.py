"""The pytest11 fixtures, used the way a user's own suite would use them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from livekit.agents import Agent

from openrtc_core import AgentPool
from openrtc_testing import LoopbackDispatchServer, Rule, ScriptedLLM
from openrtc_testing.worker import simulate_call


class Concierge(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Welcome guests.")


async def test_fixtures_run_a_pool_end_to_end(
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Callable[..., Any],
    scripted_llm: Callable[..., ScriptedLLM],
) -> None:
    pool = AgentPool(
        llm=scripted_llm(Rule(when="towel", reply="Towels are on the left.")),
        vad=None,
        isolation="thread",
    )
    pool.add("concierge", Concierge, default=True)
    async with openrtc_worker(pool):
        _, report = await simulate_call(openrtc_dispatch, "lobby", turns=["where are the towels?"])
    assert report["outcome"] == "completed"
    assert report["turns"][0]["events"][-1]["text"] == "Towels are on the left."
