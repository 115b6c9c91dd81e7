"""Run a pool's real worker against a loopback dispatch server, inside a test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from livekit.agents import AgentServer

from openrtc_core import AgentPool

from .caller import SIMULATE_KEY
from .dispatch import Dispatch, LoopbackDispatchServer
from .simulation import Simulation

Pause = float | tuple[float, float]
"""Seconds a simulated caller waits before each line, or a (low, high) range."""


def simulated_call_metadata(
    agent: str | None = None,
    *,
    turns: Sequence[str] = (),
    hold_s: float = 0.0,
    pause_s: Pause = 0.0,
    extra: Mapping[str, Any] | None = None,
    voice: bool = False,
    sample_rate: int | None = None,
    barge_in: Sequence[int] = (),
) -> str:
    """Job metadata for a simulated call: ``{"agent": ..., "openrtc.simulate": {...}}``.

    `pause_s` paces the caller: seconds before each line, or a ``(low, high)`` range to draw
    from uniformly. `voice` makes the caller speak its lines as audio (at `sample_rate`),
    starting the lines in `barge_in` while the agent still speaks.
    """
    meta: dict[str, Any] = dict(extra or {})
    if agent is not None:
        meta["agent"] = agent
    script: dict[str, Any] = {"turns": list(turns), "hold_s": hold_s}
    if pause_s:
        script["pause_s"] = list(pause_s) if isinstance(pause_s, tuple) else pause_s
    if voice:
        script["voice"] = True
    if sample_rate is not None:
        script["sample_rate"] = sample_rate
    if barge_in:
        script["barge_in"] = list(barge_in)
    meta[SIMULATE_KEY] = script
    return json.dumps(meta)


@contextlib.asynccontextmanager
async def running_worker(
    pool: AgentPool,
    dispatch: LoopbackDispatchServer,
    *,
    simulate: bool = True,
    register_timeout: float = 60,
    **server_kwargs: Any,
) -> AsyncIterator[AgentServer]:
    """Start the pool's ``AgentServer`` against `dispatch` and wait until it registered.

    The worker runs in dev mode on an ephemeral health port. On exit it is closed, and an
    exception from its run task (a failed start) is raised here rather than lost.
    """
    options: dict[str, Any] = {
        "ws_url": dispatch.url,
        "api_key": dispatch.api_key,
        "api_secret": dispatch.api_secret,
        "port": 0,
        **server_kwargs,
    }
    plugins = [Simulation(dispatch.url)] if simulate else []
    server = pool.create_server(plugins=plugins, **options)
    task = asyncio.create_task(server.run(devmode=True), name="openrtc-test-worker")
    try:
        waiter = asyncio.create_task(
            dispatch.wait_for_worker(agent_name=pool.settings.agent_name, timeout=register_timeout)
        )
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            waiter.cancel()
            task.result()
            raise RuntimeError("the worker stopped before it registered")
        waiter.result()
        yield server
    finally:
        await server.aclose()
        with contextlib.suppress(asyncio.CancelledError):
            await task


REDISPATCH_FOR_S = 30.0
REDISPATCH_DELAY_S = 0.25


async def dispatch_until_accepted(
    dispatch: LoopbackDispatchServer,
    room: str,
    *,
    job_metadata: str,
    agent_name: str = "",
    room_metadata: str = "",
    retry_for_s: float = REDISPATCH_FOR_S,
) -> Dispatch:
    """Dispatch, offering the job again while workers say "not now", like LiveKit does.

    A worker that is full or momentarily loaded rejects with ``terminate=False`` (or reports
    itself full, so none is available); LiveKit's dispatcher keeps the job and tries again.
    Stops at the first acceptance, a ``terminate=True`` rejection, or after `retry_for_s`.
    """
    deadline = time.monotonic() + retry_for_s
    refused = unavailable = 0
    while True:
        d = await dispatch.dispatch(
            room, agent_name=agent_name, job_metadata=job_metadata, room_metadata=room_metadata
        )
        d.offers, d.refused, d.unavailable = 1 + refused + unavailable, refused, unavailable
        if d.accepted or d.terminate or time.monotonic() > deadline:
            return d
        if d.rejected_by:
            refused += 1
        else:
            unavailable += 1
        await asyncio.sleep(REDISPATCH_DELAY_S)


async def simulate_call(
    dispatch: LoopbackDispatchServer,
    room: str,
    *,
    agent: str | None = None,
    turns: Sequence[str] = (),
    hold_s: float = 0.0,
    pause_s: Pause = 0.0,
    agent_name: str = "",
    room_metadata: str = "",
    timeout: float = 60,
) -> tuple[Dispatch, dict[str, Any]]:
    """Dispatch one simulated call and wait for its report."""
    d = await dispatch_until_accepted(
        dispatch,
        room,
        agent_name=agent_name,
        job_metadata=simulated_call_metadata(agent, turns=turns, hold_s=hold_s, pause_s=pause_s),
        room_metadata=room_metadata,
    )
    if not d.accepted:
        raise AssertionError(f"the simulated call in {room!r} was not accepted: {d.error}")
    report = await dispatch.wait_for_report(d.job_id, timeout=timeout)
    return d, report
