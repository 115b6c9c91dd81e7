"""How many cores this process may use: what sizes a worker fleet and the shared VAD's
thread pool."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Final

CGROUP_V2_CPU_MAX: Final = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA: Final = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD: Final = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def usable_cores() -> int:
    """The cores this process may use, at least 1: its CPU affinity, capped by a container's
    CPU quota (a pod limited to 2 CPUs on a 64-core node gets 2, not 64)."""
    cores = len(os.sched_getaffinity(0))
    quota = cpu_quota()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def cpu_quota(
    v2: Path = CGROUP_V2_CPU_MAX, v1: tuple[Path, Path] = (CGROUP_V1_QUOTA, CGROUP_V1_PERIOD)
) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (cgroup v2, else v1); None for none."""
    try:
        quota, _, period = v2.read_text().partition(" ")
    except OSError:
        try:
            quota, period = (path.read_text() for path in v1)
        except OSError:
            return None
    quota, period = quota.strip(), period.strip()
    if quota in ("max", "-1") or not quota.isdigit() or not period.isdigit() or not int(period):
        return None
    return int(quota) / int(period)
