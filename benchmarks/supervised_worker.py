"""Variant E: the pool of C under openrtc-workers' supervisor, one worker per usable core.

``python -m benchmarks.runner supervised --workers N`` runs :func:`supervise`: the runner
process becomes the supervisor of ``openrtc start --workers N`` (exactly what
``python -m openrtc_testing.supervised benchmarks.openrtc_worker:pool --workers N`` runs, with
one more worker plugin). The supervisor runs the pool's prewarm once, then forks N normal
OpenRTC workers, each registered with the dispatch server on its own; SIGTERM to the
supervisor drains them all and it exits.

The supervisor has no event loop and takes no calls, so the loop that matters is each
worker's. :class:`WorkerLagProbe`, registered in the supervisor and inherited by every
worker it forks, samples it in each worker, steered by the driver through files in the
directory ``OPENRTC_BENCH_LAG_DIR`` names:

``lag-start``           (driver) every worker starts sampling its loop lag and timing its
                        garbage collections, and answers with ``started-<index>``
``lag-stop``            (driver) every worker stops and writes ``lag-<index>.json``: what the
                        single worker's ``LAG`` line carries (benchmarks.runner), plus its
                        index, the number of workers and its pid
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Final

from openrtc_core import WorkerIdentity, hookimpl, worker_identity
from openrtc_testing.measure import GcPauses, LoopLagMonitor

from .lag import LAG_INTERVAL_S, lag_report

LAG_DIR_ENV: Final = "OPENRTC_BENCH_LAG_DIR"
"""The directory through which the driver steers each worker's loop-lag sampling."""
LAG_START: Final = "lag-start"
LAG_STOP: Final = "lag-stop"
CONTROL_POLL_S: Final = 0.05
"""How often a worker looks for the driver's control files (a stat, nothing more)."""
LIVEKIT_LEVELS: Final = {"WARNING": "warn", "CRITICAL": "critical"}


def started_file(directory: Path, index: int) -> Path:
    """What worker `index` writes once it samples its loop."""
    return directory / f"started-{index}"


def lag_file(directory: Path, index: int) -> Path:
    """Worker `index`'s loop lag, written at the driver's ``lag-stop``."""
    return directory / f"lag-{index}.json"


def write_atomically(path: Path, text: str) -> None:
    """Write `path` whole, so that a reader polling for it never sees half of it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


async def _appears(path: Path) -> None:
    # Polled: the driver, another process, creates the file. A stat every 50 ms.
    while not os.path.exists(path):  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(CONTROL_POLL_S)


class WorkerLagProbe:
    """A worker plugin: in each supervised worker, the loop lag and garbage-collection
    pauses between the driver's ``lag-start`` and ``lag-stop`` (see the module's docstring).

    It starts following the control files from ``openrtc_worker_started``, in the worker's
    own loop; in a process no supervisor started (``worker_identity()`` is None) it does
    nothing.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._task: asyncio.Task[None] | None = None

    @hookimpl
    def openrtc_worker_started(self) -> None:
        identity = worker_identity()
        if identity is None:
            return
        self._task = asyncio.get_running_loop().create_task(
            self._follow(identity), name="bench-lag-probe"
        )

    async def _follow(self, identity: WorkerIdentity) -> None:
        await _appears(self.directory / LAG_START)
        monitor = LoopLagMonitor(interval_s=LAG_INTERVAL_S)
        monitor.start()
        collections = GcPauses()
        collections.start()
        began = {"worker": identity.index, "pid": identity.pid, "started_at": time.time()}
        write_atomically(started_file(self.directory, identity.index), json.dumps(began))
        await _appears(self.directory / LAG_STOP)
        await monitor.stop()
        collections.stop()
        report = {
            "worker": identity.index,
            "workers": identity.count,
            "pid": identity.pid,
            **lag_report(monitor, collections, None),
        }
        write_atomically(lag_file(self.directory, identity.index), json.dumps(report))


def supervise(workers: int, log_level: str) -> int:
    """Become the supervisor of `workers` workers of benchmarks.openrtc_worker's pool, with
    simulation and the lag probe in each; returns its exit status once they all drained."""
    from openrtc_testing.simulation import Simulation

    from .openrtc_worker import pool

    # The supervisor's own lines (workers started, drained, died) stay in the log.
    logging.getLogger("openrtc.workers").setLevel(logging.INFO)
    level = log_level.upper()
    plugins = [
        Simulation(os.environ["LIVEKIT_URL"]),
        WorkerLagProbe(Path(os.environ[LAG_DIR_ENV])),
    ]
    try:
        pool.run(
            ["start", "--log-level", LIVEKIT_LEVELS.get(level, level.lower())],
            prog_name="openrtc",
            workers=workers,
            plugins=plugins,
        )
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
