"""The pool the deploy tests run; each generation imports it afresh from disk.

``DEPLOY_TEST_STATE`` names a folder. Its ``reply`` file is what the agent answers (so a
call's reply says which code served it); its ``break`` file breaks the next generation that
loads: ``import`` (the module raises), ``prewarm`` (the prewarm raises), ``register`` (the
workers use a wrong API secret, so LiveKit refuses them). ``prewarm_s`` makes the prewarm
take that many seconds (only for the code whose reply ``prewarm_for`` names, if given).
``hold_turns_for`` names a reply whose code answers no turn until an ``open`` file exists, so
its calls stay live however long a deploy takes. Each import appends its reply to
``loaded``. ``DEPLOY_TEST_ISOLATION`` picks the isolation backend.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterable
from pathlib import Path
from typing import Any

from livekit.agents import Agent, JobProcess, ModelSettings, llm

from openrtc_core import AgentPool, PoolView, hookimpl
from openrtc_testing import Rule, ScriptedLLM

STATE = Path(os.environ["DEPLOY_TEST_STATE"])


def _read(name: str) -> str:
    path = STATE / name
    return path.read_text().strip() if path.exists() else ""


BREAK = _read("break")
if BREAK == "import":
    raise ImportError("deploy test: this generation's code does not import")
if BREAK == "register":
    os.environ["LIVEKIT_API_SECRET"] = "not-the-loopback-secret-" + "x" * 16


class Desk(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Answer briefly.")

    async def llm_node(
        self, chat_ctx: llm.ChatContext, tools: list[llm.Tool], model_settings: ModelSettings
    ) -> AsyncIterable[Any]:
        # Another process opens it: a file, polled, not an event.
        while HOLD_TURNS and not (STATE / "open").exists():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        async for chunk in Agent.default.llm_node(self, chat_ctx, tools, model_settings):
            yield chunk


class Prewarm:
    @hookimpl
    def openrtc_prewarm(self, proc: JobProcess, pool: PoolView) -> None:
        time.sleep(PREWARM_S)  # a slow model load, when the test asks for one
        if BREAK == "prewarm":
            raise RuntimeError("deploy test: this generation's prewarm fails")


REPLY = _read("reply") or "v1"

with (STATE / "loaded").open("a") as loaded:  # a test waits for a generation's import
    loaded.write(f"{REPLY}\n")
PREWARM_S = float(_read("prewarm_s") or 0)
if _read("prewarm_for") not in ("", REPLY):
    PREWARM_S = 0.0  # slow for that code only
HOLD_TURNS = _read("hold_turns_for") == REPLY


pool = AgentPool(
    isolation=os.environ.get("DEPLOY_TEST_ISOLATION", "coroutine"),
    llm=ScriptedLLM(name="desk-llm", rules=[Rule(when="hello", reply=f"{REPLY} here")]),
    turn_handling={"turn_detection": None},
    plugins=[Prewarm()],
)
pool.add("desk", Desk, default=True)


def describe() -> dict[str, Any]:
    return {"reply": REPLY, "break": BREAK}
