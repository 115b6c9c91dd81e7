"""When a controller starts a generation again after the serving one died.

Like an OTP supervisor or gunicorn's arbiter, the controller restarts what it supervises;
unlike an OTP supervisor past its intensity, it never gives up: a host with no generation
takes no call, and what killed the last one (the OOM killer in a burst, a dependency that
was down) often passes. So the first death is restarted at once, the next ones after a
delay that doubles up to a cap, and a crash loop is logged loudly every time it goes on.
"""

from __future__ import annotations

import collections
from typing import Final

import attrs

FIRST_DELAY_S: Final = 0.5
"""The delay before the second restart in a row (the first is at once)."""
MAX_DELAY_S: Final = 30.0
HEALTHY_S: Final = 60.0
"""A generation that served this long before it died starts the delays over."""
INTENSITY: Final = 5
"""This many deaths within :data:`WINDOW_S` is a crash loop, logged as such."""
WINDOW_S: Final = 60.0


@attrs.define
class RestartBackoff:
    """The delay before each restart, from the deaths that came before it."""

    first_delay_s: float = FIRST_DELAY_S
    max_delay_s: float = MAX_DELAY_S
    healthy_s: float = HEALTHY_S
    intensity: int = INTENSITY
    window_s: float = WINDOW_S
    streak: int = 0
    """Deaths in a row with no generation serving :attr:`healthy_s` between them."""
    deaths: collections.deque[float] = attrs.field(factory=lambda: collections.deque(maxlen=64))

    def delay(self, now: float, served_s: float | None) -> float:
        """The delay before restarting after a death at `now` of a generation that served
        `served_s` seconds (None: it never served)."""
        if served_s is not None and served_s >= self.healthy_s:
            self.streak = 0
        self.deaths.append(now)
        self.streak += 1
        if self.streak == 1:
            return 0.0
        return min(self.max_delay_s, self.first_delay_s * 2.0 ** (self.streak - 2))

    def recent(self, now: float) -> int:
        """Deaths within the last :attr:`window_s`."""
        return sum(1 for at in self.deaths if now - at <= self.window_s)

    def crash_looping(self, now: float) -> bool:
        return self.recent(now) >= self.intensity
