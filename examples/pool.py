"""Three agents, one worker: the support/sales/booking pool from the README.

openrtc simulate examples/pool.py --calls 20     # no LiveKit server, no keys
python examples/pool.py dev                      # against your LiveKit server
"""

from __future__ import annotations

from typing import Any

from livekit.agents import Agent, RunContext, TurnHandlingOptions, function_tool, inference

from openrtc_core import AgentContext, AgentPool


class SupportAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Help callers with support questions. Be brief.")

    @function_tool
    async def lookup_order(self, context: RunContext[Any], order_id: str) -> str:
        """Look up the shipping status of an order."""
        return f"Order {order_id} ships tomorrow."


class SalesAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Answer questions about plans and prices.")


class BookingAgent(Agent):
    def __init__(self, lang: str = "en") -> None:
        super().__init__(instructions=f"Book appointments. Reply in the language '{lang}'.")


def booking(ctx: AgentContext) -> Agent:
    return BookingAgent(lang=str(ctx.metadata.get("lang", "en")))


pool = AgentPool(
    stt="deepgram/nova-3",
    llm="openai/chat-latest",
    tts="cartesia/sonic-3",
    turn_handling=TurnHandlingOptions(turn_detection=inference.TurnDetector()),
    greeting="Greet the caller.",
)
pool.add("support", SupportAgent, default=True)
pool.add("sales", SalesAgent, llm="openai/gpt-4.1-mini", greeting=None)
pool.add("booking", booking)

if __name__ == "__main__":
    pool.run()
