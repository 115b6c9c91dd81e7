"""pytest fixtures for testing OpenRTC pools (loaded automatically through ``pytest11``).

async def test_support_answers(openrtc_dispatch, openrtc_worker):
    async with openrtc_worker(my_pool):
        d, report = await simulate_call(openrtc_dispatch, "support-1", turns=["hi"])
    assert report["outcome"] == "completed"
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar, cast

import pytest
from livekit.agents import AgentServer

from openrtc_core import AgentPool

from .dispatch import LoopbackDispatchServer
from .providers import Rule, ScriptedLLM
from .worker import running_worker

try:
    import pytest_asyncio
except ImportError:  # installed without the [pytest] extra: pytest must still start
    pytest_asyncio = None  # type: ignore[assignment]

WorkerFactory = Callable[..., AbstractAsyncContextManager[AgentServer]]
_F = TypeVar("_F", bound=Callable[..., Any])

MISSING_PYTEST_ASYNCIO = (
    "the {name} fixture needs pytest-asyncio: pip install 'openrtc-testing[pytest]'"
)


def _async_fixture(func: _F) -> _F:
    """``pytest_asyncio.fixture``, or, without pytest-asyncio, a fixture of the same name that
    fails the tests using it (every other test, and pytest itself, are unaffected)."""
    if pytest_asyncio is not None:
        return cast(_F, pytest_asyncio.fixture(func))
    message = MISSING_PYTEST_ASYNCIO.format(name=func.__name__)

    def unavailable() -> None:
        pytest.fail(message, pytrace=False)

    return cast(_F, pytest.fixture(name=func.__name__)(unavailable))


@_async_fixture
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


VOICE_TOOLS = ("espeak-ng", "sox")
REQUIRE_VOICE_ENV = "OPENRTC_REQUIRE_VOICE"


@pytest.fixture
def espeak_ng() -> str:
    """The real espeak-ng (and sox), which voice-mode calls speak with; the test is skipped
    without them, unless ``OPENRTC_REQUIRE_VOICE=1`` (CI sets it), when it fails."""
    missing = [tool for tool in VOICE_TOOLS if shutil.which(tool) is None]
    if missing:
        message = f"{' and '.join(missing)} not installed (apt-get install {' '.join(missing)})"
        if os.environ.get(REQUIRE_VOICE_ENV) == "1":
            pytest.fail(message)
        pytest.skip(message)
    return str(shutil.which("espeak-ng"))
