"""Exact per-tenant session caps: in one process (`LocalSlots`) and across workers (`FleetSlots`).

A slot is held by one job (one LiveKit session) for one tenant. Taking a slot either succeeds,
and the job counts against its tenant's cap until it is released, or is refused because the
tenant already has ``cap`` live jobs. A cap of ``None`` means unlimited, but the job still counts.

`LocalSlots` counts inside one worker process. Its methods are plain synchronous code with no
``await``, so on the event loop a check-and-take can never interleave with another.

`FleetSlots` counts across every worker that shares one Redis. Each held slot is a lease that
the holder renews; a worker that dies stops renewing, and its slots come back when their leases
run out (``lease_s`` after the last renewal), never before. A live call whose lease is gone
anyway (Redis restarted without its data, or an outage outlasted ``lease_s``) takes it back at
its next renewal, even if that puts its tenant over the cap: `take` then refuses until the
tenant is back under. All lease arithmetic happens inside
Lua scripts on the Redis server's clock (``TIME``), so the workers' own clocks do not matter.

Key layout in Redis (``prefix`` defaults to ``openrtc:tenancy``)::

    {prefix}:tenant:{tenant}    sorted set, one per tenant
        member  the job id (LiveKit job ids are unique across a deployment, so jobs taken by
                different workers never share a member; a job id belongs to one tenant)
        score   when that job's lease expires, in milliseconds of the Redis server's clock

A member whose score is at or before the server's current time is expired: it no longer counts,
and the next `FleetSlots.take` for that tenant deletes it. Every write also makes sure the
tenant's key expires no sooner than twice the lease from now (``PEXPIRE``, never shortening it),
so the key of a tenant that has gone idle disappears by itself. Each script touches exactly one
key, so the layout also works on Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:
    # redis is the optional extra ``openrtc-tenancy[redis]``: LocalSlots works without it.
    import redis.asyncio as aioredis

__all__ = ["FleetSlots", "LocalSlots", "Renewal"]

logger = logging.getLogger("openrtc.tenancy")

DEFAULT_PREFIX: Final = "openrtc:tenancy"
DEFAULT_LEASE_S: Final = 15.0
STOP_ATTEMPTS: Final = 20
STOP_WAIT_S: Final = 0.1


def _check_cap(cap: int | None) -> None:
    if cap is not None and cap < 0:
        raise ValueError(f"cap must be None (unlimited) or >= 0, not {cap}")


class LocalSlots:
    """Exact session counting per tenant inside one process.

    Nothing here awaits, so a caller on the event loop may check and take in one step without
    another coroutine slipping in between.
    """

    def __init__(self) -> None:
        self._tenant_of: dict[str, str] = {}
        self._live: dict[str, int] = {}

    def take(self, tenant: str, job_id: str, cap: int | None) -> bool:
        """Take a slot of ``tenant`` for ``job_id`` if it has fewer than ``cap`` live jobs.

        ``cap=None`` is unlimited (the job is still counted). Taking a job id that already holds
        a slot of the same tenant returns True and counts it once. Raises ValueError if the job
        id holds a slot of another tenant, or if ``cap`` is negative.
        """
        _check_cap(cap)
        holder = self._tenant_of.get(job_id)
        if holder is not None:
            if holder != tenant:
                raise ValueError(
                    f"job {job_id!r} already holds a slot of tenant {holder!r}, not {tenant!r}"
                )
            return True
        live = self._live.get(tenant, 0)
        if cap is not None and live >= cap:
            return False
        self._tenant_of[job_id] = tenant
        self._live[tenant] = live + 1
        return True

    def release(self, job_id: str) -> str | None:
        """Free the slot ``job_id`` holds; the tenant it belonged to, or None if it held none."""
        tenant = self._tenant_of.pop(job_id, None)
        if tenant is None:
            return None
        left = self._live[tenant] - 1
        if left:
            self._live[tenant] = left
        else:
            del self._live[tenant]
        return tenant

    def live(self, tenant: str) -> int:
        """How many slots ``tenant`` holds right now."""
        return self._live.get(tenant, 0)

    def held(self) -> dict[str, str]:
        """A copy of every held slot, job id -> tenant (what `FleetSlots.start` renews)."""
        return dict(self._tenant_of)


# Server time in whole milliseconds. TIME answers seconds and microseconds as strings.
_NOW_MS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# Keep the tenant's key for twice this lease at least. Never shortens its TTL: a worker with a
# shorter lease_s must not make the key vanish under another worker's longer leases.
_KEEP_KEY = """
if redis.call('PTTL', KEYS[1]) < 2 * lease then
    redis.call('PEXPIRE', KEYS[1], 2 * lease)
end
"""

# KEYS[1] the tenant's key; ARGV[1] job id, ARGV[2] lease ms, ARGV[3] cap (-1 = unlimited).
# Returns 1 if the job holds a slot now (taken or renewed), 0 if the tenant is at its cap.
_TAKE = (
    _NOW_MS
    + """
local lease = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
    if cap >= 0 and redis.call('ZCARD', KEYS[1]) >= cap then
        return 0
    end
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
"""
    + _KEEP_KEY
    + """
return 1
"""
)

# KEYS[1] the tenant's key; ARGV[1] lease ms, ARGV[2..] job ids, all of them live calls. Extends
# each lease, and takes back one that is gone (Redis restarted without its data, or an outage
# outlasted the lease): the call is live, so it counts, even if that puts the tenant over its
# cap (`take` then refuses until it is back under). Returns the tenant's live leases after the
# renewal, then the job ids whose lease had to be taken back.
_RENEW = (
    _NOW_MS
    + """
local lease = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local reply = {0}
for i = 2, #ARGV do
    if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then
        reply[#reply + 1] = ARGV[i]
    end
    redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
end
"""
    + _KEEP_KEY
    + """
reply[1] = redis.call('ZCARD', KEYS[1])
return reply
"""
)

# KEYS[1] the tenant's key. The number of unexpired leases.
_LIVE = (
    _NOW_MS
    + """
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""
)


@attrs.frozen(kw_only=True)
class Renewal:
    """What one renewal found: each tenant's live leases after it, and the leases taken back."""

    live: Mapping[str, int]
    """Tenant -> unexpired leases across the fleet, for the tenants renewed."""
    retaken: Mapping[str, str]
    """Job id -> tenant, for the live calls whose lease was gone and was taken back."""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class FleetSlots:
    """Exact session counting per tenant across every worker sharing one Redis.

    Each held slot is a lease of ``lease_s`` seconds on the Redis server's clock. Keep the
    leases of live jobs alive with `start` (or call `renew` yourself more often than
    ``lease_s``); the slots of a worker that crashes come back ``lease_s`` after its last
    renewal. Counting is exact: `take` checks and adds in one atomic script.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        lease_ms = round(lease_s * 1000)
        if lease_ms < 3:
            raise ValueError(f"lease_s must be at least 0.003 s, not {lease_s}")
        self.client = client
        self.lease_s = lease_s
        self.prefix = prefix
        self._lease_ms = lease_ms
        self._owns_client = False
        self._take = client.register_script(_TAKE)
        self._renew = client.register_script(_RENEW)
        self._live = client.register_script(_LIVE)
        self._renewer: asyncio.Task[None] | None = None
        self._errors_logged: set[str] = set()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        prefix: str = DEFAULT_PREFIX,
        **client_options: Any,
    ) -> FleetSlots:
        """Slots on a client of their own for ``url`` (``redis://[:password@]host:port/db``).

        ``client_options`` go to `redis.asyncio.Redis.from_url`. `aclose` closes this client.
        Unless they say otherwise, a command on a connection Redis has closed (it restarted) is
        sent once more on a new one; every command here may be sent twice. Needs the ``redis``
        extra: ``pip install 'openrtc-tenancy[redis]'``.
        """
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import ConnectionError as RedisConnectionError
        except ImportError as exc:
            raise ImportError(
                "fleet-wide session caps need redis-py: pip install 'openrtc-tenancy[redis]'"
            ) from exc
        if "retry" not in client_options:
            client_options["retry"] = Retry(
                NoBackoff(), 1, supported_errors=(RedisConnectionError,)
            )
            client_options["retry_on_error"] = [RedisConnectionError]
        slots = cls(aioredis.Redis.from_url(url, **client_options), lease_s=lease_s, prefix=prefix)
        slots._owns_client = True
        return slots

    def key(self, tenant: str) -> str:
        """The Redis key of ``tenant``'s sorted set of leases."""
        return f"{self.prefix}:tenant:{tenant}"

    async def take(self, tenant: str, job_id: str, cap: int | None) -> bool:
        """Take a slot of ``tenant`` for ``job_id`` if fewer than ``cap`` leases are live.

        ``cap=None`` is unlimited (the job is still counted). Taking a job id that already holds
        a live slot renews its lease and returns True, whatever the cap.
        """
        _check_cap(cap)
        result = await self._take(
            keys=[self.key(tenant)],
            args=[job_id, self._lease_ms, -1 if cap is None else cap],
        )
        return int(result) == 1

    async def release(self, tenant: str, job_id: str) -> None:
        """Free the slot ``job_id`` holds for ``tenant`` (nothing happens if it holds none)."""
        await self.client.zrem(self.key(tenant), job_id)

    async def renew(self, held: Mapping[str, str]) -> Renewal:
        """Extend every lease in ``held`` (job id -> tenant) by ``lease_s``, in one round trip.

        ``held`` names live calls: a lease that is gone (Redis lost it, or it ran out during an
        outage) is taken back, even past the tenant's cap. Returns each tenant's live leases
        after the renewal and the job ids taken back.
        """
        by_tenant: dict[str, list[str]] = {}
        for job_id, tenant in held.items():
            by_tenant.setdefault(tenant, []).append(job_id)
        if not by_tenant:
            return Renewal(live={}, retaken={})
        # One script call per tenant key (so each touches one key, as Cluster needs), all sent
        # in one pipeline. Not a transaction: each script is atomic on its own.
        async with self.client.pipeline(transaction=False) as pipe:
            for tenant, job_ids in by_tenant.items():
                await self._renew(
                    keys=[self.key(tenant)], args=[self._lease_ms, *job_ids], client=pipe
                )
            replies = await pipe.execute()
        live: dict[str, int] = {}
        retaken: dict[str, str] = {}
        for tenant, (count, *job_ids) in zip(by_tenant, replies, strict=True):
            live[tenant] = int(count)
            retaken.update((_text(job_id), tenant) for job_id in job_ids)
        return Renewal(live=live, retaken=retaken)

    async def live(self, tenant: str) -> int:
        """How many unexpired leases ``tenant`` holds across the fleet."""
        return int(await self._live(keys=[self.key(tenant)]))

    def start(
        self,
        held: Callable[[], Mapping[str, str]],
        renewed: Callable[[Renewal], None] | None = None,
    ) -> None:
        """Renew the leases ``held()`` names (job id -> tenant) every ``lease_s / 3`` seconds.

        Runs as an asyncio task on the running loop until `stop`; ``renewed`` is told each
        successful renewal. A failed renewal is logged as a warning (once per distinct error
        until a renewal succeeds again) and retried next tick. A lease taken back is logged
        once; one taken back for a job that ended meanwhile is released again.
        """
        if self._renewer is not None and not self._renewer.done():
            raise RuntimeError("the lease renewer is already running")
        self._renewer = asyncio.get_running_loop().create_task(
            self._renew_forever(held, renewed), name="openrtc-tenancy-lease-renewer"
        )

    async def stop(self) -> None:
        """Stop the renewer started by `start` (the leases it kept then run out by themselves)."""
        task, self._renewer = self._renewer, None
        if task is None:
            return
        # redis-py can swallow a cancel that lands mid-command (redis-py #2665): cancel
        # again until the renewer is done, within a bound, so stopping never hangs.
        for _ in range(STOP_ATTEMPTS):
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=STOP_WAIT_S)
            if done:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    task.result()
                return
        logger.warning("the lease renewer did not stop; leaving it to end with the loop")

    async def aclose(self) -> None:
        """Stop the renewer, and close the client if `from_url` made it."""
        await self.stop()
        if self._owns_client:
            await self.client.aclose()

    async def _renew_forever(
        self,
        held: Callable[[], Mapping[str, str]],
        renewed: Callable[[Renewal], None] | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        interval = self.lease_s / 3
        deadline = loop.time()
        while True:
            # Ticks keep to a fixed schedule, so a slow renewal does not push the next one out.
            deadline += interval
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            deadline = max(deadline, loop.time())
            try:
                # A renewal still hanging by the next tick is as good as failed: retry then.
                async with asyncio.timeout(interval):
                    renewal = await self.renew(held())
                    # A job that ended while its lease was being taken back: its release may
                    # have reached Redis first. Release it again, or it counts for a lease.
                    still = held()
                    for job_id, tenant in renewal.retaken.items():
                        if job_id not in still:
                            await self.release(tenant, job_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._log_failure(exc)
                continue
            if self._errors_logged:
                logger.info("tenancy: lease renewal works again")
                self._errors_logged.clear()
            if renewal.retaken:
                logger.warning(
                    "tenancy: took back the slot leases of %d live call(s) that Redis no longer"
                    " held (it restarted without its data, or an outage outlasted lease_s=%g):"
                    " %s",
                    len(renewal.retaken),
                    self.lease_s,
                    ", ".join(sorted(renewal.retaken)),
                )
            if renewed is not None:
                renewed(renewal)

    def _log_failure(self, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        password = self.client.connection_pool.connection_kwargs.get("password")
        if password:
            message = message.replace(str(password), "***")
        if message in self._errors_logged:
            return
        self._errors_logged.add(message)
        logger.warning(
            "tenancy: renewing slot leases failed, retrying every %.3g s: %s",
            self.lease_s / 3,
            message,
        )
