"""Nothing of an ended job outlives it: a network STT's stream ends with its job.

livekit's AgentSession starts its STT pipeline (``_STTPipeline._stt_pump``) as soon as the
session starts, room or not. A failed job's stream must not keep polling its provider, nor
hit the job's closed HTTP session afterwards (``Error in _stt_pump: Session is closed``).
Calls run through the real worker and the loopback dispatch server, under coroutine isolation,
with :class:`stt_pools.PollingSTT` talking to a loopback HTTP server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence

import pytest
import pytest_asyncio
from livekit.protocol import agent as agent_pb
from stt_pools import POLLING_STT, STT_POOL, PollServer

from openrtc_core.isolation.coroutine.watchdog import tasks_of
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.offline import REAL_PROVIDERS_ENV
from openrtc_testing.worker import dispatch_until_accepted, running_worker, simulate_call

pytestmark = pytest.mark.asyncio(loop_scope="module")

DONE = (agent_pb.JS_SUCCESS, agent_pb.JS_FAILED)
AGENT_NAME = STT_POOL.settings.agent_name
WINDOW_S = 4.0
"""How long after the job ended nothing of it may still act."""
CANCEL_GRACE_S = 0.5
"""Time for tasks cancelled as the job ended to finish unwinding."""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env() -> AsyncIterator[tuple[LoopbackDispatchServer, PollServer]]:
    with pytest.MonkeyPatch.context() as mp:
        # Keep the pool's own STT in simulated calls (it is a loopback one, needing no key).
        mp.setenv(REAL_PROVIDERS_ENV, "1")
        async with (
            PollServer() as polls,
            LoopbackDispatchServer() as lk,
            running_worker(STT_POOL, lk, shutdown_process_timeout=2.0),
        ):
            POLLING_STT.url = polls.url
            yield lk, polls


def _stt_errors(records: Sequence[logging.LogRecord]) -> list[str]:
    found = []
    for r in records:
        if r.levelno < logging.WARNING:
            continue
        text = r.getMessage()
        if r.exc_info and r.exc_info[1] is not None:
            text += f" [{type(r.exc_info[1]).__name__}: {r.exc_info[1]}]"
        # The pump's error, or its stream retrying on the job's closed HTTP session.
        if any(s in text for s in ("_stt_pump", "Session is closed", "failed to recognize")):
            found.append(f"{r.name} at {r.created:.3f}: {text}")
    return found


async def _call_and_watch(
    env: tuple[LoopbackDispatchServer, PollServer],
    caplog: pytest.LogCaptureFixture,
    *,
    room: str,
    agent: str,
    turns: Sequence[str] | None,
) -> None:
    """Run one call that fails, then watch its job for WINDOW_S seconds after it ended.

    `turns` None: a real (not simulated) job, which joins its room; with no media server
    behind the loopback dispatch server the join fails after the session started its STT.
    """
    lk, polls = env
    with caplog.at_level(logging.WARNING):
        if turns is None:
            d = await dispatch_until_accepted(
                lk, room, agent_name=AGENT_NAME, job_metadata=json.dumps({"agent": agent})
            )
            assert d.accepted, d.error
            outcome = "(no report: not simulated)"
        else:
            d, report = await simulate_call(
                lk, room, agent=agent, turns=turns, agent_name=AGENT_NAME
            )
            outcome = f"report {report['outcome']}: {report['error']!r}"
            assert report["outcome"] == "failed", outcome
        status = await d.wait_for_status(*DONE, timeout=30)
        ended, ended_wall = time.monotonic(), time.time()
        job_id = d.job_id
        pending_at_end = sorted(t.get_name() for t in tasks_of(job_id) if not t.done())

        await asyncio.sleep(CANCEL_GRACE_S)
        pending = [t for t in tasks_of(job_id) if not t.done()]
        pending_names = sorted(t.get_name() for t in pending)
        await asyncio.sleep(WINDOW_S - CANCEL_GRACE_S)
        for task in pending:  # don't leave them to the next test
            task.cancel()

    errors = _stt_errors(caplog.records)
    requests = polls.requests_of(job_id)
    after_end = [r for r in requests if r.started > ended]
    unfinished = [r for r in requests if r.ended is None]
    open_conns = polls.open_connections(job_id)
    context = (
        f"job {job_id} ({agent}) ended at {ended_wall:.3f} with status {status}; {outcome}; "
        f"tasks pending as it ended: {pending_at_end}"
    )

    assert status == agent_pb.JS_FAILED, context
    # The STT was really streaming during the call, else nothing here would be tested.
    assert requests, f"the STT never reached its server; {context}"
    problems = []
    # (a) no task of the job outlives it
    if pending_names:
        problems.append(f"tasks still pending {CANCEL_GRACE_S} s after: {pending_names}")
    # (b) no STT error from a pump that outlived the job (and its HTTP session)
    if errors:
        problems.append(f"STT errors logged: {errors}")
    # (c) the provider saw the stream end with the job
    if after_end:
        problems.append(
            f"{len(after_end)} STT request(s) reached the server after the job ended "
            f"(first +{after_end[0].started - ended:.2f} s)"
        )
    if unfinished:
        problems.append(f"{len(unfinished)} STT request(s) still held open")
    if open_conns:
        problems.append(f"{open_conns} STT connection(s) still open")
    assert not problems, "something of the job outlived it:\n" + "\n".join([*problems, context])


async def test_stt_stream_ends_with_a_job_that_fails_at_start(
    env: tuple[LoopbackDispatchServer, PollServer], caplog: pytest.LogCaptureFixture
) -> None:
    await _call_and_watch(
        env,
        caplog,
        room="stt-enter-boom-1",
        agent="enter-boom",
        turns=["hello"],
    )


async def test_stt_stream_ends_with_a_job_that_fails_mid_call(
    env: tuple[LoopbackDispatchServer, PollServer], caplog: pytest.LogCaptureFixture
) -> None:
    await _call_and_watch(
        env,
        caplog,
        room="stt-tool-boom-1",
        agent="tool-boom",
        turns=["hello", "refund please", "more"],
    )


async def test_stt_stream_ends_with_a_job_that_fails_to_join_its_room(
    env: tuple[LoopbackDispatchServer, PollServer], caplog: pytest.LogCaptureFixture
) -> None:
    # The session starts its STT before the room is joined; the join then fails, so
    # session.start() raises and the session never counts as started: livekit's
    # AgentSession.aclose() at job shutdown does nothing, and the stream is still polling
    # when livekit closes the job's HTTP session.
    await _call_and_watch(env, caplog, room="stt-no-room-1", agent="listener", turns=None)
