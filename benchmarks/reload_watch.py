"""What watching a project costs the reloader itself, with no worker and no calls around it.

    python -m benchmarks.reload_watch                          # 3 runs, 5 saves each
    python -m benchmarks.reload_watch --unrelated-files 50000  # a venv beside the agent

Each run writes :mod:`benchmarks.reload`'s project (``--unrelated-files`` adds a virtualenv of
that many tiny files beside the agent's module, as a flat project has it), starts the
``watch`` reloader on its pool in this process's loop, and saves ``support.py`` (as an editor
does) until the reloader applies it: ``ready`` is from starting the reloader to that first
apply (its start, the watcher's setup, one reload). Then ``--saves`` saves, each waited for:
``applied`` is from the save to the new version being in the pool (includes the watcher's
150 ms debounce). The loop's lag (a task sleeping 5 ms) is reported while starting and during
the saves. On a shared machine the figures wander: compare runs taken side by side. Nothing
is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from openrtc_core import load_pool
from openrtc_reload import ReloadContext, WatchReloader
from openrtc_testing.measure import LoopLagMonitor
from openrtc_testing.trees import virtualenv_like

from .arguments import OneLineParser, add_numeric_options
from .reload import STAMPS_ENV, save, spread, write_project

LAG_INTERVAL_S: Final = 0.005
RETRY_S: Final = 0.5
WAIT_S: Final = 60.0


async def applied(pool: Any, support: Path, tag: int, retry: bool) -> float:
    """Save `support` with reply tag `tag` and wait for its new version; seconds taken. With
    `retry`, save again (a new tag) every half second until one is applied."""
    before = pool.view().agent_versions["support"]
    began = time.perf_counter()
    while time.perf_counter() - began < WAIT_S:
        text = await asyncio.to_thread(support.read_text)
        save(support, re.sub(r'TAG = "[^"]*"', f'TAG = "v{tag}"', text))
        saved = time.perf_counter()
        while time.perf_counter() - saved < (RETRY_S if retry else WAIT_S):
            if pool.view().agent_versions["support"] != before:
                return time.perf_counter() - saved
            await asyncio.sleep(0.005)
        tag += 1000
    raise RuntimeError("a save was not applied within 60 s")


async def one_run(root: Path, a: argparse.Namespace) -> dict[str, Any]:
    app, support = write_project(root / "project", "coroutine", 10)
    if a.unrelated_files:
        virtualenv_like(support.parent, a.unrelated_files)
    os.environ[STAMPS_ENV] = str(root / "stamps.jsonl")
    pool = load_pool(str(app))
    lag = LoopLagMonitor(interval_s=LAG_INTERVAL_S)
    lag.start()
    reloader = WatchReloader(ReloadContext(pool=pool, role="worker"))
    began = time.perf_counter()
    await reloader.start()
    started_s = time.perf_counter() - began
    await applied(pool, support, 2, retry=True)
    ready_s = time.perf_counter() - began
    starting = list(lag.samples)
    saves = [await applied(pool, support, n, retry=False) for n in range(3, 3 + a.saves)]
    during = lag.samples[len(starting) :]
    await lag.stop()
    await reloader.aclose()
    return {
        "start_ms": started_s * 1000,
        "ready_ms": ready_s * 1000,
        "applied_ms": [s * 1000 for s in saves],
        "lag_ms_starting": spread([s * 1000 for s in starting]),
        "lag_ms_saves": spread([s * 1000 for s in during]),
    }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = OneLineParser(
        prog="python -m benchmarks.reload_watch", description=__doc__.split("\n\n")[0]
    )
    add_numeric_options(
        parser,
        (
            ("--unrelated-files", int, 0, 0, "files of a virtualenv beside the agent's module"),
            ("--runs", int, 1, 3, "runs, each on a new project"),
            ("--saves", int, 1, 5, "saves measured per run"),
        ),
    )
    parser.add_argument("--json", dest="json_path", type=Path, help="raw results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="openrtc-reload-watch-") as tmp:
            runs.append(asyncio.run(one_run(Path(tmp), args)))
    saves = [ms for run in runs for ms in run["applied_ms"]]
    figures = {
        "unrelated_files": args.unrelated_files,
        "start_ms_median": statistics.median(r["start_ms"] for r in runs),
        "ready_ms_median": statistics.median(r["ready_ms"] for r in runs),
        "applied_ms": spread(saves),
        "lag_ms_starting_max_median": statistics.median(
            r["lag_ms_starting"]["max"] or 0.0 for r in runs
        ),
        "lag_ms_saves_p99_median": statistics.median(r["lag_ms_saves"]["p99"] or 0.0 for r in runs),
        "runs": runs,
    }
    if args.json_path:
        args.json_path.write_text(json.dumps(figures, indent=1))
    print(json.dumps({k: v for k, v in figures.items() if k != "runs"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
