"""Exact per-tenant session caps, in one process and across workers, against a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from openrtc_tenancy import counting
from openrtc_tenancy.counting import FleetSlots, LocalSlots, Renewal

TENANT = "acme"
OTHER = "globex"


# --- LocalSlots ---------------------------------------------------------------------------------


def test_local_counts_exactly_to_the_cap() -> None:
    slots = LocalSlots()
    taken = [slots.take(TENANT, f"job-{n}", 3) for n in range(5)]
    assert taken == [True, True, True, False, False]
    assert slots.live(TENANT) == 3
    assert slots.take(OTHER, "job-other", 1)
    assert slots.live(OTHER) == 1
    assert slots.held() == {
        "job-0": TENANT,
        "job-1": TENANT,
        "job-2": TENANT,
        "job-other": OTHER,
    }


def test_local_take_and_release_are_idempotent() -> None:
    slots = LocalSlots()
    assert slots.take(TENANT, "job-1", 1)
    assert slots.take(TENANT, "job-1", 1)  # the same job again: still one slot
    assert slots.live(TENANT) == 1
    assert not slots.take(TENANT, "job-2", 1)
    assert slots.release("job-1") == TENANT
    assert slots.release("job-1") is None
    assert slots.release("never-taken") is None
    assert slots.live(TENANT) == 0
    assert slots.held() == {}
    assert slots.take(TENANT, "job-2", 1)


def test_local_unlimited_still_counts_and_zero_refuses() -> None:
    slots = LocalSlots()
    assert all(slots.take(TENANT, f"job-{n}", None) for n in range(20))
    assert slots.live(TENANT) == 20
    assert not slots.take(TENANT, "job-20", 20)
    assert slots.take(TENANT, "job-20", 21)
    assert not slots.take(OTHER, "job-x", 0)
    assert slots.live(OTHER) == 0


def test_local_held_is_a_copy() -> None:
    slots = LocalSlots()
    slots.take(TENANT, "job-1", None)
    slots.held().clear()
    assert slots.held() == {"job-1": TENANT}


def test_local_refuses_a_job_id_of_another_tenant_and_a_negative_cap() -> None:
    slots = LocalSlots()
    slots.take(TENANT, "job-1", None)
    with pytest.raises(ValueError, match="already holds a slot of tenant 'acme'"):
        slots.take(OTHER, "job-1", None)
    with pytest.raises(ValueError, match="cap must be"):
        slots.take(TENANT, "job-2", -1)
    assert slots.live(OTHER) == 0


# --- FleetSlots ---------------------------------------------------------------------------------


async def poll(check: Callable[[], Awaitable[bool]], *, within: float) -> None:
    """Await ``check()`` every 50 ms until it is true or ``within`` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        if await check() or time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.05)


async def server_ms(client: aioredis.Redis) -> int:
    seconds, micros = await client.time()
    return seconds * 1000 + micros // 1000


async def test_fifty_simultaneous_takes_on_one_client_get_exactly_the_cap(
    redis_client: aioredis.Redis,
) -> None:
    slots = FleetSlots(redis_client)
    results = await asyncio.gather(*(slots.take(TENANT, f"job-{n}", 10) for n in range(50)))
    assert results.count(True) == 10
    assert await slots.live(TENANT) == 10
    assert await slots.live(OTHER) == 0


async def test_three_workers_racing_get_exactly_the_cap(redis_url: str) -> None:
    # Three FleetSlots, each with a client (and connection pool) of its own: three workers.
    workers = [FleetSlots.from_url(redis_url) for _ in range(3)]
    try:
        await workers[0].client.flushdb()
        results = await asyncio.gather(
            *(workers[n % 3].take(TENANT, f"job-{n}", 10) for n in range(50))
        )
        assert results.count(True) == 10
        assert [await worker.live(TENANT) for worker in workers] == [10, 10, 10]
    finally:
        for worker in workers:
            await worker.aclose()


async def test_release_frees_one_slot(redis_client: aioredis.Redis) -> None:
    slots = FleetSlots(redis_client)
    assert await slots.take(TENANT, "job-a", 2)
    assert await slots.take(TENANT, "job-b", 2)
    assert not await slots.take(TENANT, "job-c", 2)
    await slots.release(TENANT, "job-a")
    assert await slots.live(TENANT) == 1
    assert await slots.take(TENANT, "job-c", 2)
    assert not await slots.take(TENANT, "job-d", 2)
    await slots.release(TENANT, "job-a")  # released twice: nothing more happens
    await slots.release(TENANT, "never-taken")
    assert await slots.live(TENANT) == 2


async def test_retake_is_idempotent_and_renews(redis_client: aioredis.Redis) -> None:
    slots = FleetSlots(redis_client, lease_s=5.0)
    assert await slots.take(TENANT, "job-1", 1)
    first = await redis_client.zscore(slots.key(TENANT), "job-1")
    await asyncio.sleep(0.05)
    assert await slots.take(TENANT, "job-1", 1)
    assert await slots.take(TENANT, "job-1", 0)  # held already: the cap is not asked again
    second = await redis_client.zscore(slots.key(TENANT), "job-1")
    assert first is not None and second is not None and second > first
    assert await slots.live(TENANT) == 1
    assert not await slots.take(TENANT, "job-2", 1)


async def test_unlimited_cap_counts_and_zero_refuses(redis_client: aioredis.Redis) -> None:
    slots = FleetSlots(redis_client)
    assert all(await asyncio.gather(*(slots.take(TENANT, f"job-{n}", None) for n in range(20))))
    assert await slots.live(TENANT) == 20
    assert not await slots.take(TENANT, "job-20", 20)
    assert await slots.take(TENANT, "job-20", 21)
    assert not await slots.take(OTHER, "job-x", 0)
    with pytest.raises(ValueError, match="cap must be"):
        await slots.take(TENANT, "job-21", -1)


async def test_key_layout_scores_and_idle_key_expiry(redis_client: aioredis.Redis) -> None:
    slots = FleetSlots(redis_client, lease_s=0.2, prefix="test:tenancy")
    key = "test:tenancy:tenant:acme"
    assert slots.key(TENANT) == key
    before = await server_ms(redis_client)
    assert await slots.take(TENANT, "job-1", None)
    after = await server_ms(redis_client)
    score = await redis_client.zscore(key, "job-1")
    assert score is not None and before + 200 <= score <= after + 200
    ttl = await redis_client.pttl(key)
    assert 200 < ttl <= 400  # twice the lease, so an idle tenant's key goes away by itself
    await asyncio.sleep(0.5)
    assert await redis_client.exists(key) == 0


async def test_a_shorter_lease_never_shortens_the_keys_life(redis_client: aioredis.Redis) -> None:
    patient = FleetSlots(redis_client, lease_s=5.0)
    hasty = FleetSlots(redis_client, lease_s=0.2)
    assert await patient.take(TENANT, "long", None)
    assert await hasty.take(TENANT, "short", None)
    assert (await hasty.renew({"short": TENANT})).retaken == {}
    assert await redis_client.pttl(patient.key(TENANT)) > 5000
    await asyncio.sleep(0.5)
    assert await patient.live(TENANT) == 1


async def test_renewer_keeps_leases_alive_while_an_unrenewed_one_expires(
    redis_client: aioredis.Redis,
) -> None:
    slots = FleetSlots(redis_client, lease_s=1.0)
    assert await slots.take(TENANT, "kept", None)
    assert await slots.take(TENANT, "dropped", None)
    renewals = 0

    def held() -> dict[str, str]:
        nonlocal renewals
        renewals += 1
        return {"kept": TENANT}

    slots.start(held)
    try:
        await asyncio.sleep(1.5)
        assert await slots.live(TENANT) == 1
    finally:
        await slots.stop()
    assert renewals >= 3
    assert await redis_client.zscore(slots.key(TENANT), "kept") is not None
    assert await slots.live(TENANT) == 1


async def test_renew_takes_back_a_lost_lease_even_past_the_cap(
    redis_client: aioredis.Redis,
) -> None:
    slots = FleetSlots(redis_client, lease_s=0.3)
    assert await slots.take(TENANT, "late", 1)
    assert await slots.take(OTHER, "on-time", 1)
    await asyncio.sleep(0.4)  # an outage longer than the lease: both ran out
    assert await slots.live(TENANT) == 0
    # Meanwhile another worker took the tenant's only slot.
    assert await slots.take(TENANT, "newcomer", 1)
    renewal = await slots.renew({"late": TENANT, "on-time": OTHER})
    # The calls are live: they count again, the tenant over its cap, and take refuses.
    assert renewal.retaken == {"late": TENANT, "on-time": OTHER}
    assert renewal.live == {TENANT: 2, OTHER: 1}
    assert not await slots.take(TENANT, "one-more", 1)
    assert (await slots.renew({"late": TENANT})).retaken == {}
    await redis_client.flushdb()  # Redis restarted without its data
    assert (await slots.renew({"late": TENANT})).retaken == {"late": TENANT}
    assert await slots.live(TENANT) == 1
    assert await slots.renew({}) == Renewal(live={}, retaken={})


async def test_renew_covers_many_tenants_in_one_call(redis_client: aioredis.Redis) -> None:
    slots = FleetSlots(redis_client, lease_s=0.5)
    held = {f"job-{n}": f"tenant-{n % 4}" for n in range(12)}
    for job_id, tenant in held.items():
        assert await slots.take(tenant, job_id, None)
    await asyncio.sleep(0.3)
    renewal = await slots.renew(held)
    assert renewal.retaken == {} and renewal.live == {f"tenant-{n}": 3 for n in range(4)}
    await asyncio.sleep(0.3)  # past the first lease, within the renewed one
    assert [await slots.live(f"tenant-{n}") for n in range(4)] == [3, 3, 3, 3]


async def test_renewer_logs_each_distinct_error_once_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with refused_port() as port:
        slots = FleetSlots.from_url(f"redis://:s3cret-pw@127.0.0.1:{port}/0", lease_s=0.3)
        ticks = 0

        def held() -> dict[str, str]:
            nonlocal ticks
            ticks += 1
            return {"job-1": TENANT}

        caplog.set_level(logging.WARNING, logger="openrtc.tenancy")
        slots.start(held)
        try:

            async def six_ticks() -> bool:
                return ticks >= 6

            await poll(six_ticks, within=10)
        finally:
            await slots.aclose()
    assert ticks >= 6
    warnings = [r for r in caplog.records if r.name == "openrtc.tenancy"]
    messages = [r.getMessage() for r in warnings]
    assert len(messages) == 1, messages
    assert "renewing slot leases failed" in messages[0]
    assert "s3cret-pw" not in caplog.text


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port where connections are refused: bound but never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


# --- A worker that really dies ------------------------------------------------------------------

CRASH_LEASE_S = 2.0
# Where openrtc_tenancy is imported from, so the worker process imports the same code.
SRC = os.path.abspath(Path(counting.__file__).parents[1])

DOOMED_WORKER = """
import asyncio
import sys

from openrtc_tenancy.counting import FleetSlots


async def main() -> None:
    slots = FleetSlots.from_url(sys.argv[1], lease_s=float(sys.argv[2]))
    held = {}
    for n in range(4):
        if not await slots.take("acme", f"doomed-{n}", 4):
            sys.exit(f"slot {n} was refused")
        held[f"doomed-{n}"] = "acme"
    slots.start(lambda: held)
    print("held", flush=True)
    await asyncio.sleep(600)


asyncio.run(main())
"""


async def test_a_killed_workers_slots_come_back_when_their_leases_run_out(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        DOOMED_WORKER,
        redis_url,
        str(CRASH_LEASE_S),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert worker.stdout is not None and worker.stderr is not None
    slots = FleetSlots(redis_client, lease_s=CRASH_LEASE_S)
    try:
        line = await asyncio.wait_for(worker.stdout.readline(), timeout=60)
        if line != b"held\n":
            await worker.wait()
            pytest.fail(f"the worker died: {(await worker.stderr.read()).decode()}")
        assert await slots.live(TENANT) == 4
        assert not await slots.take(TENANT, "fifth", 4)

        # Past a whole lease: only the worker's renewer keeps the slots.
        await asyncio.sleep(CRASH_LEASE_S + 0.5)
        assert worker.returncode is None
        assert await slots.live(TENANT) == 4

        worker.kill()  # SIGKILL: no release, no goodbye
        await worker.wait()
        killed = time.monotonic()
        now = await server_ms(redis_client)
        key = slots.key(TENANT)
        expiries = [await redis_client.zscore(key, f"doomed-{n}") for n in range(4)]
        # What each lease has left by the server's clock: renewed a renewal interval (lease / 3)
        # ago at most, so about 2/3 of a lease or more when the worker kept to its schedule.
        left_ms = [round(expiry - now) for expiry in expiries if expiry is not None]
        assert len(left_ms) == 4
        assert all(0 < left <= CRASH_LEASE_S * 1000 for left in left_ms), left_ms

        await asyncio.sleep(max(0.0, killed + 0.5 - time.monotonic()))
        assert await slots.live(TENANT) == 4, "slots came back before their leases ran out"
        assert not await slots.take(TENANT, "fifth", 4)

        async def freed() -> bool:
            return await slots.live(TENANT) == 0

        await poll(freed, within=killed + CRASH_LEASE_S + 1.0 - time.monotonic())
        freed_after = time.monotonic() - killed
        assert await slots.live(TENANT) == 0, f"still held {freed_after:.2f} s after the kill"
        # Never before the leases, as last renewed, ran out (50 ms for reading the clocks).
        assert freed_after >= min(left_ms) / 1000 - 0.05, (freed_after, left_ms)
        assert await slots.take(TENANT, "fifth", 4)
        print(
            f"crash: lease left at kill {sorted(left_ms)} ms;"
            f" freed {freed_after:.2f} s after the kill"
        )
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
