"""The worker subprocess of one benchmark run: ``python -m benchmarks.runner plain|openrtc``.

It runs one worker (the plain livekit worker or the OpenRTC pool, configured through the
environment, see :mod:`benchmarks.workload`) against the dispatch server at ``LIVEKIT_URL``,
in livekit's dev mode, and measures its own event loop. The driver steers it through stdin,
one command per line:

``lag start``  start sampling the loop lag (just before the calls are dispatched)
``lag stop``   stop, and print ``LAG {json}`` on stdout: the samples' statistics, the
               garbage collector's pauses, how long livekit's job processes took to
               initialise (process executors), and the series itself (wall time, lag), so
               the driver can cut it in phases
``quit``       close the worker and exit (so does the end of stdin)

``python -m benchmarks.runner supervised --workers N`` is variant E: this process becomes
openrtc-workers' supervisor with N forked OpenRTC workers, which reads no stdin, is stopped
with SIGTERM and measures its workers' loops through files (see
:mod:`benchmarks.supervised_worker`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, Final

from livekit.agents import AgentServer

from openrtc_testing.measure import GcPauses, LoopLagMonitor, percentile

from .lag import LAG_INTERVAL_S, lag_report

LAG_PREFIX: Final = "LAG "
CLOSE_TIMEOUT_S: Final = 60.0
LIVEKIT_LOGGER: Final = "livekit.agents"
KINDS: Final = ("plain", "openrtc", "supervised")


def build_server(kind: str) -> AgentServer:
    """The worker to run; imported lazily so each kind loads only its own code."""
    if kind == "plain":
        from .plain_worker import server

        return server
    if kind == "openrtc":
        from openrtc_testing.simulation import Simulation

        from .openrtc_worker import pool

        return pool.create_server(plugins=[Simulation(os.environ["LIVEKIT_URL"])], port=0)
    raise ValueError(f"unknown worker kind {kind!r}: use 'plain' or 'openrtc'")


class ProcessInitTimes(logging.Filter):
    """Collects livekit's "process initialized" timings (job process started to ready).

    A filter on livekit's logger, so the INFO records it needs can be let through to it
    while the worker's log keeps only records at `keep_level` and above.
    """

    def __init__(self, keep_level: int) -> None:
        super().__init__()
        self.keep_level = keep_level
        self.seconds: list[float] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() == "process initialized":
            elapsed = getattr(record, "elapsed_time", None)
            if isinstance(elapsed, int | float):
                self.seconds.append(float(elapsed))
        return record.levelno >= self.keep_level

    def install(self) -> None:
        livekit_logger = logging.getLogger(LIVEKIT_LOGGER)
        livekit_logger.addFilter(self)
        if livekit_logger.getEffectiveLevel() > logging.INFO:
            livekit_logger.setLevel(logging.INFO)

    def summary(self) -> dict[str, Any]:
        return {
            "count": len(self.seconds),
            "p50_s": percentile(self.seconds, 50) if self.seconds else None,
            "max_s": max(self.seconds, default=None),
        }


async def _commands() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def serve(kind: str, log_level: int) -> int:
    inits = ProcessInitTimes(keep_level=log_level)
    inits.install()
    server = build_server(kind)
    run_task = asyncio.create_task(server.run(devmode=True), name="bench-worker")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reader = await _commands()
    monitor: LoopLagMonitor | None = None
    collections = GcPauses()

    async def read_commands() -> None:
        nonlocal monitor, collections
        while True:
            line = (await reader.readline()).decode().strip()
            if not line or line == "quit":
                return
            if line == "lag start":
                monitor = LoopLagMonitor(interval_s=LAG_INTERVAL_S)
                monitor.start()
                collections = GcPauses()
                collections.start()
            elif line == "lag stop":
                if monitor is not None:
                    await monitor.stop()
                collections.stop()
                report = lag_report(monitor, collections, inits.summary())
                sys.stdout.write(LAG_PREFIX + json.dumps(report) + "\n")
                sys.stdout.flush()

    commands = asyncio.create_task(read_commands(), name="bench-commands")
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({run_task, commands, stopped}, return_when=asyncio.FIRST_COMPLETED)
    failed = run_task.done() and run_task.exception() is not None
    if failed:
        logging.getLogger("benchmarks.runner").error(
            "the worker stopped", exc_info=run_task.exception()
        )
    for task in (commands, stopped):
        task.cancel()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.aclose(), CLOSE_TIMEOUT_S)
    if not run_task.done():
        run_task.cancel()
    with contextlib.suppress(BaseException):
        await run_task
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.runner")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "--workers", type=int, default=2, help="supervised: how many workers to fork"
    )
    args = parser.parse_args(argv)
    if args.kind == "supervised":
        # Imported here: the plain worker (A, B) loads none of OpenRTC's code.
        from .supervised_worker import supervise

        return supervise(args.workers, args.log_level)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    return asyncio.run(serve(args.kind, logging.getLogger().getEffectiveLevel()))


if __name__ == "__main__":
    sys.exit(main())
