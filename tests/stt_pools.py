"""A network-like streaming STT, the loopback HTTP server it talks to, and the pool that uses it.

For tests/test_stt_outlives_job.py. ``PollingSTT`` behaves like a network STT plugin: its
stream takes livekit's per-job HTTP session (``utils.http_context.http_session()``) once, then
keeps a long-poll request open against :class:`PollServer` for as long as the stream lives,
consuming whatever audio it is given, and turns client errors into a retryable
``APIConnectionError`` as plugins do. A stream that outlives its job therefore shows up three
ways: a task of the job still pending, requests reaching the server after the job ended, and
livekit's ``Error in _stt_pump`` once the job's HTTP session is closed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    Agent,
    APIConnectionError,
    APIConnectOptions,
    NotGivenOr,
    RunContext,
    function_tool,
    get_job_context,
    stt,
    utils,
)
from livekit.agents.utils.aio.channel import ChanClosed, ChanEmpty

from openrtc_core import AgentPool
from openrtc_testing import Rule, ScriptedLLM

POLL_PATH = "/stt/poll"
HOLD_S = 0.5
"""How long the server holds each poll open before answering (the client then polls again)."""


@dataclass
class PollRequest:
    """One poll the server received."""

    job_id: str
    started: float
    """``time.monotonic()`` when the server got it (same clock as the tests: same process)."""
    ended: float | None = None
    disconnected: bool = False
    """The client went away while the request was held open."""


class PollServer:
    """A loopback aiohttp server that holds each STT poll open for HOLD_S seconds."""

    def __init__(self) -> None:
        self.requests: list[PollRequest] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._connection_jobs: dict[object, str] = {}

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(POLL_PATH, self._poll)
        # handler_cancellation: a client that disconnects cancels its held request, so the
        # server records when the STT's connection went away.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}{POLL_PATH}"

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> PollServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _poll(self, request: web.Request) -> web.Response:
        entry = PollRequest(job_id=request.query.get("job", ""), started=time.monotonic())
        self.requests.append(entry)
        self._connection_jobs[request.protocol] = entry.job_id
        try:
            await asyncio.sleep(HOLD_S)
        except asyncio.CancelledError:
            entry.disconnected = True
            raise
        finally:
            entry.ended = time.monotonic()
        return web.Response(text="")

    def requests_of(self, job_id: str) -> list[PollRequest]:
        return [r for r in self.requests if r.job_id == job_id]

    def open_connections(self, job_id: str) -> int:
        """Connections still open whose last request came from job `job_id`."""
        assert self._runner is not None and self._runner.server is not None
        return sum(
            1 for c in self._runner.server.connections if self._connection_jobs.get(c) == job_id
        )


class PollingSTT(stt.STT[Any]):
    """A streaming STT that long-polls :attr:`url` through livekit's per-job HTTP session."""

    def __init__(self) -> None:
        super().__init__(
            capabilities=stt.STTCapabilities(
                streaming=True, interim_results=False, offline_recognize=False
            )
        )
        self.url = ""
        """Set by the test to its :class:`PollServer`'s URL before calls are dispatched."""

    @property
    def model(self) -> str:
        return "polling-stt"

    @property
    def provider(self) -> str:
        return "loopback"

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        raise NotImplementedError("PollingSTT only streams")

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> PollingStream:
        return PollingStream(stt=self, conn_options=conn_options, url=self.url)


class PollingStream(stt.RecognizeStream):
    def __init__(self, *, stt: PollingSTT, conn_options: APIConnectOptions, url: str) -> None:
        super().__init__(stt=stt, conn_options=conn_options)
        self._url = url
        # As network plugins do: the job's shared HTTP session, taken once and kept (livekit
        # retries call _run again on the same stream, so a retry after the job's HTTP
        # session closed meets "Session is closed").
        self._session = utils.http_context.http_session()
        self._job_id = get_job_context().job.id

    async def _run(self) -> None:
        # Everything runs in livekit's stream task (no task of this module), as it would in
        # a livekit.plugins.* module.
        while True:
            if not self._consume_audio():
                return  # input ended: the stream is done
            try:
                async with self._session.get(self._url, params={"job": self._job_id}) as resp:
                    await resp.read()
            except aiohttp.ClientError as e:
                raise APIConnectionError(f"stt poll failed: {e}") from e

    def _consume_audio(self) -> bool:
        """Take the audio pushed so far (none in a text-only call); False once input ended."""
        while True:
            try:
                self._input_ch.recv_nowait()
            except ChanEmpty:
                return True
            except ChanClosed:
                return False


# -- the pool ---------------------------------------------------------------------------------


class EnterBoomAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Fails as it starts.")

    async def on_enter(self) -> None:
        raise RuntimeError("on_enter exploded (stt pool)")


class ToolBoomAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Its tool fails.")

    @function_tool
    async def refund(self, context: RunContext[Any], order_id: str) -> str:
        """Refund an order."""
        raise RuntimeError(f"refund tool exploded for {order_id} (stt pool)")


class ListenerAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Listens and answers.")


STT_LLM = ScriptedLLM(
    name="stt-pool-llm",
    rules=[
        Rule(when="refund", call="refund", args={"order_id": "7"}),
        Rule(when="hello", reply="Hi, {user}!"),
    ],
)
POLLING_STT = PollingSTT()

STT_POOL = AgentPool(
    agent_name="stt-pool", isolation="coroutine", llm=STT_LLM, stt=POLLING_STT, vad=None
)
STT_POOL.add("listener", ListenerAgent, default=True)
STT_POOL.add("enter-boom", EnterBoomAgent)
STT_POOL.add("tool-boom", ToolBoomAgent)
