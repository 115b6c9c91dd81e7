"""Garbage-collector set-up for one process holding hundreds of sessions."""

from __future__ import annotations

import gc
import logging
import os

logger = logging.getLogger("openrtc.coroutine")

GC_ENV = "OPENRTC_GC"
PYTHON_GC_THRESHOLD = (700, 10, 10)
GC_THRESHOLD = (10_000, 10, 10)


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
