"""Fleet-wide caps through real worker processes sharing one real Redis.

Each worker is its own OS process (fleet_worker.py): a production OpenRTC worker with
coroutine isolation and the Simulation plugin, registered with this test's loopback dispatch
server. Only the workers and Redis count the slots; the test reads Redis to watch them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from livekit.protocol import agent
from redis_server import PrivateRedis

from openrtc_tenancy.counting import FleetSlots
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.dispatch import Dispatch
from openrtc_testing.fleet import Fleet, started_fleet
from openrtc_testing.worker import dispatch_until_accepted, simulated_call_metadata

WORKER_SCRIPT = Path(__file__).with_name("fleet_worker.py")
REDIS_URL_ENV = "OPENRTC_FLEET_TEST_REDIS_URL"
RELEASE_WITHIN_S = 2.0
"""A closed job's slot goes back to Redis as the job closes; allow this long for it."""


def tenants_file(tmp_path: Path, text: str) -> str:
    """The fleet's tenants file; Redis is named by REDIS_URL_ENV (its URL may hold a password)."""
    path = tmp_path / "tenants.toml"
    path.write_text(f'redis_url_env = "{REDIS_URL_ENV}"\n' + textwrap.dedent(text))
    return str(path)


def acme_call(hold_s: float) -> str:
    return simulated_call_metadata("support", turns=["hi"], hold_s=hold_s, extra={"tenant": "acme"})


def worker_command(dispatch: LoopbackDispatchServer, tenants: str) -> list[str]:
    return [
        sys.executable,
        str(WORKER_SCRIPT),
        *dispatch.worker_args(),
        "--tenants",
        tenants,
    ]


@contextlib.asynccontextmanager
async def fleet(
    dispatch: LoopbackDispatchServer, tenants: str, redis_url: str, logs: Path, count: int
) -> AsyncIterator[Fleet]:
    """`count` worker processes (logs ``worker-N.log``), each registered; killed at the end."""
    env = {"OPENRTC_TENANTS": None, REDIS_URL_ENV: redis_url}
    async with started_fleet(dispatch, logs, env=env) as workers:
        for _ in range(count):
            await workers.start(*worker_command(dispatch, tenants), cwd=WORKER_SCRIPT.parent)
        await workers.registered()
        yield workers


async def long_calls(dispatch: LoopbackDispatchServer, count: int, hold_s: float) -> list[Dispatch]:
    """`count` calls of acme, one after the other, each accepted and held `hold_s` seconds."""
    calls = [
        await dispatch_until_accepted(
            dispatch, f"acme-long-{i}", job_metadata=acme_call(hold_s=hold_s)
        )
        for i in range(count)
    ]
    assert all(d.accepted for d in calls), calls
    return calls


async def until_live(slots: FleetSlots, wanted: int, within_s: float) -> int:
    """Poll the tenant's live leases until there are `wanted` or `within_s` passed."""
    deadline = time.monotonic() + within_s
    live = await slots.live("acme")
    while live != wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        live = await slots.live("acme")
    return live


async def test_three_worker_processes_never_exceed_the_fleet_cap_together(
    tmp_path: Path,
    redis_url: str,
    redis_client: aioredis.Redis,
    openrtc_dispatch: LoopbackDispatchServer,
) -> None:
    path = tenants_file(
        tmp_path,
        """
        [tenants.acme]
        fleet_max_sessions = 10
        """,
    )
    slots = FleetSlots(redis_client)
    samples: list[tuple[int, int]] = []
    """(live leases in Redis, burst jobs accepted whose end the dispatch server has not seen)."""
    earlier: set[str] = set()

    def running() -> int:
        ended = (agent.JS_SUCCESS, agent.JS_FAILED)
        return sum(
            1
            for job_id, d in list(openrtc_dispatch.dispatches.items())
            if job_id not in earlier and d.accepted and d.status not in ended
        )

    stop = asyncio.Event()

    async def watch() -> None:
        # Stopped by `stop`, not cancelled: redis-py can swallow a cancellation that lands
        # during a command, and the task would then never end.
        while not stop.is_set():
            samples.append((await slots.live("acme"), running()))
            await asyncio.sleep(0.01)

    async with fleet(openrtc_dispatch, path, redis_url, tmp_path, 3) as workers:
        worker_ids = {w.worker_id for w in openrtc_dispatch.workers}
        # One short call per worker first (offers go round-robin), so each has its Redis
        # connection and scripts ready: the burst's claims then race across processes.
        warm = [
            await dispatch_until_accepted(
                openrtc_dispatch, f"acme-warm-{i}", job_metadata=acme_call(hold_s=0)
            )
            for i in range(3)
        ]
        for d in warm:
            await openrtc_dispatch.wait_for_report(d.job_id, timeout=30)
        live_after_warm_up = await until_live(slots, 0, RELEASE_WITHIN_S)
        earlier.update(openrtc_dispatch.dispatches)
        watcher = asyncio.create_task(watch())
        try:
            # A job every worker passed on with terminate=False (each at its load threshold, on
            # a busy CPU) is offered again, as LiveKit's dispatcher does.
            burst: list[Dispatch] = await asyncio.gather(
                *(
                    dispatch_until_accepted(
                        openrtc_dispatch, f"acme-{i}", job_metadata=acme_call(hold_s=3)
                    )
                    for i in range(50)
                )
            )
            live_after_burst = await slots.live("acme")
            accepted = [d for d in burst if d.accepted]
            reports = [
                await openrtc_dispatch.wait_for_report(d.job_id, timeout=30) for d in accepted
            ]
        finally:
            stop.set()
            await watcher
        live_after_calls = await until_live(slots, 0, RELEASE_WITHIN_S)
        again = await dispatch_until_accepted(
            openrtc_dispatch, "acme-again", job_metadata=acme_call(hold_s=0)
        )
        again_report = await openrtc_dispatch.wait_for_report(again.job_id, timeout=30)
        assert all(p.returncode is None for p in workers.processes), workers.tails()

    assert all(d.accepted for d in warm) and live_after_warm_up == 0, warm
    refused = [d for d in burst if not d.accepted]
    assert len(accepted) == 10, f"{len(accepted)} accepted: {burst}"
    assert len(refused) == 40
    # A full fleet ends the dispatch (terminate=True): no worker has room for the tenant. Before
    # that, a worker whose load was at its threshold (a busy CPU) may have passed the job on
    # with terminate=False, as livekit's workers do by themselves (tenancy never does here).
    odd = [
        (d.room, d.rejected_by, d.error)
        for d in refused
        if not d.terminate or not d.rejected_by[-1][1] or any(t for _, t in d.rejected_by[:-1])
    ]
    assert not odd, odd
    logs = [(tmp_path / f"worker-{n}.log").read_text(errors="replace") for n in range(3)]
    assert sum(text.count("is at fleet_max_sessions=10") for text in logs) == 40
    # Separate processes decided: the cap held across them, not inside one.
    deciders = {d.worker_id for d in accepted} | {d.rejected_by[-1][0] for d in refused}
    assert len(deciders) >= 2 and deciders <= worker_ids, (deciders, worker_ids)
    assert live_after_burst == 10
    assert samples, "the watcher took no sample"
    most_live = max(live for live, _ in samples)
    most_running = max(jobs for _, jobs in samples)
    assert most_live <= 10 and most_running <= 10, (most_live, most_running)
    assert most_live == 10  # the holds overlapped: the cap was reached, not merely respected
    assert all(r["outcome"] == "completed" and r["tenant"] == "acme" for r in reports), reports
    assert live_after_calls == 0
    assert again.accepted and again_report["outcome"] == "completed"


async def test_a_killed_worker_keeps_its_slots_until_their_leases_run_out(
    tmp_path: Path,
    redis_url: str,
    redis_client: aioredis.Redis,
    openrtc_dispatch: LoopbackDispatchServer,
) -> None:
    lease_s = 2.0
    path = tenants_file(
        tmp_path,
        f"""
        lease_s = {lease_s}
        [tenants.acme]
        fleet_max_sessions = 10
        """,
    )
    slots = FleetSlots(redis_client)
    async with fleet(openrtc_dispatch, path, redis_url, tmp_path, 1) as workers:
        await long_calls(openrtc_dispatch, 3, hold_s=30)
        assert await slots.live("acme") == 3
        # The live worker renews its leases: they outlast lease_s.
        await asyncio.sleep(lease_s + 0.5)
        live_before_kill = await slots.live("acme")

        (process,) = workers.processes
        os.kill(process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        await asyncio.wait_for(process.wait(), 10)
        await asyncio.sleep(max(0.0, killed_at + 0.5 - time.monotonic()))
        live_after_kill = await slots.live("acme")
        live_later = await until_live(slots, 0, killed_at + lease_s + 1.5 - time.monotonic())
        freed_after_s = time.monotonic() - killed_at

    assert live_before_kill == 3
    # Nobody released them: the dead worker's slots still count ...
    assert live_after_kill == 3
    # ... until their leases, no longer renewed, run out.
    assert live_later == 0, f"still {live_later} live {freed_after_s:.2f} s after the kill"


def worker_logs(workers: Fleet) -> list[str]:
    return [workers.output(n) for n in range(len(workers.processes))]


async def until_logged(workers: Fleet, text: str, within_s: float) -> list[int]:
    """Poll the workers' logs until each has `text` or `within_s` passed: how often each has it."""
    deadline = time.monotonic() + within_s
    counts = [log.count(text) for log in worker_logs(workers)]
    while not all(counts) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        counts = [log.count(text) for log in worker_logs(workers)]
    return counts


OVER_CAP = "calls live across the fleet against fleet_max_sessions=4"


@pytest.mark.parametrize("fault", ["restart", "outage"])
async def test_live_calls_take_back_the_leases_redis_lost(
    fault: str,
    tmp_path: Path,
    private_redis: PrivateRedis,
    openrtc_dispatch: LoopbackDispatchServer,
) -> None:
    """Redis restarted without its data, or frozen for longer than lease_s: the workers' live
    calls count again at their next renewal, and new calls beyond the cap are refused."""
    lease_s = 1.5
    path = tenants_file(
        tmp_path,
        f"""
        lease_s = {lease_s}
        [tenants.acme]
        fleet_max_sessions = 4
        """,
    )
    slots = FleetSlots.from_url(private_redis.url, lease_s=60)
    try:
        async with fleet(openrtc_dispatch, path, private_redis.url, tmp_path, 2) as workers:
            calls = await long_calls(openrtc_dispatch, 4, hold_s=120)
            assert {d.worker_id for d in calls} == {w.worker_id for w in openrtc_dispatch.workers}
            assert await slots.live("acme") == 4
            during: Dispatch | None = None
            if fault == "restart":
                private_redis.restart()
            else:
                private_redis.pause()
                paused_at = time.monotonic()
                # Offered while Redis does not answer: refused, never admitted uncounted.
                during = await openrtc_dispatch.dispatch(
                    "acme-during-outage", job_metadata=acme_call(hold_s=0)
                )
                await asyncio.sleep(max(0.0, paused_at + lease_s + 0.5 - time.monotonic()))
                private_redis.resume()
            # Before the workers' next renewal, another worker admits two calls against the
            # empty count (the test takes their slots as that worker would).
            for name in ("meanwhile-1", "meanwhile-2"):
                assert await slots.take("acme", name, None)
            # Each worker renews its two calls within lease_s / 3, taking their leases back.
            live_after_renewal = await until_live(slots, 6, within_s=10 * lease_s)
            over_cap_said = await until_logged(workers, OVER_CAP, within_s=10 * lease_s)
            refused = await openrtc_dispatch.dispatch(
                "acme-over-cap", job_metadata=acme_call(hold_s=0)
            )
            # The two calls of the window end: back within the cap, said once as well.
            for name in ("meanwhile-1", "meanwhile-2"):
                await slots.release("acme", name)
            back_said = await until_logged(workers, "back within", within_s=10 * lease_s)
            at_cap = await openrtc_dispatch.dispatch(
                "acme-at-cap", job_metadata=acme_call(hold_s=0)
            )
            live_at_end = await slots.live("acme")
            logs = worker_logs(workers)
            assert all(p.returncode is None for p in workers.processes), workers.tails()
    finally:
        await slots.aclose()

    if fault == "restart":
        # Each worker's two leases were gone, and came back. (After an outage, the renewals
        # Redis held unanswered may have taken them back as it woke, their replies lost.)
        assert sum(log.count("took back the slot leases of 2 live call(s)") for log in logs) == 2
    assert live_after_renewal == 6, logs
    assert over_cap_said == [1, 1], logs
    assert back_said == [1, 1], logs
    assert not refused.accepted and refused.terminate, refused.rejected_by
    assert not at_cap.accepted and at_cap.terminate
    assert live_at_end == 4
    assert sum(log.count("is at fleet_max_sessions=4") for log in logs) == 2
    if during is not None:
        # Fail closed: each worker refused it for another, none admitted it.
        assert not during.accepted and not during.terminate, during.rejected_by
        assert len(during.rejected_by) == 2


async def test_a_breaker_opened_on_one_worker_refuses_the_tenant_on_every_worker(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    redis_client: aioredis.Redis,
    openrtc_dispatch: LoopbackDispatchServer,
) -> None:
    monkeypatch.setenv("FLEET_ACME_KEY", "sk-fleet-acme-0123456789")
    path = tenants_file(
        tmp_path,
        """
        [tenants.acme.providers.llm]
        class = "tenancy_fixtures:KeyedLLM"
        api_key_env = "FLEET_ACME_KEY"
        fail = true
        [tenants.acme.breaker]
        window_s = 120
        min_calls = 3
        failure_ratio = 0.5
        cooldown_s = 120
        [tenants.globex]
        """,
    )
    key = "openrtc:tenancy:breaker:acme"
    async with fleet(openrtc_dispatch, path, redis_url, tmp_path, 2) as workers:
        failed: list[Dispatch] = []
        # Offers go round-robin: the failures spread over both workers until one of them has
        # counted enough to open the tenant's breaker.
        while not await redis_client.exists(key) and len(failed) < 20:
            d = await dispatch_until_accepted(
                openrtc_dispatch, f"acme-{len(failed)}", job_metadata=acme_call(hold_s=0)
            )
            if not d.accepted:
                break
            failed.append(d)
            await openrtc_dispatch.wait_for_report(d.job_id, timeout=30)
            # The worker counts the call for its breaker as the job closes, just after: give
            # it time, or the next call would go on to fail on a worker whose breaker is
            # about to open anyway.
            await until_key(redis_client, key, within_s=2.0)
        opened = await until_key(redis_client, key, within_s=10)
        refused = [
            await openrtc_dispatch.dispatch(f"acme-refused-{i}", job_metadata=acme_call(hold_s=0))
            for i in range(4)
        ]
        other = await dispatch_until_accepted(
            openrtc_dispatch,
            "globex-0",
            job_metadata=simulated_call_metadata(
                "support", turns=["hi"], extra={"tenant": "globex"}
            ),
        )
        other_report = await openrtc_dispatch.wait_for_report(other.job_id, timeout=30)
        logs = worker_logs(workers)

    assert opened, logs
    assert 3 <= len(failed) <= 6, failed
    openers = [n for n, log in enumerate(logs) if "breaker closed -> open" in log]
    assert len(openers) == 1, logs
    (bystander,) = {0, 1} - set(openers)
    # Every refusal ends the dispatch: no worker is offered a call another has refused.
    assert all(not d.accepted and d.terminate and len(d.rejected_by) == 1 for d in refused)
    deciders = {d.rejected_by[0][0] for d in refused}
    assert len(deciders) == 2, refused
    # The worker that never saw the failures refused them, naming the breaker and the tenant.
    assert logs[bystander].count("'acme': its breaker is open across the fleet") >= 1
    assert "opened by worker" in logs[bystander]
    assert other.accepted and other_report["outcome"] == "completed"


async def until_key(client: aioredis.Redis, key: str, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while not await client.exists(key):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True
