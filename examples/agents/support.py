"""A directory target: `openrtc start examples/agents` serves every module here, by file name."""

from __future__ import annotations

from livekit.agents import Agent

import openrtc_core


@openrtc_core.agent(default=True, llm="openai/gpt-4.1-mini", greeting="Greet the caller.")
class SupportAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Help callers with support questions.")
