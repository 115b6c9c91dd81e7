"""A worker's event-loop lag as the benchmarks report it: the samples' statistics, the
garbage collector's pauses, and the series itself (wall time, lag) for the driver to cut
in phases."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from openrtc_testing.measure import GcPauses, LoopLagMonitor, percentile

LAG_INTERVAL_S: Final = 0.05


def lag_summary(samples: Sequence[float]) -> dict[str, Any]:
    values = list(samples)
    return {
        "samples": len(values),
        "interval_s": LAG_INTERVAL_S,
        "p50_s": percentile(values, 50),
        "p99_s": percentile(values, 99),
        "max_s": max(values, default=0.0),
    }


def lag_report(
    monitor: LoopLagMonitor | None,
    collections: GcPauses,
    process_init: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """`process_init`: how long livekit's job processes took to start (process executors)."""
    if monitor is None:
        return lag_summary([])
    pairs = zip(monitor.times, monitor.samples, strict=True)
    series = [[round(at, 3), round(lag, 5)] for at, lag in pairs]
    return {
        **lag_summary(monitor.samples),
        "gc": collections.summary(),
        "process_init": dict(process_init) if process_init is not None else None,
        "series": series,
    }
