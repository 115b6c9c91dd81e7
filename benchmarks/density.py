"""Session density: plain livekit-agents workers against OpenRTC, one workload, one command.

    python -m benchmarks.density                      # the full sweep: tables and raw JSON
    python -m benchmarks.density --out docs/benchmarks.md   # ... and refresh the committed page
    python -m benchmarks.density --quick              # N = 1, 10, one repeat, short holds
    python -m benchmarks.density --pace burst         # callers speak in lockstep: stress
    python -m benchmarks.density --variants C,D --sizes 1,100 --repeats 1 --json out.json
    python -m benchmarks.density --pace burst --variants A,C,E --sizes 100,500   # E vs C, A
    python -m benchmarks.density --from-json out.json --out docs/benchmarks.md   # re-render
    python -m benchmarks.density --mode voice         # callers speak: VAD, turn detector, audio

Nothing under docs/ is written unless --out says so. Every run's raw figures go to --json
(by default a new file under the system's temp directory), rewritten as each run ends.

Variants: A plain worker, process executor; B plain worker, thread executor; C OpenRTC,
coroutine isolation; D OpenRTC, process isolation; E C's pool under openrtc-workers'
supervisor, one forked worker per usable core. See benchmarks/README.md for the method.

``--mode voice`` runs the same variants on voice calls: each caller speaks its lines as
espeak-ng speech in real time into the session's audio input, the worker runs the prewarmed
VAD and livekit's turn detector on it, and the agent's replies play out in real time. Its
sizes, pace and hold have their own defaults; a variant stops at the first N whose
caller-heard latency p95 (over the turns the turn detector ended) is past 1.5x its
single-call value.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from openrtc_core.cores import usable_cores

from .arguments import OneLineParser
from .provenance import (
    package_version,
    source_revision,
    uncreatable_dir,
    unwritable_dir,
    unwritable_file,
)
from .report import (
    UNRESOLVED,
    added_pss_resolution,
    below_resolution,
    render_console,
    variant_title,
    write_docs,
)
from .run import RunPlan, run_once
from .sampling import mem_available_mb
from .variants import VARIANTS
from .voice_report import (
    HELD_FACTOR,
    HELD_METRIC,
    is_voice,
    render_voice_console,
    write_voice_docs,
)
from .workload import (
    CALLER_TURNS,
    FIRST_TOKEN_DELAY_S,
    PACES,
    REPLY,
    TOKEN_DELAY_S,
    VOICE_CALLER_TURNS,
    VOICE_PACES,
    VOICE_SAMPLE_RATE,
)

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
MODES: Final = ("text", "voice")
VOICE_SIZES: Final = (1, 10, 20, 40, 80)
VOICE_QUICK_SIZES: Final = (1, 5)
VOICE_REPEATS: Final = 2
VOICE_REFERENCE_REPEATS: Final = 3
"""Voice mode: runs at the smallest N, whose heard latency p95 is each variant's reference."""
VOICE_HOLD_S: Final = 2.0
DOCS_PAGE: Final = Path("docs") / "benchmarks.md"
"""The committed page, refreshed only with an explicit ``--out docs/benchmarks.md``."""
RESULTS_DIR: Final = Path(tempfile.gettempdir()) / "openrtc-bench"
"""Where raw results and worker logs go by default: outside the repository, never committed."""


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
    json_path: Path
    quick: bool
    mode: str = "text"

    @property
    def voice(self) -> bool:
        return self.mode == "voice"

    def repeats_for(self, calls: int) -> int:
        if self.voice and not self.quick and calls == 1:
            # The single-call reference of what a variant holds: a few more turns than one
            # 3-line call gives, so one slow turn does not set it.
            return max(self.repeats, VOICE_REFERENCE_REPEATS)
        return self.large_repeats if calls >= LARGE_N else self.repeats

    @property
    def pause_s(self) -> tuple[float, float]:
        return (VOICE_PACES if self.voice else PACES)[self.pace]


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


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: use a whole number of at least 1")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: use a number, 0 or more")
    return value


def _positive(text: str) -> float:
    value = _non_negative(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: use a number above 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m benchmarks.density",
        description="Drive the same simulated calls through plain livekit workers (A: process "
        "executor, B: thread executor) and OpenRTC pools (C: coroutine, D: process, E: "
        "coroutine under openrtc-workers' supervisor, one worker per usable core), and "
        "report memory, latency, loop lag (E: per worker and the worst worker), CPU and, at "
        "burst pace, completed turns per second per variant and N. Prints the tables and "
        "writes every run's raw figures to --json as it ends; writes the Markdown report only "
        "with --out (--out docs/benchmarks.md refreshes the committed page).",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="text",
        help="text: callers type their lines (no audio; the default); voice: callers speak "
        "them as real speech, in real time, through the worker's VAD and turn detector, and "
        "the agent's replies play out as audio",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"N = {','.join(map(str, QUICK_SIZES))} (voice: "
        f"{','.join(map(str, VOICE_QUICK_SIZES))}), one repeat, {QUICK_HOLD_S:g} s holds",
    )
    parser.add_argument(
        "--sizes",
        type=_ints,
        help="concurrent calls per run, e.g. 1,10,50 (text: "
        f"{','.join(map(str, FULL_SIZES))}; voice: {','.join(map(str, VOICE_SIZES))})",
    )
    parser.add_argument(
        "--repeats",
        type=_count,
        help=f"runs per variant and N below {LARGE_N} (text: {FULL_REPEATS}, voice: "
        f"{VOICE_REPEATS})",
    )
    parser.add_argument(
        "--large-repeats",
        type=_count,
        help=f"runs per variant and N of {LARGE_N} or more ({LARGE_REPEATS}; --repeats if lower)",
    )
    parser.add_argument(
        "--variants",
        type=_variants,
        default=tuple(VARIANTS),
        help="which of A,B,C,D,E to run, e.g. A,C,E (default: all)",
    )
    parser.add_argument(
        "--hold",
        type=_non_negative,
        help=f"seconds each call stays up after its last turn (text: {FULL_HOLD_S:g}, voice: "
        f"{VOICE_HOLD_S:g})",
    )
    parser.add_argument(
        "--pace",
        choices=tuple(PACES),
        default="human",
        help="human: each caller waits 4-10 s (random) before a line, as a person on the phone "
        "does (voice: 0.5-2 s, as listening and speaking take their real time there); burst: "
        "every line the moment the previous reply is done, all calls in lockstep (a stress "
        "test of throughput, not of holding calls)",
    )
    parser.add_argument(
        "--time-bound",
        type=_positive,
        default=TIME_BOUND_S,
        help="seconds a run may take; a variant that exceeds it is not run at larger N",
    )
    parser.add_argument(
        "--memory-floor",
        type=_non_negative,
        default=MEMORY_FLOOR_MB,
        help="MiB of available memory below which a run is stopped",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"write the Markdown report here, plots in img/ beside it; --out {DOCS_PAGE} "
        "refreshes the committed page. Without --out no Markdown is written: the tables are "
        "printed and the raw figures go to --json",
    )
    parser.add_argument(
        "--json",
        dest="json_path",
        type=Path,
        help="every run's raw figures, rewritten as each run ends, so an interrupted sweep "
        f"keeps its finished runs (default: a new {RESULTS_DIR}/density-<time>-<pid>.json)",
    )
    parser.add_argument(
        "--logs",
        type=Path,
        help=f"worker logs (default: {RESULTS_DIR}/density-<time>-<pid>-logs/)",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="render an earlier --json file (complete or not) without running anything: the "
        "tables, and the Markdown report with --out. Several files of one mode are rendered "
        "as one sweep (a later one adds runs, e.g. larger N for some variants)",
    )
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """The sweep's settings: the arguments (already checked by the parser) and the defaults."""
    quick = bool(args.quick)
    voice = args.mode == "voice"
    full_repeats = VOICE_REPEATS if voice else FULL_REPEATS
    repeats = args.repeats if args.repeats is not None else (1 if quick else full_repeats)
    large_repeats = args.large_repeats if args.large_repeats is not None else LARGE_REPEATS
    stem = f"density-{'voice-' if voice else ''}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    sizes = (VOICE_QUICK_SIZES, VOICE_SIZES) if voice else (QUICK_SIZES, FULL_SIZES)
    hold_s = QUICK_HOLD_S if quick else (VOICE_HOLD_S if voice else FULL_HOLD_S)
    return Settings(
        mode=args.mode,
        sizes=args.sizes or sizes[0 if quick else 1],
        repeats=repeats,
        large_repeats=min(large_repeats, repeats),
        variants=args.variants,
        hold_s=args.hold if args.hold is not None else hold_s,
        pace=args.pace,
        time_bound_s=args.time_bound,
        memory_floor_mb=args.memory_floor,
        logs_dir=args.logs or RESULTS_DIR / f"{stem}-logs",
        out=args.out,
        json_path=args.json_path or RESULTS_DIR / f"{stem}.json",
        quick=quick,
    )


# -- checking where results go, before anything runs ----------------------------------------


def check_out(parser: argparse.ArgumentParser, out: Path | None) -> None:
    """--out: the page's directory exists and takes the page and its img/ directory."""
    if out is None:
        return
    problem = unwritable_file(out)
    img = out.parent / "img"
    if not problem and img.exists():
        problem = unwritable_dir(img)
    if problem:
        parser.error(f"argument --out: {problem}")


SUPERVISOR_PACKAGE: Final = "openrtc_workers"
"""What the supervised variant (E) runs: openrtc-workers' supervisor."""


def supervisor_installed() -> bool:
    return importlib.util.find_spec(SUPERVISOR_PACKAGE) is not None


def check_variants(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """A supervised variant needs openrtc-workers: say so before the first run."""
    supervised = [key for key in settings.variants if VARIANTS[key].supervised]
    if supervised and not supervisor_installed():
        parser.error(
            f"argument --variants: {','.join(supervised)} runs openrtc-workers' supervisor, "
            "which is not installed (pip install -e plugins/openrtc-workers), or choose "
            "others, e.g. --variants A,B,C,D"
        )
    if supervised and usable_cores() < 2:
        parser.error(
            f"argument --variants: {','.join(supervised)} runs one worker per usable core and "
            "this process may use only one (one worker is C), or choose others, e.g. "
            "--variants A,B,C,D"
        )


def prepare_voice(parser: argparse.ArgumentParser) -> None:
    """Voice mode: the callers' clips made once, before any run, so workers only read them
    from the cache; without espeak-ng, say so before the first run."""
    from openrtc_testing.voice_clips import VoiceUnavailable, prepare

    try:
        prepare(VOICE_CALLER_TURNS, sample_rate=VOICE_SAMPLE_RATE)
    except VoiceUnavailable as exc:
        parser.error(f"argument --mode voice: {exc}")


def check_paths(
    parser: argparse.ArgumentParser, args: argparse.Namespace, settings: Settings
) -> None:
    """Every output path, before the first run: a sweep takes minutes to hours."""
    check_out(parser, settings.out)
    if args.json_path is not None:
        problem = unwritable_file(settings.json_path)
    else:
        problem = uncreatable_dir(settings.json_path.parent)
    if problem:
        parser.error(f"argument --json: {problem}")
    if settings.out is not None and settings.out.resolve() == settings.json_path.resolve():
        parser.error("argument --json: it is the same file as --out")
    problem = uncreatable_dir(settings.logs_dir)
    if problem:
        parser.error(f"argument --logs: {problem}")


RESULT_KEYS: Final = (
    "command",
    "started_at",
    "duration_s",
    "machine",
    "settings",
    "workload",
    "variants",
    "runs",
)
"""What a results file (--json) holds, from its first write on."""


def load_results(parser: argparse.ArgumentParser, path: Path) -> dict[str, Any]:
    """An earlier --json file, complete or written part-way through a sweep."""
    try:
        loaded: object = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        parser.error(f"argument --from-json: cannot read {path}: {exc.strerror or exc}")
    except ValueError as exc:
        parser.error(f"argument --from-json: {path} is not JSON: {exc}")
    if not isinstance(loaded, dict):
        parser.error(f"argument --from-json: {path} is not a results file")
    data: dict[str, Any] = loaded
    missing = [key for key in RESULT_KEYS if key not in data]
    if missing or not isinstance(data["runs"], list):
        what = f"no {missing[0]!r}" if missing else "'runs' is not a list"
        parser.error(f"argument --from-json: {path} is not a results file ({what})")
    if not data["runs"]:
        parser.error(f"argument --from-json: {path} holds no finished runs yet")
    return data


# -- raw results, written as the sweep goes ---------------------------------------------------


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


@attrs.define(kw_only=True)
class ResultsFile:
    """A sweep's raw results, rewritten after every run so that none finished is lost."""

    path: Path
    header: dict[str, Any]
    began: float
    runs: list[dict[str, Any]] = attrs.field(factory=list)

    def add(self, run: dict[str, Any]) -> None:
        self.runs.append(run)
        self.write(complete=False)

    def write(self, *, complete: bool) -> dict[str, Any]:
        data = {
            **self.header,
            "duration_s": time.time() - self.began,
            "complete": complete,
            "runs": self.runs,
        }
        write_json_atomically(self.path, data)
        return data


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
    talk = len(CALLER_TURNS) * ((previous.get("turn_p50_s") or 0.0) + mean_pause)
    talk += settings.hold_s
    if previous.get("call_seconds"):  # voice: a call's length, its speech and replies in it
        talk = previous["call_seconds"] / max(1, previous.get("completed") or previous["calls"])
    projected = spread * calls / previous["calls"] + talk
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
    if result.get("heard_p95_s") is not None:
        parts.append(
            f"heard p50 {result['heard_p50_s'] * 1000:.0f} ms, p95 "
            f"{result['heard_p95_s'] * 1000:.0f} ms ({result['turns_waited_out']} of "
            f"{result['turns']} turns waited out)"
        )
        if result.get("cpu_per_call_s") is not None:
            parts.append(f"{result['cpu_per_call_s']:.3f} CPU-s per call-s")
        if result.get("frames_dropped"):
            parts.append(f"{result['frames_dropped']} input frames dropped")
    elif result.get("turn_p95_s") is not None:
        parts.append(f"turn p95 {result['turn_p95_s'] * 1000:.0f} ms")
    lag = result.get("loop_lag") or {}
    if lag.get("p99_s") is not None:
        parts.append(f"lag p99 {lag['p99_s'] * 1000:.0f} ms")
    held = result.get("loop_lag_all_live") or {}
    if held.get("p99_s") is not None:
        parts.append(f"(all live {held['p99_s'] * 1000:.0f} ms)")
    if result.get("turns_per_s") is not None:
        parts.append(f"{result['turns_per_s']:.1f} turns/s")
    workers = result.get("workers") or []
    if workers:
        each = []
        for worker in workers:
            lag = (worker.get("loop_lag") or {}).get("p99_s")
            live = (worker.get("loop_lag_all_live") or {}).get("p99_s")
            each.append(
                f"{worker['worker']}: {worker['calls']} calls, lag p99 "
                f"{'—' if lag is None else f'{lag * 1000:.0f} ms'} (all live "
                f"{'—' if live is None else f'{live * 1000:.0f} ms'})"
            )
        parts.append(f"workers [{'; '.join(each)}]")
    parts.append(f"{result.get('wall_s', 0.0):.0f} s")
    note = f" ({result['note']})" if result.get("note") else ""
    return f"{head}: {', '.join(parts)}{note}"


def past_held(
    calls: int, at_n: Sequence[float], reference_n: int, reference: Sequence[float]
) -> str:
    """Voice mode: why N = `calls` is past what a variant holds ("" while it holds): the
    median over its repeats of the detector-ended heard latency p95 (`at_n`) above
    HELD_FACTOR times the same at the smallest N (`reference`)."""
    if calls == reference_n or not at_n or not reference:
        return ""
    heard, base = statistics.median(at_n), statistics.median(reference)
    if heard <= HELD_FACTOR * base:
        return ""
    return (
        f"stopped: detector-ended heard latency p95 {heard * 1000:.0f} ms at N={calls} is "
        f"past {HELD_FACTOR:g}x its {base * 1000:.0f} ms at N={reference_n}"
    )


def sweep(settings: Settings, record: Callable[[dict[str, Any]], None]) -> None:
    """Every run, N by N, variants interleaved within each N and repeat; `record` gets each
    run's result (or skip) as soon as it is known."""
    stopped: dict[str, str] = {}
    last_good: dict[str, dict[str, Any]] = {}
    heard: dict[str, dict[int, list[float]]] = {}
    """Voice mode: each variant's HELD_METRIC of each good run, by N."""
    for calls in settings.sizes:
        for repeat in range(1, settings.repeats_for(calls) + 1):
            for key in settings.variants:
                if key not in stopped:
                    reason = projected_skip(last_good.get(key), calls, settings)
                    if reason:
                        stopped[key] = reason
                if key in stopped:
                    if repeat == 1:
                        skipped = _skipped(key, calls, stopped[key])
                        record(skipped)
                        print(_progress(skipped), file=sys.stderr, flush=True)
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
                    voice=settings.voice,
                )
                result = asyncio.run(run_once(plan))
                record(result)
                print(_progress(result), file=sys.stderr, flush=True)
                if result["status"] != "ok":
                    stopped[key] = f"stopped: it {result['status']} at N={calls}"
                    continue
                last_good[key] = result
                if not settings.voice:
                    continue
                by_n = heard.setdefault(key, {})
                if isinstance(value := result.get(HELD_METRIC), float):
                    by_n.setdefault(calls, []).append(value)
                if repeat == settings.repeats_for(calls):
                    smallest = min(by_n, default=calls)
                    past = past_held(calls, by_n.get(calls, []), smallest, by_n.get(smallest, []))
                    if past:
                        stopped[key] = past


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


def machine_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(_mem_total_gib(), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "livekit-agents": package_version("livekit-agents"),
        "livekit": package_version("livekit"),
        "openrtc-core": package_version("openrtc-core"),
        "openrtc-testing": package_version("openrtc-testing"),
        "revision": source_revision(),
    }


def merge_results(
    parser: argparse.ArgumentParser, loaded: Sequence[tuple[Path, dict[str, Any]]]
) -> dict[str, Any]:
    """Several results files as one sweep: the first's machine and settings, every file's
    runs and command, the sizes and variants of all. A variant a later file ran is no
    longer skipped where an earlier sweep stopped it: the later sweep decides."""
    (first_path, first), *rest = loaded
    mode = first["settings"].get("mode", "text")
    for path, data in rest:
        if data["settings"].get("mode", "text") != mode:
            parser.error(
                f"argument --from-json: {path} is a {data['settings'].get('mode', 'text')}-mode "
                f"sweep and {first_path} a {mode}-mode one; render them apart"
            )
    if not rest:
        return first
    every = [data for _, data in loaded]
    runs: list[dict[str, Any]] = []
    for data in every:
        # A later sweep of a variant decides where it stops: an earlier sweep's skips of
        # that variant go.
        ran = {run["variant"] for run in data["runs"] if run["status"] != "skipped"}
        runs = [r for r in runs if r["status"] != "skipped" or r["variant"] not in ran]
        runs += data["runs"]
    return {
        **first,
        "command": "\n".join(data["command"] for data in every),
        "duration_s": sum(float(data["duration_s"]) for data in every),
        "complete": all(data.get("complete", True) for data in every),
        "settings": {
            **first["settings"],
            "sizes": sorted({size for data in every for size in data["settings"]["sizes"]}),
            "variants": list(dict.fromkeys(run["variant"] for run in runs)),
        },
        "variants": {key: label for data in every for key, label in data["variants"].items()},
        "runs": runs,
    }


def render_tables(data: dict[str, Any]) -> str:
    """The terminal's tables for a results file of either mode."""
    return render_voice_console(data) if is_voice(data) else render_console(data)


def write_page(data: dict[str, Any], out: Path) -> None:
    """The Markdown page at `out`: all of it for a text sweep, its voice section for a voice
    sweep (the other part kept as it is)."""
    if is_voice(data):
        write_voice_docs(data, out)
    else:
        write_docs(data, out)


def render_saved(parser: argparse.ArgumentParser, paths: Sequence[Path], out: Path | None) -> int:
    """--from-json: the tables from earlier (possibly partial) results files; the page too
    with --out."""
    check_out(parser, out)
    data = merge_results(parser, [(path, load_results(parser, path)) for path in paths])
    print(render_tables(data))
    if out is not None:
        write_page(data, out)
        print(f"wrote {out}", file=sys.stderr)
    return 0


def _header(settings: Settings, arguments: list[str], began: float) -> dict[str, Any]:
    return {
        "command": shlex.join(["python", "-m", "benchmarks.density", *arguments]),
        "started_at": began,
        "machine": machine_info(),
        "settings": {
            "mode": settings.mode,
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
            "caller_turns": list(VOICE_CALLER_TURNS if settings.voice else CALLER_TURNS),
            "reply": REPLY,
            "reply_words": len(REPLY.split()),
            "first_token_delay_s": FIRST_TOKEN_DELAY_S,
            "token_delay_s": TOKEN_DELAY_S,
            **({"sample_rate": VOICE_SAMPLE_RATE} if settings.voice else {}),
        },
        "variants": {key: VARIANTS[key].label for key in settings.variants},
    }


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.from_json is not None:
        return render_saved(parser, args.from_json, args.out)
    settings = settings_from(args)
    check_variants(parser, settings)
    check_paths(parser, args, settings)
    if settings.voice:
        prepare_voice(parser)
    began = time.time()
    results = ResultsFile(
        path=settings.json_path, header=_header(settings, arguments, began), began=began
    )
    results.write(complete=False)
    print(
        f"sizes {list(settings.sizes)}, variants {','.join(settings.variants)}, "
        f"{settings.repeats} repeat(s) ({settings.large_repeats} from N={LARGE_N}), "
        f"{settings.mode} mode, pace {settings.pace}, hold {settings.hold_s:g} s, "
        f"time bound {settings.time_bound_s:g} s; "
        f"raw results in {settings.json_path} (rewritten after every run), "
        f"worker logs in {settings.logs_dir}",
        file=sys.stderr,
        flush=True,
    )
    try:
        sweep(settings, results.add)
    except BaseException as exc:
        print(
            f"{'interrupted' if isinstance(exc, KeyboardInterrupt) else 'failed'}: "
            f"{len(results.runs)} finished run(s) kept in {settings.json_path} "
            f"(render them with --from-json {settings.json_path})",
            file=sys.stderr,
        )
        if isinstance(exc, KeyboardInterrupt):
            return 130
        raise
    data = results.write(complete=True)
    print(render_tables(data))
    print(f"wrote {settings.json_path}", file=sys.stderr)
    if settings.out is not None:
        write_page(data, settings.out)
        print(f"wrote {settings.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
