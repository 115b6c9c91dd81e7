"""Registered as `sales` (the file name); the decorator only adds session overrides."""

from __future__ import annotations

from livekit.agents import Agent

import openrtc_core


@openrtc_core.agent(llm="openai/gpt-4.1-mini")
class SalesAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Answer questions about plans and prices.")
