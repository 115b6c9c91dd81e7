"""Pools the end-to-end tests run. A module, so job processes can import the same pools."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from livekit.agents import Agent, RunContext, function_tool, get_job_context

from openrtc_core import AgentContext, AgentPool
from openrtc_testing import Rule, ScriptedLLM

# What the agents saw, for tests whose jobs run in this process (thread isolation).
EVENTS: list[tuple[str, ...]] = []

RULES = [
    Rule(when="order", call="lookup_order", args={"order_id": "42"}, after_tool="Found: {output}"),
    Rule(when="refund", call="refund", args={"order_id": "42"}, after_tool="Refunded: {output}"),
    Rule(when="hello", reply="Hi, {user}!"),
]

POOL_LLM = ScriptedLLM(name="pool-llm", rules=RULES)
SALES_LLM = ScriptedLLM(name="sales-llm", rules=RULES, default_reply="Buy now.")


class SupportAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Help callers with support questions.")

    async def on_enter(self) -> None:
        EVENTS.append(("enter", get_job_context().job.id))

    async def on_exit(self) -> None:
        EVENTS.append(("exit", get_job_context().job.id))

    @function_tool
    async def lookup_order(self, context: RunContext[Any], order_id: str) -> str:
        """Look up an order by its id."""
        EVENTS.append(("tool", "lookup_order", order_id))
        return f"order {order_id} ships tomorrow"


class SalesAgent(SupportAgent):
    def __init__(self) -> None:
        Agent.__init__(self, instructions="Sell things.")


class BookingAgent(Agent):
    def __init__(self, lang: str) -> None:
        super().__init__(instructions=f"Book appointments. Speak {lang}.")
        self.lang = lang


def booking_factory(ctx: AgentContext) -> Agent:
    lang = str(ctx.metadata.get("lang", "en"))
    EVENTS.append(("factory", ctx.agent, ctx.job_id, ctx.room_name, lang))
    return BookingAgent(lang=lang)


def make_pool(**settings: Any) -> AgentPool:
    pool = AgentPool(llm=POOL_LLM, vad=None, greeting="Greet the caller.", **settings)
    pool.add("support", SupportAgent, default=True)
    pool.add("sales", SalesAgent, llm=SALES_LLM, greeting=None)
    pool.add("booking", booking_factory)
    pool.add("sales-eu", SalesAgent, llm=SALES_LLM, greeting=None)
    return pool


# Thread isolation: jobs run in this process, so tests can read EVENTS.
THREAD_POOL = make_pool(isolation="thread")

# No default agent and an explicit dispatch name: unmatched jobs are rejected.
STRICT_POOL = AgentPool(llm=POOL_LLM, vad=None, isolation="thread", agent_name="strict")
STRICT_POOL.add("support", SupportAgent)

# livekit's process per job: the job process rebuilds this pool by importing this module.
PROCESS_POOL = make_pool(isolation="process", job_memory_warn_mb=500)


# -- coroutine isolation: agents that misbehave, each in its own way ----------------------------


class EnterBoomAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Fails as it starts.")

    async def on_enter(self) -> None:
        raise RuntimeError("on_enter exploded")


class NodeBoomAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Fails mid-call.")

    async def llm_node(self, chat_ctx: Any, tools: Any, model_settings: Any) -> Any:
        if "explode" in (chat_ctx.items[-1].text_content or ""):
            raise RuntimeError("llm_node exploded")
        return Agent.default.llm_node(self, chat_ctx, tools, model_settings)


class BlockingAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Blocks the event loop.")

    async def llm_node(self, chat_ctx: Any, tools: Any, model_settings: Any) -> Any:
        if "block" in (chat_ctx.items[-1].text_content or ""):
            # The bug under test: a synchronous call on the event loop.
            time.sleep(0.5)  # noqa: ASYNC251
        return Agent.default.llm_node(self, chat_ctx, tools, model_settings)


class HangingExitAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Never finishes shutting down.")

    async def on_enter(self) -> None:
        get_job_context().add_shutdown_callback(_hang_forever)


async def _hang_forever(reason: str) -> None:
    await asyncio.Event().wait()


class ToolBoomAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Its tool fails.")

    @function_tool
    async def refund(self, context: RunContext[Any], order_id: str) -> str:
        """Refund an order."""
        raise RuntimeError(f"refund tool exploded for {order_id}")


SPUN: list[asyncio.Task[None]] = []


class SpinnerAgent(Agent):
    """Starts a task that never ends and forgets it (a leak the worker must clean up)."""

    def __init__(self) -> None:
        super().__init__(instructions="Leaves a busy task behind.")

    async def on_enter(self) -> None:
        SPUN.append(asyncio.create_task(_spin(), name="spin-forever"))


async def _spin() -> None:
    while True:  # noqa: ASYNC110 - the bug under test: a busy task with no end
        await asyncio.sleep(0)


def make_coroutine_pool(**settings: Any) -> AgentPool:
    pool = AgentPool(llm=POOL_LLM, vad=None, **settings)
    pool.add("support", SupportAgent, default=True)
    pool.add("enter-boom", EnterBoomAgent)
    pool.add("node-boom", NodeBoomAgent)
    pool.add("blocker", BlockingAgent)
    pool.add("hanger", HangingExitAgent)
    pool.add("tool-boom", ToolBoomAgent)
    pool.add("spinner", SpinnerAgent)
    return pool


COROUTINE_POOL = make_coroutine_pool(max_sessions=300)
CAPPED_POOL = make_coroutine_pool(max_sessions=5, agent_name="capped")


def broken_factory(ctx: AgentContext) -> Agent:
    raise ValueError(f"cannot build an agent for room {ctx.room_name}")


COROUTINE_POOL.add("factory-boom", broken_factory)


class LingeringAgent(Agent):
    """Its call ends at once; its job then takes 3 s to shut down (a slow upload, say)."""

    def __init__(self) -> None:
        super().__init__(instructions="Lingers after the call.")

    async def on_enter(self) -> None:
        get_job_context().add_shutdown_callback(_linger)


async def _linger(reason: str) -> None:
    await asyncio.sleep(3)


# One slot: a job that only shuts down must not hold it.
ONE_SLOT_POOL = AgentPool(llm=POOL_LLM, vad=None, max_sessions=1, agent_name="one-slot")
ONE_SLOT_POOL.add("linger", LingeringAgent, default=True)
