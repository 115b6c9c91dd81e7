"""What the driver reads from /proc about a worker's process tree: PSS, CPU time, free memory."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import attrs

from openrtc_core import child_pids, process_tree, pss_mib

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

PSS_FLOOR_MB: Final = 0.1
"""The least a process tree's PSS can be resolved to, in MiB, on a quiet machine.

Measured on the sweep in benchmarks/results/density.json (2 cores):
between consecutive one-second samples at N = 1, the PSS of B's and C's one-process trees
never fell and rose by at most 0.07 MiB, the session's own growth included. A run's own
resolution is larger when its idle samples spread more (see :func:`pss_resolution_mb`).
"""


def pss_resolution_mb(
    idle_samples_mb: Sequence[float], live_samples_mb: Sequence[float] = ()
) -> float:
    """The smallest difference between two PSS readings of a tree that is not noise, in MiB.

    The tree's PSS moves with nothing happening in it: on a busy machine, other processes
    that map the same libraries starting or ending move it by several MiB. Two estimates of
    that, the larger wins:

    - twice the spread (max - min) of the idle samples, taken over a few seconds just
      before the calls: the added PSS is the difference of two readings, and both carry it;
    - the largest change between consecutive samples while the number of live sessions held
      at its maximum (`live_samples_mb`, in order): noise that came after the idle samples.
      It also counts the sessions' own growth, so it errs on the side of "unresolved".

    Never less than :data:`PSS_FLOOR_MB`.
    """
    spread = max(idle_samples_mb) - min(idle_samples_mb) if idle_samples_mb else 0.0
    steps = (abs(b - a) for a, b in itertools.pairwise(live_samples_mb))
    return max(2 * spread, max(steps, default=0.0), PSS_FLOOR_MB)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, plus those of its children it has already reaped.

    Job processes that ended during a run are reaped by their parent in the tree (the
    forkserver or the worker), so their CPU time stays counted after they are gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name may contain spaces; the fields after it are space separated.
    fields = stat[stat.rindex(")") + 2 :].split()
    # utime, stime, cutime, cstime are fields 14-17 of stat(5); fields[0] here is field 3.
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / _CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process tree (see :func:`cpu_seconds`)."""
    return sum(cpu_seconds(p) for p in process_tree(pid))


def mem_available_mb() -> float:
    """The kernel's estimate of memory available to new work (MemAvailable), in MiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


@attrs.frozen
class PssSample:
    at: float
    """Wall-clock time (time.time()) the sample was taken."""
    pss_mb: float
    processes: int
    parts: dict[int, float] = attrs.field(factory=dict, eq=False)
    """With ``TreeSampler(parts=True)``: the root's own PSS under its pid, and the PSS of each
    direct child's subtree under the child's pid (a supervisor and its workers)."""


@attrs.define
class TreeSampler:
    """Samples a process tree's PSS in a thread, and watches the machine's free memory.

    A thread, not a task: reading smaps of hundreds of processes takes a while, and the
    dispatch server runs on the driver's event loop. When available memory falls below
    ``memory_floor_mb`` the sampler calls ``on_out_of_memory`` (from its thread, once), so
    the driver can stop the run before the kernel's OOM killer picks a victim.
    """

    pid: int
    interval_s: float = 1.0
    memory_floor_mb: float = 2048.0
    on_out_of_memory: Callable[[], object] | None = None
    parts: bool = False
    """Also record the root's own PSS and each direct child's subtree (PssSample.parts)."""
    samples: list[PssSample] = attrs.field(factory=list)
    out_of_memory: bool = False
    _stop: threading.Event = attrs.field(factory=threading.Event, init=False)
    _thread: threading.Thread | None = attrs.field(default=None, init=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pss-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def sample(self) -> PssSample:
        if not self.parts:
            tree = process_tree(self.pid)
            return PssSample(at=time.time(), pss_mb=_pss_mb(tree), processes=len(tree))
        parts = {self.pid: _pss_mb([self.pid])}
        processes = 1
        for child in child_pids(self.pid):
            subtree = process_tree(child)
            parts[child] = _pss_mb(subtree)
            processes += len(subtree)
        return PssSample(
            at=time.time(), pss_mb=sum(parts.values()), processes=processes, parts=parts
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.samples.append(self.sample())
            if not self.out_of_memory and mem_available_mb() < self.memory_floor_mb:
                self.out_of_memory = True
                if self.on_out_of_memory is not None:
                    self.on_out_of_memory()
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))


def _pss_mb(pids: list[int]) -> float:
    """The PSS of these processes together, in MiB; those gone since they were listed add 0."""
    return sum(pss_mib(pid) or 0.0 for pid in pids)
