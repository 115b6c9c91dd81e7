"""When a dead worker is started again, and when its slot is given up."""

from __future__ import annotations

import os
from typing import Final

import attrs

from openrtc_core import PoolConfigError

MAX_DELAY_S: Final = 30.0
RESTART_DELAY_ENV: Final = "OPENRTC_RESTART_DELAY"
"""The first restart delay in seconds (default 0.5); each quick crash in a row doubles it."""


@attrs.frozen(kw_only=True)
class RestartPolicy:
    """Exponential backoff for dead workers, and the crash loop that stops it.

    A worker that dies within `quick_crash_s` of its start crashed "right after start";
    `crash_loop` such crashes in a row give its slot up. The n-th crash in a row waits
    ``first_delay_s * 2 ** (n - 1)``, at most `max_delay_s`, before the worker is started
    again; a worker that ran longer than `quick_crash_s` starts the count again.
    """

    first_delay_s: float = 0.5
    max_delay_s: float = MAX_DELAY_S
    quick_crash_s: float = 10.0
    crash_loop: int = 5
    memory_check_s: float = 2.0
    """How often each worker's memory is read (when a memory limit is set)."""

    @classmethod
    def from_env(cls) -> RestartPolicy:
        raw = os.environ.get(RESTART_DELAY_ENV, "").strip()
        if not raw:
            return cls()
        try:
            first = float(raw)
        except ValueError:
            first = -1.0
        if not 0 < first <= MAX_DELAY_S:
            raise PoolConfigError(
                f"{RESTART_DELAY_ENV}={raw!r}: give the first restart delay in seconds, "
                f"more than 0 and at most {MAX_DELAY_S:g}"
            )
        return cls(first_delay_s=first)

    def delay_s(self, crashes_in_a_row: int) -> float:
        """How long to wait before starting a worker again after its n-th crash in a row."""
        doubled: float = self.first_delay_s * 2.0 ** max(0, crashes_in_a_row - 1)
        return min(self.max_delay_s, doubled)
