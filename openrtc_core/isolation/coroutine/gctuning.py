"""Garbage-collector set-up for one process holding hundreds of sessions."""

from __future__ import annotations

import gc
import logging
import os
import time

logger = logging.getLogger("openrtc.coroutine")

GC_ENV = "OPENRTC_GC"
PYTHON_GC_THRESHOLD = (700, 10, 10)
GC_THRESHOLD = (10_000, 10, 10)


def gc_tuned() -> bool:
    """Whether the worker tunes the collector (``OPENRTC_GC`` is not ``python``)."""
    return os.environ.get(GC_ENV, "").strip().lower() != "python"


def tune_gc() -> str:
    """Set the garbage collector up for one process holding hundreds of sessions.

    Measured with 500 live sessions (``python -m benchmarks.density``): Python's defaults
    ran 8 full collections in 40 s of calls, each walking the whole worker (up to 340 ms
    with every session waiting), and they were the event loop's p99 lag. Two changes:

    * everything alive after prewarm (livekit, plugins, models: about 160,000 objects,
      ~75 ms of every full collection) is frozen out of the collector's sight
      (``gc.freeze``). It is not garbage; the worker holds it until it exits. Garbage is
      collected first so none of it is frozen.
    * the youngest generation is collected every 10,000 allocations instead of 700, so a
      turn's short-lived objects die before they are promoted, and the older generations,
      whose collections walk the sessions' live objects, fill up ten times more slowly.

    A threshold the pool's prewarm set itself is kept. ``OPENRTC_GC=python`` leaves
    Python's collector as it is (``tuned`` is the default). Returns what was done, for the
    start-up log line.
    """
    choice = os.environ.get(GC_ENV, "").strip().lower()
    if choice == "python":
        return "garbage collector left at Python's defaults (OPENRTC_GC=python)"
    if choice not in ("", "tuned"):
        logger.warning(
            "%s=%r is not a choice: use 'tuned' (the default) or 'python' (leave Python's "
            "collector as it is); tuning it",
            GC_ENV,
            os.environ[GC_ENV],
        )
    gc.collect()
    gc.freeze()
    done = f"{gc.get_freeze_count()} objects frozen out of garbage collection"
    if gc.get_threshold() == PYTHON_GC_THRESHOLD:
        gc.set_threshold(*GC_THRESHOLD)
        done += f", collection thresholds {GC_THRESHOLD}"
    return done


QUIET_COLLECT_AFTER_CALLS = 20
"""Calls ended since the last full collection before a quiet worker collects."""
QUIET_COLLECT_EVERY_S = 5.0
"""At most one quiet-time collection this often."""


class QuietCollector:
    """Full garbage collections when no call is live, so the garbage of ended calls does not
    pile up.

    With the tuned thresholds (see :func:`tune_gc`) a call's objects outlive the young
    collections (a call lasts longer than ten thousand allocations) and die in the oldest
    generation, which Python collects only when it has grown by a quarter since its last full
    collection. Measured with ``python -m benchmarks.soak`` (20,000 calls in waves of 200):
    idle PSS grew 27.5% and 681,013 garbage objects waited for a collection that then took
    1.39 s. Collected while no call is live, nobody waits for it, and the garbage of one
    quiet spell to the next is small. The freed pymalloc arenas are reused by the next calls.
    """

    def __init__(self) -> None:
        self.ended_since = 0
        self.last_full = time.monotonic()
        self.collections = 0
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info.get("generation") == 2:
            self.ended_since = 0
            self.last_full = time.monotonic()

    def call_ended(self) -> None:
        self.ended_since += 1

    def due(self, calls_live: int) -> bool:
        """Whether to collect now: no call live, enough calls ended, not collected lately."""
        return (
            calls_live == 0
            and self.ended_since >= QUIET_COLLECT_AFTER_CALLS
            and time.monotonic() - self.last_full >= QUIET_COLLECT_EVERY_S
        )

    def collect(self) -> None:
        started = time.perf_counter()
        freed = gc.collect()
        self.collections += 1
        logger.debug(
            "no call live: collected %d garbage objects in %.0f ms",
            freed,
            (time.perf_counter() - started) * 1000,
        )

    def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
