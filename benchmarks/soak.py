"""Soak benchmark: does a worker's idle memory come back after thousands of calls?

``python -m benchmarks.soak`` drives simulated text calls through one worker per variant
(by default B, plain livekit's thread executor, and C, OpenRTC's coroutine isolation; see
:mod:`benchmarks.variants`) in waves: each wave dispatches ``--wave`` calls, at most
``--concurrency`` at a time, each caller speaking ``--turns`` lines with no pause and no hold
(a throughput workload: as many calls through the worker as it takes). After each wave the
driver waits until the worker has no job left, then samples the worker's process tree's
PSS three times and keeps the minimum: the *idle PSS after the wave*. The worker also reports
what it sees from inside (garbage collector counts, tracked objects, glibc's ``mallinfo2``,
pymalloc's arenas), so memory the interpreter still holds can be told from native memory
in use and from free memory malloc does not give back.

The verdict: after ``--warmup`` waves, the idle PSS must stay within 5% of the first
post-warm-up sample. The results file (``--json``) is rewritten after every wave, so a crash
or Ctrl-C keeps every wave that finished; ``--from-json`` renders one or more such files.

The worker subprocess is this module too (``python -m benchmarks.soak _worker plain|openrtc``):
it runs :func:`benchmarks.runner.build_server`'s worker and answers ``stats`` on stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import itertools
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

from .provenance import (
    package_version,
    source_revision,
    uncreatable_dir,
    unwritable_file,
)
from .soak_report import TARGET_PCT, render_console, run_label, write_report
from .variants import ONE_WORKER_VARIANTS, Variant
from .workload import BURST_PAUSE_S, CALLER_TURNS, call_metadata

ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS_DIR: Final = Path(tempfile.gettempdir()) / "openrtc-soak"

DEFAULT_CALLS: Final = 20_000
DEFAULT_WAVE: Final = 200
DEFAULT_CONCURRENCY: Final = 50
DEFAULT_TURNS: Final = 3
DEFAULT_WARMUP: Final = 2
"""After warm-up, idle PSS stays within this share of the first post-warm-up sample."""

IDLE_SAMPLES: Final = 3
IDLE_INTERVAL_S: Final = 0.5
SETTLE_S: Final = 1.0
"""Seconds between the worker reporting no job and the first idle sample."""
IDLE_WAIT_S: Final = 60.0
"""How long the driver waits for the worker to report no job after a wave."""
CALL_TIMEOUT_S: Final = 180.0
REGISTER_TIMEOUT_S: Final = 120.0
REDISPATCH_DELAY_S: Final = 0.25
WORKER_EXIT_TIMEOUT_S: Final = 30.0
STATS_TIMEOUT_S: Final = 60.0
STATS_PREFIX: Final = "SOAK "
WORKER_COMMAND: Final = "_worker"
ENV_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
GC_THRESHOLD_ENV: Final = "OPENRTC_SOAK_GC_THRESHOLD"
"""An experiment knob (``--env OPENRTC_SOAK_GC_THRESHOLD=700,10,10``): the soak worker sets
these collector thresholds once it is up, after whatever the worker's own set-up did."""
SMAPS_FIELDS: Final = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem")


# -- inside the worker -------------------------------------------------------------------------


MALLINFO_FIELDS: Final = (
    "arena",
    "ordblks",
    "smblks",
    "hblks",
    "hblkhd",
    "usmblks",
    "fsmblks",
    "uordblks",
    "fordblks",
    "keepcost",
)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO_FIELDS]


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def mallinfo2() -> dict[str, int] | None:
    """glibc's heap figures for the whole process (every arena), in bytes; None off glibc.

    ``arena`` bytes obtained from the system with brk/mmap for the heaps, ``hblkhd`` in
    blocks mmapped on their own (large allocations), ``uordblks`` in use, ``fordblks`` free
    but kept by malloc (fragmentation, or a high-water mark not trimmed), ``keepcost`` at the
    top of the main heap, releasable by ``malloc_trim``.
    """
    libc = _libc()
    fn = getattr(libc, "mallinfo2", None) if libc is not None else None
    if fn is None:
        return None
    fn.restype = _MallInfo2
    info = fn()
    return {name: int(getattr(info, name)) for name in MALLINFO_FIELDS}


def malloc_trim() -> bool:
    """glibc's ``malloc_trim(0)``: give free heap memory back to the system (every arena)."""
    libc = _libc()
    fn = getattr(libc, "malloc_trim", None) if libc is not None else None
    return bool(fn(0)) if fn is not None else False


_PYMALLOC_LINE: Final = re.compile(r"^#?\s*(?P<key>[^=]+?)\s*=\s*(?P<value>[\d,]+)\s*$")
_PYMALLOC_KEYS: Final = {
    "arenas allocated total": "arenas_allocated_total",
    "arenas reclaimed": "arenas_reclaimed",
    "arenas highwater mark": "arenas_highwater",
    "arenas allocated current": "arenas_current",
    "bytes in allocated blocks": "allocated_bytes",
    "bytes in available blocks": "available_bytes",
    "bytes lost to pool headers": "pool_header_bytes",
    "bytes lost to quantization": "quantization_bytes",
    "bytes lost to arena alignment": "alignment_bytes",
    "Total": "total_bytes",
}


def parse_pymalloc_stats(text: str) -> dict[str, int]:
    """The figures of ``sys._debugmallocstats()`` this benchmark keeps (see _PYMALLOC_KEYS)."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        match = _PYMALLOC_LINE.match(line.strip())
        if match is None:
            continue
        key = match["key"].strip()
        if key.endswith("bytes/arena"):
            found["arena_bytes"] = int(match["value"].replace(",", ""))
        elif "unused pools" in key:
            found["unused_pool_bytes"] = int(match["value"].replace(",", ""))
        elif key in _PYMALLOC_KEYS:
            found[_PYMALLOC_KEYS[key]] = int(match["value"].replace(",", ""))
    return found


def pymalloc_stats() -> dict[str, int] | None:
    """pymalloc's arenas and blocks (``sys._debugmallocstats`` writes them to fd 2)."""
    with tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(capture.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    found = parse_pymalloc_stats(text)
    return found or None


class GcClock:
    """How long the collector stopped the world, per generation, since the last `take()`:
    wall time (what the loop waits) and the loop thread's CPU time (what the collection
    itself costs, without the time other processes on the machine took the CPU from it).

    Counts and sums only, so the worker's own memory stays flat however long it runs.
    """

    def __init__(self) -> None:
        self._began = 0.0
        self._began_cpu = 0.0
        self._figures: dict[str, list[float]] = {}

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            self._began_cpu = time.thread_time()
            return
        seconds = time.perf_counter() - self._began
        cpu = time.thread_time() - self._began_cpu
        entry = self._figures.setdefault(str(info["generation"]), [0, 0.0, 0.0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += seconds
        entry[2] = max(entry[2], seconds)
        entry[3] += cpu
        entry[4] = max(entry[4], cpu)

    def take(self) -> dict[str, dict[str, float]]:
        figures, self._figures = self._figures, {}
        return {
            generation: {
                "count": int(count),
                "total_s": round(total, 4),
                "max_s": round(most, 4),
                "cpu_total_s": round(cpu_total, 4),
                "cpu_max_s": round(cpu_most, 4),
            }
            for generation, (count, total, most, cpu_total, cpu_most) in sorted(figures.items())
        }


GC_CLOCK: Final = GcClock()


LIVE_CENSUS_ENV: Final = "OPENRTC_SOAK_LIVE_CENSUS"
"""Set (``--live-census``) for the worker to count, at full collections with calls live,
what the collection walks (:class:`LiveCensus`). Each count walks the worker's heap inside
the collection: it lengthens the pauses it measures."""
LIVE_CENSUS_DETAILED: Final = 2
"""Full collections per stats report whose objects are counted in detail."""


def _code_of(obj: object) -> types.CodeType | None:
    """The code of a frame, coroutine or function; None for anything else (checked by type:
    other objects may carry an attribute of the same name)."""
    if isinstance(obj, types.FrameType):
        return obj.f_code
    if isinstance(obj, types.CoroutineType):
        return obj.cr_code
    if isinstance(obj, types.FunctionType):
        return obj.__code__
    return None


def _code_place(obj: object) -> str | None:
    """Where a function or coroutine was defined, or a class named: what made `obj`."""
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    code = _code_of(obj)
    if code is None:
        return None
    where = code.co_filename.rsplit("/site-packages/", 1)[-1]
    return f"{type(obj).__name__} {code.co_qualname} ({where}:{code.co_firstlineno})"


def _top(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: -kv[1])[:CENSUS_TOP]


def walked_census(objects: Sequence[object]) -> dict[str, Any]:
    """`objects` counted by type, by the module of their type, by the references each type's
    objects hold (what a collection visits), and functions, coroutines and classes by where
    they were made."""
    kinds: dict[str, int] = {}
    modules: dict[str, int] = {}
    references: dict[str, int] = {}
    places: dict[str, int] = {}
    for obj in objects:
        name = _type_name(obj)
        kinds[name] = kinds.get(name, 0) + 1
        module = str(type(obj).__module__ or "?")  # a descriptor on some C types
        modules[module] = modules.get(module, 0) + 1
        references[name] = references.get(name, 0) + len(gc.get_referents(obj))
        place = _code_place(obj)
        if place is not None:
            places[place] = places.get(place, 0) + 1
    return {
        "tracked": len(objects),
        "references": sum(references.values()),
        "types": _top(kinds),
        "modules": _top(modules),
        "references_by_type": _top(references),
        "made_by": _top(places),
    }


class LiveCensus:
    """What full collections walk while calls are live, so the objects each live session adds
    can be told from the worker's own (fit ``tracked`` against ``jobs``).

    Every full collection with jobs live records ``(jobs, tracked objects)``; the first
    :data:`LIVE_CENSUS_DETAILED` of each report are counted in detail (:func:`walked_census`).
    """

    def __init__(self, jobs: Callable[[], int]) -> None:
        self._jobs = jobs
        self._points: list[tuple[int, int]] = []
        self._detailed: list[dict[str, Any]] = []

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase != "start" or info["generation"] != 2:
            return
        jobs = self._jobs()
        if jobs <= 0:
            return
        objects = gc.get_objects()  # generations 0 to 2: what a full collection walks
        self._points.append((jobs, len(objects)))
        if len(self._detailed) < LIVE_CENSUS_DETAILED:
            self._detailed.append({"jobs": jobs, **walked_census(objects)})

    def take(self) -> dict[str, Any]:
        """The full collections' figures since the last take, and what is tracked now (with
        no call live: what the calls so far left behind)."""
        points, self._points = self._points, []
        detailed, self._detailed = self._detailed, []
        now: dict[str, int] = {}
        for obj in gc.get_objects():
            name = _type_name(obj)
            now[name] = now.get(name, 0) + 1
        return {"points": points, "detailed": detailed, "tracked_now": _top(now)}


LIVE_CENSUS: Final[list[LiveCensus]] = []
"""The worker's :class:`LiveCensus`, when :data:`LIVE_CENSUS_ENV` asks for one."""


def worker_stats(server: Any) -> dict[str, Any]:
    """What the worker reports about itself; cheap enough for once a wave."""
    try:
        jobs = len(server.active_jobs)
    except AttributeError:  # the job pool is not built yet
        jobs = -1
    gen_stats = gc.get_stats()
    return {
        "jobs": jobs,
        "threads": threading.active_count(),
        "tasks": len(asyncio.all_tasks()),
        "gc_count": list(gc.get_count()),
        "gc_collections": [s["collections"] for s in gen_stats],
        "gc_collected": [s["collected"] for s in gen_stats],
        "gc_threshold": list(gc.get_threshold()),
        "gc_frozen": gc.get_freeze_count(),
        "gc_objects": len(gc.get_objects()),
        "gc_pauses": GC_CLOCK.take(),
        "mallinfo2": mallinfo2(),
        "pymalloc": pymalloc_stats(),
        **({"live_census": LIVE_CENSUS[0].take()} if LIVE_CENSUS else {}),
    }


CENSUS_TOP: Final = 25


def _type_name(obj: object) -> str:
    kind = type(obj)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def garbage_census() -> dict[str, Any]:
    """Collect with DEBUG_SAVEALL and count the unreachable objects by type, then free them.

    Run after ``gc off`` and a wave of calls, it counts every object the calls left in
    reference cycles: what only the cyclic collector frees. Re-enables the collector.
    """
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        began = time.perf_counter()
        gc.collect()
        seconds = time.perf_counter() - began
        counts: dict[str, int] = {}
        modules: dict[str, int] = {}
        for obj in gc.garbage:
            name = _type_name(obj)
            counts[name] = counts.get(name, 0) + 1
            code = None if isinstance(obj, types.FunctionType) else _code_of(obj)
            if code is not None:  # frames and coroutines
                where = f"{type(obj).__name__} {code.co_qualname} ({code.co_filename})"
                modules[where] = modules.get(where, 0) + 1
        total = len(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    gc.collect()
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:CENSUS_TOP]
    frames = sorted(modules.items(), key=lambda kv: -kv[1])[:CENSUS_TOP]
    return {"garbage": total, "seconds": seconds, "types": top, "frames": frames}


async def _stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def _say(payload: dict[str, Any]) -> None:
    sys.stdout.write(STATS_PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


async def serve_worker(kind: str) -> int:
    """The worker subprocess: run the server, answer the driver's commands on stdin.

    ``jobs``     print ``SOAK {"jobs": n}``: jobs the worker still runs
    ``stats``    print ``SOAK {...}``: :func:`worker_stats`
    ``collect``  ``gc.collect()``, then print how long it took and what it found
    ``trim``     ``malloc_trim(0)``, then print whether memory was released
    ``gc off``   ``gc.collect()``, then ``gc.disable()``: every cycle made from now on stays
    ``census``   collect with ``gc.DEBUG_SAVEALL``, print the garbage's types, free it,
                 ``gc.enable()``: what cyclic garbage the calls since ``gc off`` made
    ``quit``     close the server and exit (so does the end of stdin)
    """
    from .runner import CLOSE_TIMEOUT_S, build_server

    server = build_server(kind)
    GC_CLOCK.start()
    if os.environ.get(LIVE_CENSUS_ENV, "").strip() not in ("", "0"):

        def live_jobs() -> int:
            try:
                return len(server.active_jobs)
            except AttributeError:
                return 0

        LIVE_CENSUS.append(LiveCensus(live_jobs))
        LIVE_CENSUS[0].start()
    run_task = asyncio.create_task(server.run(devmode=True), name="soak-worker")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reader = await _stdin_reader()

    threshold = os.environ.get(GC_THRESHOLD_ENV, "").strip()

    async def commands() -> None:
        nonlocal threshold
        while True:
            line = (await reader.readline()).decode().strip()
            if threshold:  # the first command comes after the worker registered: after the
                # pool's own set-up (its prewarm, and OpenRTC's tune_gc)
                gc.set_threshold(*(int(part) for part in threshold.split(",")))
                threshold = ""
            if not line or line == "quit":
                return
            if line == "jobs":
                try:
                    _say({"jobs": len(server.active_jobs)})
                except AttributeError:
                    _say({"jobs": -1})
            elif line == "stats":
                _say(worker_stats(server))
            elif line == "collect":
                began = time.perf_counter()
                found = gc.collect()
                _say({"collected": found, "seconds": time.perf_counter() - began})
            elif line == "trim":
                _say({"trimmed": malloc_trim()})
            elif line == "gc off":
                found = gc.collect()
                gc.disable()
                _say({"collected": found, "gc": "disabled"})
            elif line == "census":
                _say(garbage_census())
            else:
                _say({"error": f"unknown command {line!r}"})

    reading = asyncio.create_task(commands(), name="soak-commands")
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({run_task, reading, stopped}, return_when=asyncio.FIRST_COMPLETED)
    failed = run_task.done() and run_task.exception() is not None
    for task in (reading, stopped):
        task.cancel()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.aclose(), CLOSE_TIMEOUT_S)
    if not run_task.done():
        run_task.cancel()
    with contextlib.suppress(BaseException):
        await run_task
    return 1 if failed else 0


def worker_main(argv: Sequence[str]) -> int:
    import logging

    if len(argv) != 1 or argv[0] not in ("plain", "openrtc"):
        print("error: usage: python -m benchmarks.soak _worker plain|openrtc", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return asyncio.run(serve_worker(argv[0]))


# -- the driver: PSS from /proc ---------------------------------------------------------------


def tree_memory(pid: int) -> dict[str, float]:
    """The :data:`SMAPS_FIELDS` of a process and its descendants summed, in MiB, with their
    count; one gone since it was listed adds 0."""
    from openrtc_core import process_tree, smaps_rollup

    tree = process_tree(pid)
    total = dict.fromkeys(SMAPS_FIELDS, 0.0)
    for member in tree:
        rollup = smaps_rollup(member) or {}
        for name in SMAPS_FIELDS:
            total[name] += rollup.get(name, 0.0)
    return {**total, "processes": float(len(tree))}


# -- the driver: settings ---------------------------------------------------------------------


class SoakParser(argparse.ArgumentParser):
    """Reports a bad argument as one ``error:`` line naming it, and exits with status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def _variants(text: str) -> tuple[str, ...]:
    keys = tuple(part.strip().upper() for part in text.split(",") if part.strip())
    unknown = [k for k in keys if k not in ONE_WORKER_VARIANTS]
    if not keys or unknown:
        raise argparse.ArgumentTypeError(
            f"{text!r}: choose among {','.join(ONE_WORKER_VARIANTS)} (for example B,C)"
        )
    if len(set(keys)) != len(keys):
        raise argparse.ArgumentTypeError(f"{text!r}: name each variant once")
    return keys


def _whole(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", "").replace(",", ""))
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: use a whole number of at least {minimum}")
        return value

    return parse


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not ENV_KEY.fullmatch(key):
        raise argparse.ArgumentTypeError(
            f"{text!r}: use KEY=VALUE with KEY a variable name, like MALLOC_ARENA_MAX=2"
        )
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = SoakParser(
        prog="python -m benchmarks.soak",
        description="Run simulated calls through one worker per variant in waves, and after "
        "each wave measure the worker's PSS with no call live: does idle memory come back? "
        "Prints a table per variant with the verdict against the target (idle PSS within "
        f"{TARGET_PCT:g}%% of its first post-warm-up sample); writes the raw figures to --json "
        "after every wave and a Markdown report with a plot to --out.",
    )
    parser.add_argument(
        "--variants",
        type=_variants,
        default=("B", "C"),
        help="workers to soak, one after the other: B (livekit thread executor), C (OpenRTC "
        "coroutine); A and D (process executors) work too (default B,C)",
    )
    parser.add_argument(
        "--calls",
        type=_whole(1),
        default=DEFAULT_CALLS,
        help=f"calls per variant ({DEFAULT_CALLS})",
    )
    parser.add_argument(
        "--wave", type=_whole(1), default=DEFAULT_WAVE, help=f"calls per wave ({DEFAULT_WAVE})"
    )
    parser.add_argument(
        "--concurrency",
        type=_whole(1),
        default=DEFAULT_CONCURRENCY,
        help=f"calls live at once within a wave ({DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--turns",
        type=_whole(1),
        default=DEFAULT_TURNS,
        help=f"caller lines per call, no pause between them ({DEFAULT_TURNS})",
    )
    parser.add_argument(
        "--warmup",
        type=_whole(0),
        default=DEFAULT_WARMUP,
        help=f"first waves left out of the flatness verdict ({DEFAULT_WARMUP})",
    )
    parser.add_argument(
        "--env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set in the worker's environment, for every variant (repeatable), e.g. "
        "OPENRTC_GC=python, MALLOC_ARENA_MAX=2, PYTHONMALLOC=malloc",
    )
    parser.add_argument(
        "--release-probe",
        action="store_true",
        help="after each wave's idle sample, ask the worker for gc.collect() and then "
        "malloc_trim(0), sampling PSS after each: how much comes back. This changes what the "
        "next waves start from, so keep it out of runs whose verdict you publish",
    )
    parser.add_argument(
        "--census",
        action="store_true",
        help="count the cyclic garbage each wave makes: the worker's collector is disabled "
        "during the wave and the garbage counted by type after it (then freed). Changes the "
        "memory measured: for finding what makes cycles, not for a verdict",
    )
    parser.add_argument(
        "--live-census",
        action="store_true",
        help="at each full collection with calls live, count what it walks (tracked objects "
        "against live calls; the first two of each wave by type, module, references and "
        "where they were made), reported in each wave's worker stats. Lengthens the pauses it "
        "measures: for finding what a collection walks, not for a verdict",
    )
    parser.add_argument(
        "--json",
        dest="json_path",
        type=Path,
        help="raw figures, rewritten after every wave (default: a new "
        f"{RESULTS_DIR}/soak-<time>-<pid>.json)",
    )
    parser.add_argument(
        "--out", type=Path, help="write a Markdown report here, its plot (PNG) beside it"
    )
    parser.add_argument(
        "--logs", type=Path, help=f"worker logs (default: {RESULTS_DIR}/soak-<time>-<pid>-logs/)"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        action="append",
        help="render earlier --json files (repeatable: their runs side by side) without "
        "running anything; with --out, write the report too",
    )
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Everything that can be checked before a worker starts: a soak takes up to hours."""
    if args.out is not None:
        if args.out.suffix.lower() != ".md":
            parser.error(f"argument --out: {args.out} should be a Markdown file (.md)")
        problem = unwritable_file(args.out)
        if problem:
            parser.error(f"argument --out: {problem}")
    if args.from_json:
        return
    if args.wave > args.calls:
        parser.error(
            f"argument --wave: {args.wave} calls per wave is more than --calls {args.calls}"
        )
    if args.concurrency > args.wave:
        parser.error(
            f"argument --concurrency: {args.concurrency} calls at once is more than a wave "
            f"({args.wave})"
        )
    waves = -(-args.calls // args.wave)
    if args.warmup >= waves:
        parser.error(
            f"argument --warmup: {args.warmup} warm-up waves leave none of the {waves} wave(s) "
            "to judge; lower it or raise --calls"
        )
    if args.json_path is not None:
        problem = unwritable_file(args.json_path)
        if not problem and args.out is not None and args.out.resolve() == args.json_path.resolve():
            problem = "it is the same file as --out"
        if problem:
            parser.error(f"argument --json: {problem}")
    else:
        problem = uncreatable_dir(RESULTS_DIR)
        if problem:
            parser.error(f"argument --json: {problem} (the default place for results)")
    if args.logs is not None:
        problem = uncreatable_dir(args.logs)
        if problem:
            parser.error(f"argument --logs: {problem}")


# -- the driver: results file -----------------------------------------------------------------


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` with `data` in one step: a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=1)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def machine_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "glibc": "-".join(platform.libc_ver()),
        "livekit-agents": package_version("livekit-agents"),
        "livekit": package_version("livekit"),
        "revision": source_revision(),
    }


# -- the driver: one variant --------------------------------------------------------------------


class SoakWorker:
    """The worker subprocess, its stdout read in the background for SOAK lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read(), name="soak-worker-stdout")
        self._lock = asyncio.Lock()

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith(STATS_PREFIX):
                self.answers.put_nowait(json.loads(line[len(STATS_PREFIX) :]))

    async def ask(self, command: str, timeout: float = STATS_TIMEOUT_S) -> dict[str, Any] | None:
        """Send one command and wait for its answer (None when the worker is gone or slow)."""
        async with self._lock:
            if self.proc.stdin is None or self.proc.returncode is not None:
                return None
            while not self.answers.empty():  # a late answer to a command that timed out
                self.answers.get_nowait()
            try:
                self.proc.stdin.write(command.encode() + b"\n")
                await self.proc.stdin.drain()
                return await asyncio.wait_for(self.answers.get(), timeout)
            except (ConnectionError, TimeoutError):
                return None

    async def stop(self) -> int | None:
        if self.proc.stdin is not None and self.proc.returncode is None:
            with contextlib.suppress(ConnectionError, OSError):
                self.proc.stdin.write(b"quit\n")
                await self.proc.stdin.drain()
                self.proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), WORKER_EXIT_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        return self.proc.returncode


def caller_turns(count: int) -> tuple[str, ...]:
    """`count` caller lines: the workload's three, over again as needed."""
    return tuple(itertools.islice(itertools.cycle(CALLER_TURNS), count))


async def _call(lk: Any, room: str, metadata: str, deadline: float) -> dict[str, Any]:
    """One call: offered until accepted (as LiveKit's dispatcher does), then its report."""
    redispatches = 0
    while True:
        d = await lk.dispatch(room, job_metadata=metadata)
        if d.accepted or d.terminate or time.monotonic() >= deadline:
            break
        redispatches += 1
        await asyncio.sleep(REDISPATCH_DELAY_S)
    outcome: dict[str, Any] = {"job_id": d.job_id, "redispatches": redispatches}
    if not d.accepted:
        return {**outcome, "outcome": "not accepted", "error": d.error}
    try:
        report = await lk.wait_for_report(d.job_id, timeout=max(0.1, deadline - time.monotonic()))
    except TimeoutError:
        return {**outcome, "outcome": "no report", "error": "no report in time"}
    turns = [float(t["latency_s"]) for t in report.get("turns", [])]
    return {
        **outcome,
        "outcome": str(report.get("outcome", "unknown")),
        "error": str(report.get("error") or ""),
        "turns": turns,
    }


async def run_wave(
    lk: Any, variant: Variant, wave: int, size: int, concurrency: int, metadata: str
) -> dict[str, Any]:
    """`size` calls, at most `concurrency` at once; their outcomes, summed up."""
    gate = asyncio.Semaphore(concurrency)
    deadline = time.monotonic() + CALL_TIMEOUT_S + size / concurrency * 10

    async def gated(i: int) -> dict[str, Any]:
        async with gate:
            return await _call(lk, f"soak-{variant.key}-{wave}-{i}", metadata, deadline)

    began = time.monotonic()
    outcomes = await asyncio.gather(*(gated(i) for i in range(size)))
    wall = time.monotonic() - began
    for outcome in outcomes:
        lk.reports.pop(outcome["job_id"], None)
    turns = [t for o in outcomes for t in o.get("turns", [])]
    errors: dict[str, int] = {}
    for outcome in outcomes:
        if outcome["outcome"] != "completed":
            key = f"{outcome['outcome']}: {outcome['error']}"[:200]
            errors[key] = errors.get(key, 0) + 1
    turns_sorted = sorted(turns)
    return {
        "dispatched": size,
        "completed": sum(1 for o in outcomes if o["outcome"] == "completed"),
        "failures": sum(1 for o in outcomes if o["outcome"] != "completed"),
        "errors": errors,
        "redispatches": sum(o["redispatches"] for o in outcomes),
        "wall_s": round(wall, 3),
        "calls_per_s": round(size / wall, 2) if wall > 0 else None,
        "turn_p50_s": statistics.median(turns) if turns else None,
        "turn_p99_s": turns_sorted[min(len(turns_sorted) - 1, int(0.99 * len(turns_sorted)))]
        if turns
        else None,
        "_job_ids": [o["job_id"] for o in outcomes],
    }


async def idle_memory(pid: int) -> dict[str, Any]:
    """The tree's memory with nothing running: IDLE_SAMPLES samples, the minimum of each."""
    samples = []
    for i in range(IDLE_SAMPLES):
        if i:
            await asyncio.sleep(IDLE_INTERVAL_S)
        samples.append(await asyncio.to_thread(tree_memory, pid))
    pss = [s["Pss"] for s in samples]
    return {
        "pss_mb": round(min(pss), 2),
        "pss_samples_mb": [round(p, 2) for p in pss],
        "pss_anon_mb": round(min(s["Pss_Anon"] for s in samples), 2),
        "pss_file_mb": round(min(s["Pss_File"] for s in samples), 2),
        "rss_mb": round(min(s["Rss"] for s in samples), 2),
        "processes": int(max(s["processes"] for s in samples)),
    }


async def wait_idle(worker: SoakWorker) -> tuple[int | None, float]:
    """Wait until the worker reports no job (up to IDLE_WAIT_S); jobs left and time taken."""
    began = time.monotonic()
    jobs: int | None = None
    while time.monotonic() - began < IDLE_WAIT_S:
        answer = await worker.ask("jobs")
        jobs = None if answer is None else int(answer.get("jobs", -1))
        if jobs == 0 or answer is None:
            break
        await asyncio.sleep(0.25)
    return jobs, time.monotonic() - began


async def dump_stacks(pid: int, logs_dir: Path, key: str) -> str:
    """The worker stopped answering: its threads' stacks, by py-spy when it is installed.

    Returns where the dump went, or why there is none.
    """
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        return "the worker stopped answering; pip install py-spy to have its stacks dumped"
    path = logs_dir / f"{key}-{pid}-stacks-{int(time.time())}.txt"
    proc = await asyncio.create_subprocess_exec(
        spy,
        "dump",
        "--pid",
        str(pid),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        return "the worker stopped answering; py-spy dump timed out"
    await asyncio.to_thread(path.write_bytes, out)
    return str(path)


def _worker_env(
    variant: Variant, concurrency: int, lk: Any, extra: dict[str, str]
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            **lk.worker_env(),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
    )
    env.update(variant.env(concurrency))
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def started_worker(
    variant: Variant, concurrency: int, lk: Any, extra: dict[str, str], log_path: Path
) -> Any:
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.soak",
            WORKER_COMMAND,
            variant.kind,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
            env=_worker_env(variant, concurrency, lk, extra),
            start_new_session=True,
            limit=16 * 1024 * 1024,
        )
    worker = SoakWorker(proc)
    try:
        yield worker
    finally:
        await worker.stop()


async def _registered(lk: Any, worker: SoakWorker) -> bool:
    registered = asyncio.create_task(lk.wait_for_worker(timeout=REGISTER_TIMEOUT_S))
    exited = asyncio.create_task(worker.proc.wait())
    done, _ = await asyncio.wait({registered, exited}, return_when=asyncio.FIRST_COMPLETED)
    for task in (registered, exited):
        task.cancel()
    return registered in done and registered.exception() is None


async def soak_variant(
    variant: Variant,
    settings: dict[str, Any],
    extra_env: dict[str, str],
    logs_dir: Path,
    run: dict[str, Any],
    on_wave: Callable[[], None],
) -> None:
    """Soak one variant; fills `run` (calling `on_wave` after each wave) as it goes."""
    from openrtc_testing import LoopbackDispatchServer

    log_path = logs_dir / f"{variant.key}-{int(time.time())}.log"
    run["log"] = str(log_path)
    concurrency: int = settings["concurrency"]
    metadata = call_metadata(
        turns=caller_turns(settings["turns"]), hold_s=0.0, pause_s=BURST_PAUSE_S
    )
    async with (
        LoopbackDispatchServer() as lk,
        started_worker(
            variant,
            concurrency,
            lk,
            {**extra_env, LIVE_CENSUS_ENV: "1"} if settings.get("live_census") else extra_env,
            log_path,
        ) as worker,
    ):
        if not await _registered(lk, worker):
            run["status"] = "crashed"
            run["note"] = "the worker did not register"
            return
        warm = await _call(
            lk,
            f"soak-{variant.key}-warm-up",
            call_metadata(turns=CALLER_TURNS[:1], hold_s=0.0),
            time.monotonic() + REGISTER_TIMEOUT_S,
        )
        if warm["outcome"] != "completed":
            run["status"] = "crashed"
            run["note"] = f"the warm-up call failed: {warm['outcome']}: {warm['error']}"
            return
        await wait_idle(worker)
        await asyncio.sleep(SETTLE_S)
        run["ready"] = {**await idle_memory(worker.proc.pid), "worker": await worker.ask("stats")}
        on_wave()
        served = 0
        sizes = [settings["wave"]] * (settings["calls"] // settings["wave"])
        if settings["calls"] % settings["wave"]:
            sizes.append(settings["calls"] % settings["wave"])
        for number, size in enumerate(sizes, start=1):
            if settings.get("census"):
                await worker.ask("gc off")
            wave = await run_wave(lk, variant, number, size, concurrency, metadata)
            served += size
            jobs, waited = await wait_idle(worker)
            if jobs is None and worker.proc.returncode is None:
                run["hang_dump"] = await dump_stacks(worker.proc.pid, logs_dir, variant.key)
            await asyncio.sleep(SETTLE_S)
            for job_id in wave.pop("_job_ids"):  # the driver's memory stays flat too
                lk.dispatches.pop(job_id, None)
            if worker.proc.returncode is not None:
                run["status"] = "crashed"
                run["note"] = (
                    f"the worker exited with code {worker.proc.returncode} in wave {number}"
                )
                return
            record: dict[str, Any] = {
                "wave": number,
                "calls": served,
                **wave,
                "jobs_left": jobs,
                "idle_wait_s": round(waited, 3),
                **await idle_memory(worker.proc.pid),
                "worker": await worker.ask("stats"),
            }
            if settings.get("census"):
                record["census"] = await worker.ask("census", timeout=300)
            if settings.get("release_probe"):
                record["collect"] = await worker.ask("collect")
                record["pss_after_collect_mb"] = (await idle_memory(worker.proc.pid))["pss_mb"]
                record["trim"] = await worker.ask("trim")
                record["pss_after_trim_mb"] = (await idle_memory(worker.proc.pid))["pss_mb"]
            run["waves"].append(record)
            on_wave()
            print(_progress(run, record), file=sys.stderr, flush=True)
            if wave["failures"] >= max(1, size // 2):
                run["status"] = "failed"
                run["note"] = f"{wave['failures']} of {size} calls failed in wave {number}"
                return
        run["status"] = "ok"
        run["released"] = await release(worker)


async def release(worker: SoakWorker) -> dict[str, Any]:
    """What a full collection, then malloc_trim(0), give back: PSS after each, the worker's
    view after both. Run once after the last wave, it changes nothing that was measured."""
    collect = await worker.ask("collect")
    after_collect = await idle_memory(worker.proc.pid)
    trim = await worker.ask("trim")
    after_trim = await idle_memory(worker.proc.pid)
    return {
        "collect": collect,
        "pss_after_collect_mb": after_collect["pss_mb"],
        "anon_after_collect_mb": after_collect["pss_anon_mb"],
        "trim": trim,
        "pss_after_trim_mb": after_trim["pss_mb"],
        "anon_after_trim_mb": after_trim["pss_anon_mb"],
        "worker": await worker.ask("stats"),
    }


def _progress(run: dict[str, Any], wave: dict[str, Any]) -> str:
    info = (wave.get("worker") or {}).get("mallinfo2") or {}
    heap = ""
    if info:
        heap = (
            f", malloc in use {info['uordblks'] / 2**20:.0f} free {info['fordblks'] / 2**20:.0f}"
            f" mmapped {info['hblkhd'] / 2**20:.0f} MiB"
        )
    probe = ""
    if "pss_after_trim_mb" in wave:
        probe = (
            f", after gc.collect {wave['pss_after_collect_mb']:.1f}, after malloc_trim "
            f"{wave['pss_after_trim_mb']:.1f}"
        )
    return (
        f"{run_label(run)}: wave {wave['wave']}, {wave['calls']} calls "
        f"({wave['failures']} failed, {wave['calls_per_s']} calls/s): idle PSS "
        f"{wave['pss_mb']:.1f} MiB (anon {wave['pss_anon_mb']:.1f}){probe}{heap}"
    )


# -- main ---------------------------------------------------------------------------------------


def load_results(parser: argparse.ArgumentParser, paths: Sequence[Path]) -> dict[str, Any]:
    """Earlier --json files, their runs put side by side (the first file's header kept)."""
    merged: dict[str, Any] | None = None
    for path in paths:
        try:
            loaded: object = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            parser.error(f"argument --from-json: cannot read {path}: {exc.strerror or exc}")
        except ValueError as exc:
            parser.error(f"argument --from-json: {path} is not JSON: {exc}")
        if not isinstance(loaded, dict) or not isinstance(loaded.get("runs"), list):
            parser.error(f"argument --from-json: {path} is not a soak results file")
        for run in loaded["runs"]:  # how each run was made travels with it
            for flag in ("release_probe", "census", "live_census"):
                run.setdefault(flag, bool((loaded.get("settings") or {}).get(flag)))
        if merged is None:
            merged = {**loaded, "runs": list(loaded["runs"]), "commands": [loaded.get("command")]}
        else:
            merged["runs"].extend(loaded["runs"])
            merged["commands"].append(loaded.get("command"))
            merged["complete"] = bool(merged.get("complete")) and bool(loaded.get("complete"))
    assert merged is not None
    if not any(run.get("waves") for run in merged["runs"]):
        parser.error("argument --from-json: no run in it finished a wave yet")
    return merged


def _write_outputs(data: dict[str, Any], out: Path | None) -> None:
    print(render_console(data))
    if out is not None:
        write_report(data, out)
        print(f"wrote {out} and {out.with_suffix('.png')}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == [WORKER_COMMAND]:
        return worker_main(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(arguments)
    check_args(parser, args)
    if args.from_json:
        _write_outputs(load_results(parser, args.from_json), args.out)
        return 0
    stem = f"soak-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    json_path: Path = args.json_path or RESULTS_DIR / f"{stem}.json"
    logs_dir: Path = args.logs or RESULTS_DIR / f"{stem}-logs"
    extra_env = dict(args.env)
    settings = {
        "variants": list(args.variants),
        "calls": args.calls,
        "wave": args.wave,
        "concurrency": args.concurrency,
        "turns": args.turns,
        "warmup": args.warmup,
        "env": extra_env,
        "release_probe": args.release_probe,
        "census": args.census,
        "live_census": args.live_census,
        "target_pct": TARGET_PCT,
    }
    began = time.time()
    data: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "benchmarks.soak", *arguments]),
        "started_at": began,
        "machine": machine_info(),
        "settings": settings,
        "complete": False,
        "runs": [],
    }

    def save() -> None:
        data["duration_s"] = round(time.time() - began, 1)
        write_json_atomically(json_path, data)

    save()
    print(
        f"soaking {','.join(args.variants)}: {args.calls} calls each in waves of {args.wave} "
        f"({args.concurrency} at once, {args.turns} turns); raw results in {json_path} "
        f"(rewritten after every wave), worker logs in {logs_dir}",
        file=sys.stderr,
        flush=True,
    )
    logs_dir.mkdir(parents=True, exist_ok=True)
    try:
        for key in args.variants:
            variant = ONE_WORKER_VARIANTS[key]
            run: dict[str, Any] = {
                "variant": key,
                "name": variant.name,
                "label": variant.label,
                "config": variant.describe(args.concurrency),
                "env": extra_env,
                "release_probe": args.release_probe,
                "census": args.census,
                "live_census": args.live_census,
                "status": "running",
                "note": "",
                "waves": [],
            }
            data["runs"].append(run)
            began_run = time.monotonic()
            asyncio.run(soak_variant(variant, settings, extra_env, logs_dir, run, save))
            run["duration_s"] = round(time.monotonic() - began_run, 1)
            save()
    except KeyboardInterrupt:
        for run in data["runs"]:
            if run["status"] == "running":
                run["status"] = "interrupted"
        save()
        print(f"interrupted: the waves that finished are in {json_path}", file=sys.stderr)
        return 130
    data["complete"] = True
    save()
    _write_outputs(data, args.out)
    print(f"wrote {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
