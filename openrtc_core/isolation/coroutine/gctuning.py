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

    Full collections are then paced by ended calls (:class:`CallGarbage`), or livekit's
    per-call reference cycles pile up in the oldest generation (docs/soak.md). A threshold
    the pool's prewarm set itself is kept. ``OPENRTC_GC=python`` leaves
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
BUSY_COLLECT_AFTER_CALLS = 50
"""Calls ended since the last full collection before a busy worker collects (at least)."""
BUSY_COLLECT_LIVE_SHARE = 4
"""A busy worker also waits for a quarter as many ended calls as it has live ones."""


class CallGarbage:
    """Full garbage collections paced by the calls that ended, the only source of garbage.

    With the tuned thresholds (see :func:`tune_gc`) a call's objects outlive the young
    collections and its reference cycles (livekit's, about 1,000 objects a call: channels
    and the exceptions that close them, futures, tasks, chat messages) die in the oldest
    generation, which Python collects rarely: over 20,000 calls (``python -m
    benchmarks.soak``) idle PSS grew 27.7% and full collections, when they came, walked
    up to 700,000 dead objects and stopped the loop for up to 2.1 s. Python's own
    thresholds collect sooner but also while no call has ended: with 500 calls starting,
    9 full collections in 40 s found nothing to free and tripled the loop's p99 lag.

    So a full collection comes when calls have ended:

    * with no call live, once 20 have ended (at most every 5 s): nobody waits for it;
    * with calls live, once ``max(50, live // 4)`` have ended: each collection walks the
      live sessions once and frees the garbage of a quarter as many calls, so its cost per
      call stays flat as the worker fills, and the garbage waiting is bounded by that many
      calls instead of growing with the time since the last collection.
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
        """Whether to collect now, with `calls_live` calls still live."""
        if calls_live == 0:
            return (
                self.ended_since >= QUIET_COLLECT_AFTER_CALLS
                and time.monotonic() - self.last_full >= QUIET_COLLECT_EVERY_S
            )
        return self.ended_since >= max(
            BUSY_COLLECT_AFTER_CALLS, calls_live // BUSY_COLLECT_LIVE_SHARE
        )

    def collect(self, calls_live: int) -> None:
        started = time.perf_counter()
        freed = gc.collect()
        self.collections += 1
        logger.debug(
            "%d call(s) live: collected %d garbage objects in %.0f ms",
            calls_live,
            freed,
            (time.perf_counter() - started) * 1000,
        )

    def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
