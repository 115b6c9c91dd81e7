"""The workers the density benchmark compares, and how each is configured for N calls."""

from __future__ import annotations

from typing import Final, Literal

import attrs

from openrtc_core.cores import usable_cores

from .workload import EXECUTOR_ENV, IDLE_PROCESSES_ENV, ISOLATION_ENV, MAX_SESSIONS_ENV

WARM_PROCESSES_MAX: Final = 4
"""A, B and D keep min(N, 4) warm job processes (or threads), as a production worker would."""
MAX_SESSIONS_HEADROOM: Final = 10
"""OpenRTC pools get max_sessions = N + 10, so the cap never turns a benchmark call away."""


@attrs.frozen(kw_only=True)
class Variant:
    key: str
    label: str
    name: str
    """Short name for tables: the letter and this, e.g. "A livekit process"."""
    kind: Literal["plain", "openrtc", "supervised"]
    """The runner's mode: a plain livekit worker, an OpenRTC worker, or OpenRTC's supervisor
    (openrtc-workers) with one forked OpenRTC worker per usable core."""
    executor: str = ""
    isolation: str = ""

    @property
    def supervised(self) -> bool:
        """Whether the runner is a supervisor whose forked workers take the calls."""
        return self.kind == "supervised"

    def workers(self) -> int:
        """Worker processes taking calls: one per usable core when supervised, else 1."""
        return usable_cores() if self.supervised else 1

    def env(self, calls: int) -> dict[str, str]:
        """The worker subprocess's configuration for a run of `calls` concurrent calls.

        A supervised variant's workers each get the same max_sessions as C (N + 10), so the
        cap never turns a call away whichever worker LiveKit offers it to.
        """
        warm = {IDLE_PROCESSES_ENV: str(self.warm_processes(calls))} if self.warm else {}
        if self.kind == "plain":
            return {EXECUTOR_ENV: self.executor, **warm}
        return {
            ISOLATION_ENV: self.isolation,
            MAX_SESSIONS_ENV: str(calls + MAX_SESSIONS_HEADROOM),
            **warm,
        }

    @property
    def warm(self) -> bool:
        """Whether the variant has job processes (or threads) to keep warm."""
        return self.kind == "plain" or self.isolation == "process"

    @staticmethod
    def warm_processes(calls: int) -> int:
        return min(calls, WARM_PROCESSES_MAX)

    def describe(self, calls: int) -> str:
        """How the worker was configured, in words, for the report."""
        if self.kind == "plain":
            return (
                f"livekit AgentServer, {self.executor} executor, "
                f"num_idle_processes={self.warm_processes(calls)}"
            )
        options = f"isolation={self.isolation!r}, max_sessions={calls + MAX_SESSIONS_HEADROOM}"
        if self.warm:
            options += f", server_options={{'num_idle_processes': {self.warm_processes(calls)}}}"
        if self.supervised:
            workers = self.workers()
            return (
                f"AgentPool({options}) in each of {workers} forked workers "
                f"(openrtc-workers' supervisor, start --workers {workers}: one per usable core)"
            )
        return f"AgentPool({options})"


VARIANTS: Final[dict[str, Variant]] = {
    "A": Variant(
        key="A",
        label="livekit, process executor",
        name="livekit process",
        kind="plain",
        executor="process",
    ),
    "B": Variant(
        key="B",
        label="livekit, thread executor",
        name="livekit thread",
        kind="plain",
        executor="thread",
    ),
    "C": Variant(
        key="C",
        label="OpenRTC, coroutine",
        name="OpenRTC coroutine",
        kind="openrtc",
        isolation="coroutine",
    ),
    "D": Variant(
        key="D",
        label="OpenRTC, process",
        name="OpenRTC process",
        kind="openrtc",
        isolation="process",
    ),
    "E": Variant(
        key="E",
        label="OpenRTC, coroutine, one worker per core",
        name="OpenRTC workers",
        kind="supervised",
        isolation="coroutine",
    ),
}

ONE_WORKER_VARIANTS: Final[dict[str, Variant]] = {
    key: variant for key, variant in VARIANTS.items() if not variant.supervised
}
"""The variants that run as one worker process (what benchmarks.soak can drive)."""
