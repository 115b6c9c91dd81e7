"""Session density: plain livekit-agents workers against OpenRTC, one workload, one command.

    python -m benchmarks.density                      # the full sweep, writes docs/benchmarks.md
    python -m benchmarks.density --quick              # N = 1, 10, one repeat, short holds
    python -m benchmarks.density --pace burst         # callers speak in lockstep: stress
    python -m benchmarks.density --variants C,D --sizes 1,100 --repeats 1 --json out.json
    python -m benchmarks.density --from-json out.json --out docs/benchmarks.md   # re-render

Variants: A plain worker, process executor; B plain worker, thread executor; C OpenRTC,
coroutine isolation; D OpenRTC, process isolation. See benchmarks/README.md for the method.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from .report import (
    UNRESOLVED,
    added_pss_resolution,
    below_resolution,
    render_console,
    variant_title,
    write_docs,
)
from .run import ROOT, RunPlan, run_once
from .sampling import mem_available_mb
from .variants import VARIANTS
from .workload import CALLER_TURNS, FIRST_TOKEN_DELAY_S, PACES, REPLY, TOKEN_DELAY_S

FULL_SIZES: Final = (1, 10, 50, 100, 200, 500)
QUICK_SIZES: Final = (1, 10)
FULL_REPEATS: Final = 2
LARGE_N: Final = 200
"""From this N on, a run takes minutes: sizes this large get --large-repeats runs."""
LARGE_REPEATS: Final = 1
FULL_HOLD_S: Final = 10.0
QUICK_HOLD_S: Final = 2.0
TIME_BOUND_S: Final = 240.0
MEMORY_FLOOR_MB: Final = 2048.0
DEFAULT_OUT: Final = ROOT / "docs" / "benchmarks.md"


@attrs.frozen(kw_only=True)
class Settings:
    sizes: tuple[int, ...]
    repeats: int
    large_repeats: int
    variants: tuple[str, ...]
    hold_s: float
    pace: str
    time_bound_s: float
    memory_floor_mb: float
    logs_dir: Path
    out: Path | None
    json_path: Path | None
    quick: bool

    def repeats_for(self, calls: int) -> int:
        return self.large_repeats if calls >= LARGE_N else self.repeats

    @property
    def pause_s(self) -> tuple[float, float]:
        return PACES[self.pace]


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use whole numbers, like 1,10,50") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: use whole numbers of at least 1")
    return values


def _variants(text: str) -> tuple[str, ...]:
    keys = tuple(part.strip().upper() for part in text.split(",") if part.strip())
    unknown = [k for k in keys if k not in VARIANTS]
    if not keys or unknown:
        raise argparse.ArgumentTypeError(
            f"{text!r}: choose among {','.join(VARIANTS)} (for example A,C)"
        )
    return keys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.density",
        description="Drive the same simulated calls through plain livekit workers (A: process "
        "executor, B: thread executor) and OpenRTC pools (C: coroutine, D: process), and "
        "report memory, latency, loop lag and CPU per variant and N.",
    )
    parser.add_argument("--quick", action="store_true", help="N = 1,10, one repeat, 2 s holds")
    parser.add_argument("--sizes", type=_ints, help="concurrent calls per run, e.g. 1,10,50")
    parser.add_argument(
        "--repeats", type=int, help=f"runs per variant and N below {LARGE_N} ({FULL_REPEATS})"
    )
    parser.add_argument(
        "--large-repeats",
        type=int,
        help=f"runs per variant and N of {LARGE_N} or more ({LARGE_REPEATS}; --repeats if lower)",
    )
    parser.add_argument("--variants", type=_variants, default=tuple(VARIANTS), help="e.g. A,C")
    parser.add_argument("--hold", type=float, help=f"seconds each call stays up ({FULL_HOLD_S})")
    parser.add_argument(
        "--pace",
        choices=tuple(PACES),
        default="human",
        help="human: each caller waits 4-10 s (random) before a line, as a person on the phone "
        "does; burst: every line the moment the previous reply is done, all calls in lockstep "
        "(a stress test of throughput, not of holding calls)",
    )
    parser.add_argument(
        "--time-bound",
        type=float,
        default=TIME_BOUND_S,
        help="seconds a run may take; a variant that exceeds it is not run at larger N",
    )
    parser.add_argument(
        "--memory-floor",
        type=float,
        default=MEMORY_FLOOR_MB,
        help="MiB of available memory below which a run is stopped",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="the Markdown report (plots go to img/ beside it); default docs/benchmarks.md, "
        "none with --quick",
    )
    parser.add_argument("--json", dest="json_path", type=Path, help="also write every figure")
    parser.add_argument("--logs", type=Path, help="worker logs (default: a new temp directory)")
    parser.add_argument(
        "--from-json", type=Path, help="render the report from an earlier --json file, no runs"
    )
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    quick = bool(args.quick)
    repeats = args.repeats if args.repeats is not None else (1 if quick else FULL_REPEATS)
    large_repeats = args.large_repeats if args.large_repeats is not None else LARGE_REPEATS
    if repeats < 1 or large_repeats < 1:
        raise SystemExit("--repeats and --large-repeats must be at least 1")
    out: Path | None = args.out
    if out is None and not quick:
        out = DEFAULT_OUT
    return Settings(
        sizes=args.sizes or (QUICK_SIZES if quick else FULL_SIZES),
        repeats=repeats,
        large_repeats=min(large_repeats, repeats),
        variants=args.variants,
        hold_s=args.hold if args.hold is not None else (QUICK_HOLD_S if quick else FULL_HOLD_S),
        pace=args.pace,
        time_bound_s=args.time_bound,
        memory_floor_mb=args.memory_floor,
        logs_dir=args.logs or Path(tempfile.mkdtemp(prefix="openrtc-bench-")),
        out=out,
        json_path=args.json_path,
        quick=quick,
    )


def _skipped(key: str, calls: int, reason: str) -> dict[str, Any]:
    variant = VARIANTS[key]
    return {
        "variant": key,
        "label": variant.label,
        "name": variant.name,
        "config": variant.describe(calls),
        "calls": calls,
        "repeat": 1,
        "status": "skipped",
        "note": reason,
    }


def projected_skip(previous: dict[str, Any] | None, calls: int, settings: Settings) -> str:
    """Why a variant should not run at `calls`, judging from its last good run ("" to run).

    Memory: the added PSS per session times N must fit in the memory available now, above
    the floor. Time: the spread of start times grows about linearly with N in a burst; the
    projected run (spread + turns + hold) must fit in the time bound.
    """
    if previous is None or previous.get("calls", 0) < 10:
        return ""
    per_session = previous.get("added_pss_per_session_mb") or 0.0
    needed_mb = per_session * calls
    room_mb = mem_available_mb() - settings.memory_floor_mb
    if needed_mb > room_mb:
        return (
            f"projected {needed_mb / 1024:.1f} GiB for {calls} sessions "
            f"({per_session:.1f} MiB each at N={previous['calls']}) exceeds the "
            f"{room_mb / 1024:.1f} GiB available"
        )
    spread = previous.get("start_max_s") or 0.0
    mean_pause = sum(settings.pause_s) / 2
    turns = len(CALLER_TURNS) * ((previous.get("turn_p50_s") or 0.0) + mean_pause)
    projected = spread * calls / previous["calls"] + turns + settings.hold_s
    if projected > settings.time_bound_s:
        return (
            f"projected {projected:.0f} s (start spread {spread:.1f} s at "
            f"N={previous['calls']}, scaled to N={calls}) exceeds the "
            f"{settings.time_bound_s:.0f} s bound"
        )
    return ""


def _progress(result: dict[str, Any]) -> str:
    title = variant_title(result["variant"], result)
    head = f"[{title} N={result['calls']} r{result['repeat']}] {result['status']}"
    if result["status"] == "skipped":
        return f"{head}: {result['note']}"
    parts = [f"{result.get('completed', 0)}/{result['calls']} calls"]
    added = result.get("added_pss_per_session_mb")
    resolution = added_pss_resolution(result)
    if below_resolution(added, resolution):
        bound = f" ({resolution:.2f} MiB)" if resolution is not None else ""
        parts.append(f"added PSS/session {UNRESOLVED}{bound}")
    elif added is not None:
        parts.append(f"+{added:.2f} MiB/session")
    if result.get("start_p50_s") is not None:
        parts.append(f"start p50 {result['start_p50_s'] * 1000:.0f} ms")
    if result.get("turn_p95_s") is not None:
        parts.append(f"turn p95 {result['turn_p95_s'] * 1000:.0f} ms")
    lag = result.get("loop_lag") or {}
    if lag.get("p99_s") is not None:
        parts.append(f"lag p99 {lag['p99_s'] * 1000:.0f} ms")
    held = result.get("loop_lag_all_live") or {}
    if held.get("p99_s") is not None:
        parts.append(f"(all live {held['p99_s'] * 1000:.0f} ms)")
    parts.append(f"{result.get('wall_s', 0.0):.0f} s")
    note = f" ({result['note']})" if result.get("note") else ""
    return f"{head}: {', '.join(parts)}{note}"


def sweep(settings: Settings) -> list[dict[str, Any]]:
    """Every run, N by N, variants interleaved within each N and repeat."""
    runs: list[dict[str, Any]] = []
    stopped: dict[str, str] = {}
    last_good: dict[str, dict[str, Any]] = {}
    for calls in settings.sizes:
        for repeat in range(1, settings.repeats_for(calls) + 1):
            for key in settings.variants:
                if key not in stopped:
                    reason = projected_skip(last_good.get(key), calls, settings)
                    if reason:
                        stopped[key] = reason
                if key in stopped:
                    if repeat == 1:
                        runs.append(_skipped(key, calls, stopped[key]))
                        print(_progress(runs[-1]), file=sys.stderr, flush=True)
                    continue
                plan = RunPlan(
                    variant=VARIANTS[key],
                    calls=calls,
                    repeat=repeat,
                    hold_s=settings.hold_s,
                    pause_s=settings.pause_s,
                    time_bound_s=settings.time_bound_s,
                    memory_floor_mb=settings.memory_floor_mb,
                    logs_dir=settings.logs_dir,
                )
                result = asyncio.run(run_once(plan))
                runs.append(result)
                print(_progress(result), file=sys.stderr, flush=True)
                if result["status"] != "ok":
                    stopped[key] = f"stopped: it {result['status']} at N={calls}"
                else:
                    last_good[key] = result
    return runs


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def source_revision() -> str:
    """The git commit the benchmark ran from, with "+changes" when the tree was edited."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}+changes" if dirty else commit


def machine_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(_mem_total_gib(), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "livekit-agents": _version("livekit-agents"),
        "livekit": _version("livekit"),
        "openrtc-core": _version("openrtc-core"),
        "openrtc-testing": _version("openrtc-testing"),
        "revision": source_revision(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    if args.from_json is not None:
        loaded = json.loads(args.from_json.read_text())
        out = args.out or DEFAULT_OUT
        write_docs(loaded, out)
        print(f"wrote {out}", file=sys.stderr)
        return 0
    settings = settings_from(args)
    print(
        f"sizes {list(settings.sizes)}, variants {','.join(settings.variants)}, "
        f"{settings.repeats} repeat(s) ({settings.large_repeats} from N={LARGE_N}), "
        f"pace {settings.pace}, hold {settings.hold_s:g} s, "
        f"time bound {settings.time_bound_s:g} s; "
        f"worker logs in {settings.logs_dir}",
        file=sys.stderr,
        flush=True,
    )
    began = time.time()
    runs = sweep(settings)
    data: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "benchmarks.density", *arguments]),
        "started_at": began,
        "duration_s": time.time() - began,
        "machine": machine_info(),
        "settings": {
            "sizes": list(settings.sizes),
            "repeats": settings.repeats,
            "large_repeats": settings.large_repeats,
            "large_n": LARGE_N,
            "variants": list(settings.variants),
            "hold_s": settings.hold_s,
            "pace": settings.pace,
            "pause_s": list(settings.pause_s),
            "time_bound_s": settings.time_bound_s,
            "memory_floor_mb": settings.memory_floor_mb,
            "quick": settings.quick,
        },
        "workload": {
            "caller_turns": list(CALLER_TURNS),
            "reply": REPLY,
            "reply_words": len(REPLY.split()),
            "first_token_delay_s": FIRST_TOKEN_DELAY_S,
            "token_delay_s": TOKEN_DELAY_S,
        },
        "variants": {key: VARIANTS[key].label for key in settings.variants},
        "runs": runs,
    }
    if settings.json_path is not None:
        settings.json_path.parent.mkdir(parents=True, exist_ok=True)
        settings.json_path.write_text(json.dumps(data, indent=1))
        print(f"wrote {settings.json_path}", file=sys.stderr)
    if settings.out is not None:
        write_docs(data, settings.out)
        print(f"wrote {settings.out}", file=sys.stderr)
    print(render_console(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
