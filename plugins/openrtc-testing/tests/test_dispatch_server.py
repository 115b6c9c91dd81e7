"""A real, unmodified livekit ``AgentServer`` driven by :class:`LoopbackDispatchServer`.

Entrypoints here never call ``ctx.connect()``: there is no SFU behind the loopback server.
Jobs run with ``JobExecutorType.THREAD`` (a thread with its own event loop, same process),
so the entrypoints record what they saw into plain lists the tests can read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from livekit import api
from livekit.agents import AgentServer, JobContext, JobExecutorType, JobRequest
from livekit.protocol import agent

from openrtc_testing import LoopbackDispatchServer

AGENT = "t"


class Worker:
    """One livekit ``AgentServer`` registered with the loopback server."""

    def __init__(
        self,
        lk: LoopbackDispatchServer,
        *,
        agent_name: str = AGENT,
        on_request: Callable[[JobRequest], Awaitable[None]] | None = None,
        api_secret: str | None = None,
        max_retry: int = 16,
    ) -> None:
        self.records: list[dict[str, Any]] = []
        self.shutdowns: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.server = AgentServer(
            ws_url=lk.url,
            api_key=lk.api_key,
            api_secret=api_secret or lk.api_secret,
            job_executor_type=JobExecutorType.THREAD,
            port=0,
            num_idle_processes=0,
            max_retry=max_retry,
        )
        self.task: asyncio.Task[None] | None = None
        self.server.rtc_session(self._entrypoint, agent_name=agent_name, on_request=on_request)

    async def _entrypoint(self, ctx: JobContext) -> None:
        # runs on the job thread's own event loop
        job = ctx.job
        claims = ctx.token_claims()
        with self._lock:
            self.records.append(
                {
                    "job_id": job.id,
                    "room": job.room.name,
                    "room_metadata": job.room.metadata,
                    "job_metadata": job.metadata,
                    "agent_name": job.agent_name,
                    "identity": claims.identity,
                    "attributes": dict(claims.attributes or {}),
                    "thread": threading.current_thread().name,
                }
            )
        mode = json.loads(job.metadata or "{}").get("mode", "shutdown")
        if mode == "linger":
            # stay alive until something shuts the job down (e.g. a termination)
            async def _on_shutdown(reason: str) -> None:
                with self._lock:
                    self.shutdowns.append((job.id, reason))

            ctx.add_shutdown_callback(_on_shutdown)
            return
        ctx.shutdown(reason="done")

    def start(self) -> None:
        self.task = asyncio.create_task(self.server.run(devmode=True))

    async def aclose(self) -> None:
        await self.server.aclose()
        if self.task is not None:
            await asyncio.wait_for(asyncio.gather(self.task, return_exceptions=True), 10)

    async def wait_for_record(self, job_id: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for rec in self.records:
                    if rec["job_id"] == job_id:
                        return rec
            await asyncio.sleep(0.01)
        raise TimeoutError(f"entrypoint never ran for {job_id}")


@pytest.fixture
async def lk() -> AsyncIterator[LoopbackDispatchServer]:
    async with LoopbackDispatchServer() as server:
        yield server


@pytest.fixture
async def workers(lk: LoopbackDispatchServer) -> AsyncIterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(**kwargs: Any) -> Worker:
        w = Worker(lk, **kwargs)
        w.start()
        started.append(w)
        return w

    yield start
    for w in reversed(started):
        await w.aclose()


async def eventually(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def metadata(**fields: str) -> str:
    return json.dumps(fields)


# --------------------------------------------------------------------------------------------


async def test_registration(lk: LoopbackDispatchServer, workers: Callable[..., Worker]) -> None:
    w = workers()
    conn = await lk.wait_for_worker(agent_name=AGENT, timeout=10)

    assert conn.worker_id.startswith("AW_")
    await eventually(lambda: w.server.id == conn.worker_id)  # the worker adopted our id
    assert conn.agent_name == AGENT
    assert conn.version  # livekit-agents' version string
    assert conn.job_type == agent.JT_ROOM
    assert conn.status == agent.WS_AVAILABLE
    assert lk.workers == [conn]
    assert lk.url.startswith("ws://127.0.0.1:")
    assert lk.port > 0


async def test_dispatch_runs_entrypoint_to_success(
    lk: LoopbackDispatchServer, workers: Callable[..., Worker]
) -> None:
    seen_requests: list[tuple[str, str, str]] = []

    async def on_request(req: JobRequest) -> None:
        seen_requests.append((req.room.name, req.job.metadata, req.agent_name))
        await req.accept(name="Support Bot", attributes={"tenant": "acme", "role": "support"})

    w = workers(on_request=on_request)
    conn = await lk.wait_for_worker(agent_name=AGENT, timeout=10)

    d = await lk.dispatch(
        "support-room",
        agent_name=AGENT,
        job_metadata=metadata(mode="shutdown", customer="c-1"),
        room_metadata='{"plan": "gold"}',
    )
    assert d.accepted, d.error
    assert d.job_id.startswith("AJ_")
    assert d.room_sid.startswith("RM_")
    assert d.worker_id == conn.worker_id
    assert d.job_id in conn.jobs
    assert d.rejected_by == []
    # attributes from req.accept(), plus the agent name livekit adds itself
    assert d.participant_attributes == {"tenant": "acme", "role": "support", "lk.agent.name": AGENT}
    assert d.participant_name == "Support Bot"
    assert d.participant_identity == f"agent-{d.job_id}"
    assert seen_requests == [("support-room", d.job.metadata, AGENT)]

    # the assignment carries a real room-join token for the identity the worker chose
    claims = api.TokenVerifier(lk.api_key, lk.api_secret).verify(d.token)
    assert claims.identity == d.participant_identity
    assert claims.kind == "agent"
    assert claims.video is not None
    assert claims.video.room == "support-room"
    assert claims.video.room_join
    assert claims.video.agent

    assert await d.wait_for_status(timeout=15) == agent.JS_SUCCESS
    assert d.statuses == [agent.JS_RUNNING, agent.JS_SUCCESS]

    rec = await w.wait_for_record(d.job_id)
    assert rec["room"] == "support-room"
    assert rec["room_metadata"] == '{"plan": "gold"}'
    assert json.loads(rec["job_metadata"]) == {"mode": "shutdown", "customer": "c-1"}
    assert rec["agent_name"] == AGENT
    assert rec["identity"] == d.participant_identity
    assert rec["attributes"]["tenant"] == "acme"
    assert rec["thread"] != threading.current_thread().name


async def test_reject_without_terminate_passes_job_on(
    lk: LoopbackDispatchServer, workers: Callable[..., Worker]
) -> None:
    async def always_reject(req: JobRequest) -> None:
        await req.reject(terminate=False)

    workers(on_request=always_reject)
    picky = await lk.wait_for_worker(agent_name=AGENT, timeout=10)
    workers()
    await lk.wait_for_worker(agent_name=AGENT, timeout=10)
    await eventually(lambda: len(lk.workers) == 2)
    willing = next(c for c in lk.workers if c is not picky)

    # round robin: across two dispatches the picky worker is asked first exactly once
    results = [await lk.dispatch(f"room-{i}", agent_name=AGENT) for i in range(2)]
    assert all(d.accepted and d.worker_id == willing.worker_id for d in results)
    assert sorted(d.rejected_by for d in results) == [[], [(picky.worker_id, False)]]
    assert not any(d.terminate for d in results)
    for d in results:
        await d.wait_for_status(timeout=15)


async def test_reject_with_terminate_stops_dispatch(
    lk: LoopbackDispatchServer, workers: Callable[..., Worker]
) -> None:
    async def reject_for_good(req: JobRequest) -> None:
        await req.reject(terminate=True)

    workers(on_request=reject_for_good)
    strict = await lk.wait_for_worker(agent_name=AGENT, timeout=10)
    workers()
    await eventually(lambda: len(lk.workers) == 2)
    willing = next(c for c in lk.workers if c is not strict)

    results = [await lk.dispatch(f"room-{i}", agent_name=AGENT) for i in range(2)]
    refused = [d for d in results if not d.accepted]
    taken = [d for d in results if d.accepted]
    # when the strict worker is asked first, the job is NOT offered to the willing one
    assert len(refused) == 1
    assert len(taken) == 1
    assert refused[0].terminate is True
    assert refused[0].rejected_by == [(strict.worker_id, True)]
    assert "terminate=True" in refused[0].error
    assert taken[0].worker_id == willing.worker_id
    assert taken[0].rejected_by == []
    with pytest.raises(RuntimeError, match="never assigned"):
        await refused[0].wait_for_status(timeout=1)
    await taken[0].wait_for_status(timeout=15)


async def test_no_eligible_worker(
    lk: LoopbackDispatchServer, workers: Callable[..., Worker]
) -> None:
    d = await lk.dispatch("lonely-room", agent_name=AGENT)
    assert not d.accepted
    assert "no available worker" in d.error

    workers()
    await lk.wait_for_worker(agent_name=AGENT, timeout=10)
    d = await lk.dispatch("room", agent_name="someone-else")
    assert not d.accepted
    assert "someone-else" in d.error
    with pytest.raises(TimeoutError, match="someone-else"):
        await lk.wait_for_worker(agent_name="someone-else", timeout=0.1)


async def test_slow_availability_answer_times_out(
    lk: LoopbackDispatchServer,
    workers: Callable[..., Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()
    answered = asyncio.Event()

    async def dawdle(req: JobRequest) -> None:
        await release.wait()  # answers only once the server gave up: no race with the timeout
        await req.reject(terminate=False)
        answered.set()

    workers(on_request=dawdle)
    conn = await lk.wait_for_worker(agent_name=AGENT, timeout=10)
    d = await lk.dispatch("room", agent_name=AGENT, timeout=0.2)
    assert not d.accepted
    assert "did not answer" in d.error
    assert d.rejected_by == []

    # the late answer is dropped without harm: logged, not recorded, the worker stays
    with caplog.at_level(logging.WARNING, logger="openrtc.testing.dispatch"):
        release.set()
        await asyncio.wait_for(answered.wait(), 30)
        await eventually(
            lambda: any(
                "not offered" in r.getMessage() and d.job_id in r.getMessage()
                for r in caplog.records
            )
        )
    assert not d.accepted
    assert d.rejected_by == []
    assert d.worker_id == ""
    assert d.statuses == []
    assert "did not answer" in d.error
    assert d.job_id not in conn.jobs
    assert lk.malformed_messages == 0
    assert lk.workers == [conn]
    assert not conn.closed
    assert conn.status == agent.WS_AVAILABLE


async def test_termination_ends_running_job(
    lk: LoopbackDispatchServer, workers: Callable[..., Worker]
) -> None:
    w = workers()
    await lk.wait_for_worker(agent_name=AGENT, timeout=10)
    d = await lk.dispatch("long-call", agent_name=AGENT, job_metadata=metadata(mode="linger"))
    assert d.accepted, d.error
    await d.wait_for_status(agent.JS_RUNNING, timeout=15)
    await w.wait_for_record(d.job_id)

    with pytest.raises(TimeoutError, match="JS_SUCCESS or JS_FAILED"):
        await d.wait_for_status(timeout=0.3)  # it really keeps running on its own

    await lk.terminate(d.job_id)
    assert await d.wait_for_status(timeout=15) == agent.JS_SUCCESS
    assert d.termination_requested
    assert [job_id for job_id, _ in w.shutdowns] == [d.job_id]

    with pytest.raises(KeyError):
        await lk.terminate("AJ_does_not_exist")


async def test_drain_reports_full_and_waits_for_jobs(
    lk: LoopbackDispatchServer, workers: Callable[..., Worker]
) -> None:
    w = workers()
    conn = await lk.wait_for_worker(agent_name=AGENT, timeout=10)
    d = await lk.dispatch("draining", agent_name=AGENT, job_metadata=metadata(mode="linger"))
    await d.wait_for_status(agent.JS_RUNNING, timeout=15)

    drain = asyncio.create_task(w.server.drain())
    await conn.wait_for_status(agent.WS_FULL, timeout=30)
    assert conn.status_history == [agent.WS_AVAILABLE, agent.WS_FULL]
    assert not drain.done()  # drain waits for the running job

    refused = await lk.dispatch("too-late", agent_name=AGENT)
    assert not refused.accepted  # a full worker is not offered jobs

    await lk.terminate(d.job_id)
    await asyncio.wait_for(drain, 15)
    assert await d.wait_for_status(timeout=30) == agent.JS_SUCCESS


async def test_bad_tokens_are_refused(
    lk: LoopbackDispatchServer, workers: Callable[..., Worker]
) -> None:
    async with aiohttp.ClientSession() as http:
        forged = (
            api.AccessToken(lk.api_key, "another-secret-that-is-long-enough-123")
            .with_grants(api.VideoGrants(agent=True))
            .to_jwt()
        )
        no_agent_grant = (
            api.AccessToken(lk.api_key, lk.api_secret)
            .with_grants(api.VideoGrants(room_join=True, room="r"))
            .with_identity("user")
            .to_jwt()
        )
        for headers in (
            {},
            {"Authorization": "Bearer not-a-jwt"},
            {"Authorization": f"Bearer {forged}"},
            {"Authorization": f"Bearer {no_agent_grant}"},
            {"Authorization": f"Basic {lk.worker_token()}"},
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(lk.url + "/agent", headers=headers)
            assert info.value.status == 401
    assert lk.rejected_connections == 5

    # a real AgentServer with the wrong secret cannot register either
    w = workers(api_secret="wrong-secret-wrong-secret-wrong-secret", max_retry=0)
    assert w.task is not None
    with pytest.raises(RuntimeError, match="failed to connect to livekit"):
        await asyncio.wait_for(w.task, 10)
    assert lk.workers == []
    assert lk.rejected_connections == 6


async def test_reports_endpoint(lk: LoopbackDispatchServer) -> None:
    waiter = asyncio.create_task(lk.wait_for_report("AJ_1", timeout=5))
    report = {"job_id": "AJ_1", "transcript": [{"role": "user", "text": "hi"}], "ok": True}
    async with aiohttp.ClientSession() as http:
        async with http.get(lk.http_url + "/openrtc/health") as resp:
            assert resp.status == 200
            assert await resp.text() == "ok"

        async with http.post(lk.report_url, json=report) as resp:
            assert resp.status == 200
            assert (await resp.json())["job_id"] == "AJ_1"

        for body, problem in (
            (b"{not json", "JSON object"),
            (b'["AJ_1"]', "JSON object"),
            (b'{"transcript": []}', "job_id"),
            (b'{"job_id": 7}', "job_id"),
        ):
            async with http.post(
                lk.report_url, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                assert resp.status == 400
                assert problem in (await resp.json())["error"]

    assert await waiter == report
    assert lk.reports == {"AJ_1": report}
    assert await lk.wait_for_report("AJ_1", timeout=0.1) == report
    with pytest.raises(TimeoutError, match="AJ_2"):
        await lk.wait_for_report("AJ_2", timeout=0.1)


async def test_malformed_frames_do_not_crash(
    lk: LoopbackDispatchServer, workers: Callable[..., Worker]
) -> None:
    headers = {"Authorization": f"Bearer {lk.worker_token()}"}
    async with aiohttp.ClientSession() as http:
        # a connection whose first binary frame is not `register` is closed
        ws = await http.ws_connect(lk.url + "/agent", headers=headers)
        await ws.send_str("hello?")  # text frames are ignored
        await ws.send_bytes(b"\xff\x00garbage")
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1002
        await ws.close()
        assert lk.workers == []

        # a registered raw client sends junk, then a ping: the connection survives
        ws = await http.ws_connect(lk.url + "/agent", headers=headers)
        reg = agent.WorkerMessage(register=agent.RegisterWorkerRequest(agent_name="raw"))
        await ws.send_bytes(reg.SerializeToString())
        first = agent.ServerMessage()
        first.ParseFromString(await ws.receive_bytes(timeout=5))
        assert first.register.worker_id.startswith("AW_")
        assert first.register.server_info.region == "loopback"

        before = lk.malformed_messages
        for junk in (
            b"\xff\xff\xff\xff",
            agent.WorkerMessage().SerializeToString(),  # no message set
            agent.WorkerMessage(register=agent.RegisterWorkerRequest()).SerializeToString(),
            agent.WorkerMessage(
                availability=agent.AvailabilityResponse(job_id="AJ_unknown", available=True)
            ).SerializeToString(),
            agent.WorkerMessage(
                update_job=agent.UpdateJobStatus(job_id="AJ_unknown", status=agent.JS_RUNNING)
            ).SerializeToString(),
            agent.WorkerMessage(
                migrate_job=agent.MigrateJobRequest(job_ids=["AJ_unknown"])
            ).SerializeToString(),
            agent.WorkerMessage(simulate_job=agent.SimulateJobRequest()).SerializeToString(),
        ):
            await ws.send_bytes(junk)
        await ws.send_str("not protobuf")
        await ws.send_bytes(
            agent.WorkerMessage(ping=agent.WorkerPing(timestamp=1234)).SerializeToString()
        )
        pong = agent.ServerMessage()
        pong.ParseFromString(await ws.receive_bytes(timeout=5))
        assert pong.pong.last_timestamp == 1234
        assert pong.pong.timestamp > 0
        # undecodable, empty, repeated register, text frame; unknown job ids only warn
        assert lk.malformed_messages == before + 4
        raw = await lk.wait_for_worker(agent_name="raw", timeout=1)
        assert not raw.closed

        # and the server still dispatches to a real worker
        workers()
        await lk.wait_for_worker(agent_name=AGENT, timeout=10)
        d = await lk.dispatch("after-junk", agent_name=AGENT)
        assert d.accepted, d.error
        await d.wait_for_status(timeout=15)

        await ws.close()
        await raw.wait_closed(timeout=5)
        assert raw not in lk.workers


async def test_worker_disconnect_is_clean(
    lk: LoopbackDispatchServer, workers: Callable[..., Worker]
) -> None:
    w = workers()
    conn = await lk.wait_for_worker(agent_name=AGENT, timeout=10)
    await w.aclose()
    await conn.wait_closed(timeout=30)
    assert conn.closed
    assert lk.workers == []
    d = await lk.dispatch("room", agent_name=AGENT)
    assert not d.accepted
