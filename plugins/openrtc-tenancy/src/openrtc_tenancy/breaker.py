"""A circuit breaker per tenant: one tenant's failing calls stop its new calls, not others'.

Closed, it counts session outcomes over a sliding window; once the window holds at least
``min_calls`` outcomes and the failed share reaches ``failure_ratio``, it opens. Open, it
refuses the tenant's new calls for ``cooldown_s``; then it is half-open: one call (the
probe) is let through at a time. A probe that completes closes the breaker (and clears the
window); one that fails opens it for another cooldown.

With Redis, `FleetBreakers` shares a breaker that opens with the whole fleet: the other
workers refuse the tenant's calls until the cooldown ends, so no call is offered from worker to
worker while each opens its own.
"""

from __future__ import annotations

import collections
import enum
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from .config import BreakerConfig

if TYPE_CHECKING:
    import redis.asyncio as aioredis


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@attrs.frozen
class Transition:
    """A breaker changed state: for the log line and the plugin's listeners."""

    tenant_id: str
    before: BreakerState
    after: BreakerState
    reason: str


class Breaker:
    """One tenant's breaker. `now` is injectable for tests (monotonic seconds)."""

    def __init__(
        self,
        tenant_id: str,
        config: BreakerConfig,
        *,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tenant_id = tenant_id
        self.config = config
        self._now = now
        self.state = BreakerState.CLOSED
        self._outcomes: collections.deque[tuple[float, bool]] = collections.deque()
        self._opened_at = 0.0
        self._probe: str | None = None
        """The job id of the half-open probe in flight."""

    def _trim(self, now: float) -> None:
        horizon = now - self.config.window_s
        while self._outcomes and self._outcomes[0][0] < horizon:
            self._outcomes.popleft()

    def _move(self, state: BreakerState, reason: str) -> Transition:
        transition = Transition(self.tenant_id, self.state, state, reason)
        self.state = state
        return transition

    def admit(self, job_id: str) -> tuple[str | None, Transition | None]:
        """``(refusal reason or None, transition or None)`` for a new call of this tenant."""
        now = self._now()
        if self.state is BreakerState.OPEN:
            left = self._opened_at + self.config.cooldown_s - now
            if left > 0:
                return f"its breaker is open for {left:.0f} s more", None
            moved = self._move(BreakerState.HALF_OPEN, "cooldown over: probing with one call")
            self._probe = job_id
            return None, moved
        if self.state is BreakerState.HALF_OPEN:
            if self._probe is not None and self._probe != job_id:
                return "its breaker is half-open and a probe call is under way", None
            self._probe = job_id
        return None, None

    def released(self, job_id: str) -> None:
        """The job never ran (refused later, accept failed): a probe slot frees."""
        if self._probe == job_id:
            self._probe = None

    def record(self, job_id: str, failed: bool) -> Transition | None:
        """A call of this tenant ended, failed or not."""
        now = self._now()
        if self.state is BreakerState.HALF_OPEN and self._probe == job_id:
            self._probe = None
            if failed:
                self._opened_at = now
                return self._move(BreakerState.OPEN, "the probe call failed")
            self._outcomes.clear()
            return self._move(BreakerState.CLOSED, "the probe call completed")
        if self.state is not BreakerState.CLOSED:
            return None  # a call admitted before the breaker opened: not a probe
        self._outcomes.append((now, failed))
        self._trim(now)
        calls = len(self._outcomes)
        failures = sum(1 for _, f in self._outcomes if f)
        if calls >= self.config.min_calls and failures / calls >= self.config.failure_ratio:
            self._opened_at = now
            self._outcomes.clear()
            return self._move(
                BreakerState.OPEN,
                f"{failures} of its last {calls} calls failed within {self.config.window_s:g} s "
                f"(threshold {self.config.failure_ratio:.0%})",
            )
        return None


@attrs.frozen(kw_only=True)
class FleetOpen:
    """A tenant's breaker, open for the whole fleet: who opened it, why, for how long more."""

    opened_by: str
    reason: str
    left_s: float


class FleetBreakers:
    """Tenants' breakers shared by every worker on one Redis.

    Each worker still counts its own calls (`Breaker`); when one opens its tenant's breaker it
    publishes that here, a key that lives for the cooldown, and every worker's admission reads
    it. Key layout: ``{prefix}:breaker:{tenant}``, a string ``"{worker}\\n{reason}"`` whose
    TTL is what is left of the cooldown. The worker that opened it closes it early (deletes
    the key) when its probe call completes.
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str, worker: str) -> None:
        self.client = client
        self.prefix = prefix
        self.worker = worker

    def key(self, tenant_id: str) -> str:
        return f"{self.prefix}:breaker:{tenant_id}"

    async def open(self, tenant_id: str, reason: str, cooldown_s: float) -> None:
        ms = max(1, round(cooldown_s * 1000))
        await self.client.set(self.key(tenant_id), f"{self.worker}\n{reason}", px=ms)

    async def close(self, tenant_id: str) -> None:
        await self.client.delete(self.key(tenant_id))

    async def state(self, tenant_id: str) -> FleetOpen | None:
        """The tenant's breaker if some worker has it open now, else None (one round trip)."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.get(self.key(tenant_id))
            pipe.pttl(self.key(tenant_id))
            value, ttl_ms = await pipe.execute()
        if value is None:
            return None
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        opened_by, _, reason = text.partition("\n")
        return FleetOpen(opened_by=opened_by, reason=reason, left_s=max(0, int(ttl_ms)) / 1000)
