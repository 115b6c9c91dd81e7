"""pytest fixtures for testing OpenRTC pools (loaded automatically through ``pytest11``).

async def test_support_answers(openrtc_dispatch, openrtc_worker):
    async with openrtc_worker(my_pool):
        d, report = await simulate_call(openrtc_dispatch, "support-1", turns=["hi"])
    assert report["outcome"] == "completed"
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import pytest_asyncio
from livekit.agents import AgentServer

from openrtc_core import AgentPool

from .dispatch import LoopbackDispatchServer
from .providers import Rule, ScriptedLLM
from .worker import running_worker

WorkerFactory = Callable[..., AbstractAsyncContextManager[AgentServer]]


@pytest_asyncio.fixture
async def openrtc_dispatch() -> AsyncIterator[LoopbackDispatchServer]:
    """A started loopback dispatch server on 127.0.0.1 (closed after the test)."""
    async with LoopbackDispatchServer() as server:
        yield server


@pytest.fixture
def openrtc_worker(openrtc_dispatch: LoopbackDispatchServer) -> WorkerFactory:
    """``async with openrtc_worker(pool, simulate=True, **server_kwargs)``: a running worker."""

    def start(pool: AgentPool, **kwargs: Any) -> AbstractAsyncContextManager[AgentServer]:
        return running_worker(pool, openrtc_dispatch, **kwargs)

    return start


@pytest.fixture
def scripted_llm() -> Callable[..., ScriptedLLM]:
    """A factory for :class:`ScriptedLLM`: ``scripted_llm(Rule(when="hi", reply="hello"))``."""

    def make(*rules: Rule, **kwargs: Any) -> ScriptedLLM:
        return ScriptedLLM(rules=rules, **kwargs)

    return make
