"""Measurements shared by ``openrtc simulate`` and the benchmarks: PSS and event-loop lag."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time

import attrs

from openrtc_core import tree_pss_mib


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@attrs.define
class LoopLagMonitor:
    """Samples how late the event loop wakes a sleeping task (the lag every task feels)."""

    interval_s: float = 0.05
    samples: list[float] = attrs.field(factory=list)
    times: list[float] = attrs.field(factory=list)
    """When each sample was taken (wall clock, ``time.time()``), to cut the series in phases."""
    _task: asyncio.Task[None] | None = attrs.field(default=None, init=False)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self.samples.append(max(0.0, time.perf_counter() - before - self.interval_s))
            self.times.append(time.time())

    async def stop(self) -> None:
        await _cancel(self._task)


@attrs.define
class GcPauses:
    """Records how long each garbage collection of this process stopped the world."""

    pauses: list[tuple[int, float]] = attrs.field(factory=list)
    """(generation, seconds) for every collection since start()."""
    _began: float = attrs.field(default=0.0, init=False)

    def start(self) -> None:
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._began))

    def summary(self) -> dict[str, dict[str, float]]:
        """Per generation: how many collections, their total and their longest pause."""
        found: dict[str, dict[str, float]] = {}
        for generation, seconds in self.pauses:
            entry = found.setdefault(str(generation), {"count": 0, "total_s": 0.0, "max_s": 0.0})
            entry["count"] += 1
            entry["total_s"] += seconds
            entry["max_s"] = max(entry["max_s"], seconds)
        return found


@attrs.define
class PeakMemory:
    """Samples the PSS of a process tree (`pid`'s; default this process's) and keeps the peak."""

    interval_s: float = 0.25
    baseline_mb: float = 0.0
    peak_mb: float = 0.0
    pid: int | None = None
    _task: asyncio.Task[None] | None = attrs.field(default=None, init=False)

    def start(self) -> None:
        self.baseline_mb = self._read()
        self.peak_mb = self.baseline_mb
        self._task = asyncio.get_running_loop().create_task(self._run(), name="peak-memory")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Reading smaps of many processes takes milliseconds: keep it off the loop.
            pss = await loop.run_in_executor(None, self._read)
            self.peak_mb = max(self.peak_mb, pss)
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        await _cancel(self._task)
        self.peak_mb = max(self.peak_mb, self._read())

    def _read(self) -> float:
        """The tree's PSS now; 0.0 once it is gone."""
        return tree_pss_mib(os.getpid() if self.pid is None else self.pid) or 0.0
