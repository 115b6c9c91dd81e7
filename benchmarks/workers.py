"""What a supervisor's workers cost and how fast a dead one comes back:
``python -m benchmarks.workers``.

For each worker count, the real supervisor (``openrtc start --workers N`` with simulation
on) runs the benchmark pool against a loopback dispatch server; once every worker has
registered and settled, the PSS of the supervisor and of each worker is read. One worker
(``--workers 1``) is a plain OpenRTC worker with no supervisor: the base. What N workers
would cost without the shared prewarm is N times that base.

Then, with two workers, one worker is killed with SIGKILL `--kills` times (each after its
replacement ran past the quick-crash window, so the restart delay is the first one, 0.5 s):
the time from the kill to the replacement's registration with LiveKit, and to the
supervisor's exit after SIGTERM with no call live.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final

from openrtc_core import child_pids, pss_mib
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.measure import percentile

from .arguments import OneLineParser, add_numeric_options
from .provenance import package_version, source_revision, uncreatable_dir
from .tables import number, terminal

TARGET: Final = "benchmarks.openrtc_worker:pool"
SETTLE_S: Final = 3.0
QUICK_CRASH_S: Final = 10.5
"""A little past the supervisor's quick-crash window: each kill restarts after 0.5 s."""
DEFAULT_OUT: Final = Path("benchmarks/results/workers")


def _pss_mib(pid: int) -> float:
    used = pss_mib(pid)
    if used is None:
        raise RuntimeError(f"process {pid} is gone")
    return used


class Fleet:
    """One supervisor subprocess and the loopback server its workers register with."""

    def __init__(self, lk: LoopbackDispatchServer, proc: asyncio.subprocess.Process) -> None:
        self.lk = lk
        self.proc = proc

    def live(self) -> int:
        return sum(1 for worker in self.lk.workers if not worker.closed)

    async def until(self, condition: Any, timeout: float, what: str) -> float:
        """Wait for `condition`; the seconds it took."""
        started = time.monotonic()
        while not condition():
            if self.proc.returncode is not None:
                raise RuntimeError(f"the supervisor exited while waiting for {what}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"no {what} within {timeout:g} s")
            await asyncio.sleep(0.01)
        return time.monotonic() - started


@contextlib.asynccontextmanager
async def fleet(workers: int, log: Path) -> AsyncIterator[Fleet]:
    async with LoopbackDispatchServer() as lk:
        env = {
            **os.environ,
            **lk.worker_env(),
            "LIVEKIT_LOG_LEVEL": "warn",
            "OPENRTC_DISABLE_PLUGINS": "deploy",  # not openrtc-deploy's controller, where installed
        }
        with log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "openrtc_testing.supervised",
                TARGET,
                "--workers",
                str(workers),
                env=env,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        running = Fleet(lk, proc)
        try:
            await running.until(lambda: running.live() == workers, 180, f"{workers} workers")
            yield running
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def memory(workers: int, log: Path) -> dict[str, Any]:
    async with fleet(workers, log) as running:
        await asyncio.sleep(SETTLE_S)
        if workers == 1:
            worker_pss = [_pss_mib(running.proc.pid)]
            supervisor = 0.0
        else:
            worker_pss = [_pss_mib(pid) for pid in child_pids(running.proc.pid)]
            supervisor = _pss_mib(running.proc.pid)
        running.proc.send_signal(signal.SIGTERM)
        await running.proc.wait()
    return {
        "workers": workers,
        "supervisor_pss_mib": round(supervisor, 1),
        "worker_pss_mib": [round(value, 1) for value in worker_pss],
        "total_pss_mib": round(supervisor + sum(worker_pss), 1),
    }


async def restarts(kills: int, log: Path) -> dict[str, Any]:
    back: list[float] = []
    async with fleet(2, log) as running:
        for _ in range(kills):
            await asyncio.sleep(QUICK_CRASH_S)
            victim = child_pids(running.proc.pid)[0]
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            await running.until(lambda: running.live() == 1, 30, "the dead worker's leave")
            await running.until(lambda: running.live() == 2, 60, "the replacement")
            back.append(time.monotonic() - killed)
        started = time.monotonic()
        running.proc.send_signal(signal.SIGTERM)
        status = await running.proc.wait()
        drained = time.monotonic() - started
    return {
        "kills": kills,
        "kill_to_registered_s": {
            "p50": round(percentile(back, 50), 3),
            "max": round(max(back), 3),
            "all": [round(value, 3) for value in back],
        },
        "sigterm_to_exit_idle_s": round(drained, 3),
        "exit_status": status,
    }


MEMORY_HEADERS: Final = (
    "workers",
    "supervisor",
    "each worker (PSS MiB)",
    "total",
    "unshared",
    "added/worker",
)


def report(figures: dict[str, Any]) -> str:
    rows = figures["memory"]
    base = next((row["total_pss_mib"] for row in rows if row["workers"] == 1), None)
    memory = []
    for row in rows:
        count = row["workers"]
        added = None
        if base is not None and count > 1:
            added = (row["total_pss_mib"] - base) / (count - 1)
        memory.append(
            [
                str(count),
                f"{row['supervisor_pss_mib']:.1f}",
                ", ".join(f"{value:.1f}" for value in row["worker_pss_mib"]),
                f"{row['total_pss_mib']:.1f}",
                number(None if base is None else base * count, missing="-"),
                number(added, missing="-"),
            ]
        )
    lines = terminal(MEMORY_HEADERS, memory, ">><>>>")
    restart = figures.get("restarts")
    if restart:
        back = restart["kill_to_registered_s"]
        lines.append(
            f"SIGKILL to the replacement registered ({restart['kills']} kills): "
            f"p50 {back['p50']:.2f} s, max {back['max']:.2f} s (includes the 0.5 s backoff)"
        )
        lines.append(
            f"SIGTERM to exit with no call live: {restart['sigterm_to_exit_idle_s']:.2f} s "
            f"(exit status {restart['exit_status']})"
        )
    return "\n".join(lines)


async def measure(counts: Sequence[int], kills: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "supervisor.log"
        figures: dict[str, Any] = {
            "command": " ".join(["python -m benchmarks.workers", *sys.argv[1:]]),
            "revision": source_revision(),
            "livekit_agents": package_version("livekit-agents"),
            "cpus": len(os.sched_getaffinity(0)),
            "memory": [await memory(count, log) for count in counts],
        }
        if kills:
            figures["restarts"] = await restarts(kills, log)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m benchmarks.workers", description=__doc__)
    parser.add_argument(
        "--counts",
        default="1,2,4",
        help="worker counts to measure memory for, comma-separated; 1 is the base (1,2,4)",
    )
    add_numeric_options(parser, [("--kills", int, 0, 5, "workers killed to time restarts")])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"({DEFAULT_OUT})")
    args = parser.parse_args(argv)
    try:
        counts = sorted({int(part) for part in args.counts.split(",") if part.strip()})
    except ValueError:
        parser.error(f"--counts {args.counts!r}: use whole numbers, e.g. 1,2,4")
    if not counts or counts[0] < 1:
        parser.error(f"--counts {args.counts!r}: use worker counts of at least 1")
    problem = uncreatable_dir(args.out)
    if problem:
        parser.error(f"--out {args.out}: {problem}")
    figures = asyncio.run(measure(counts, args.kills))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "workers.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(report(figures))
    print(f"figures written to {args.out / 'workers.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
