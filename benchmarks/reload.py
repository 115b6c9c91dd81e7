"""Hot reload under load: how soon a save reaches new calls and every live call, and at what cost.

    python -m benchmarks.reload                       # 100 calls, 5 saves 3 s apart
    python -m benchmarks.reload --isolation process --calls 20 --json out.json

One event loop holds a loopback dispatch server, a worker started with ``reload=True`` on a
throwaway project (``support`` answers with a version tag after a 50 ms "model" delay, ``sales``
stands by) and ``--calls`` simulated callers of ``support``, each saying ``--turns`` lines, a
pause before each (0.5x to 1.5x ``--pause``, so the callers do not speak in lockstep). Once every
call has had a turn, ``support.py`` is saved ``--saves`` times, ``--interval`` s apart, as an
editor saves (write aside, rename), each time with a new tag. The project's pool module stamps,
on the system-wide monotonic clock, into one file: each time it runs (``loading``: first thing
in every load of the pool's code, a reload's included) and, through a plugin on the pool in every
process hosting it (with ``process`` isolation each job process too), each reload event and each
turn's start (agent ``thinking``) and end (``listening``). Per save, in ms after it: ``applied``
in the worker (new calls get the new code from then on; includes the watcher's 150 ms
debounce); the reload's own duration, from the worker's ``loading`` to its ``applied`` (the
few ms the reloader spends listing modules before it loads are not in it); each live session's
``switched``, and the last one's. Turn latency is each caller's own ``latency_s``; a turn is
"during a swap" when its start..end overlaps a save..last-switch window; the worker's loop lag
(how late a task sleeping 10 ms wakes) is cut the same way. ``start-up`` is from creating the
worker to the reloader having read the pool's code. ``--unrelated-files N`` puts a virtualenv
of N tiny files (nothing imports them) in the folder of the agent's module, as a flat project
that keeps its venv beside its code has it. Nothing is asserted on
time: the run fails (exit 1) only on a dropped call (not accepted, or not completed), a call
whose versions went backwards, or a save never applied.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from openrtc_core import load_pool
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.measure import LoopLagMonitor
from openrtc_testing.trees import virtualenv_like
from openrtc_testing.worker import dispatch_until_accepted, running_worker, simulated_call_metadata

from .arguments import OneLineParser, add_numeric_options
from .provenance import package_version, source_revision, uncreatable_dir, unwritable_file
from .tables import number, percentiles, terminal

RESULTS_DIR: Final = Path(tempfile.gettempdir()) / "openrtc-bench"
STAMPS_ENV: Final = "OPENRTC_BENCH_RELOAD_STAMPS"
MODEL_DELAY_S: Final = 0.05
MIN_INTERVAL_S: Final = 0.5
"""Saves closer than the reloader's debounce (150 ms) would be one save."""
WAIT_S: Final = 120.0
TURN_KINDS: Final = ("thinking", "listening")
LAG_INTERVAL_S: Final = 0.01

PROJECT: Final = {  # written as is (no formatter): the pool module, with its stamping plugin
    "app.py": """
        import time; LOADING = time.monotonic()  # this module runs first in each load of the pool
        import json, os
        from openrtc_core import AgentPool, hookimpl
        from openrtc_testing import ScriptedLLM
        from {pkg}.sales import Sales
        from {pkg}.support import Support

        class Stamps:
            def __init__(self, path):
                self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

            def note(self, **fields):
                fields = {{"t": time.monotonic(), "pid": os.getpid(), **fields}}
                os.write(self.fd, (json.dumps(fields) + "\\n").encode())

            @hookimpl
            def openrtc_code_reloaded(self, event):
                fields = dict(agents=list(event.agents), sessions=list(event.sessions))
                self.note(kind=event.kind.value, versions=dict(event.versions), **fields)

            @hookimpl
            def openrtc_session_started(self, info, session):
                def changed(ev):
                    if ev.new_state in ("thinking", "listening"):
                        self.note(kind=ev.new_state, job=info.job_id)
                session.on("agent_state_changed", changed)

        pool = AgentPool(llm=ScriptedLLM(), isolation="{isolation}", max_sessions={sessions})
        pool.add("support", Support, default=True, greeting=None)
        pool.add("sales", Sales, greeting=None)
        stamps = Stamps(os.environ["{env}"])
        pool.plugins.register(stamps)
        stamps.note(kind="loading", t=LOADING)
    """,
    "{pkg}/support.py": """
        import asyncio
        from livekit.agents import Agent

        TAG = "v1"

        class Support(Agent):
            def __init__(self):
                super().__init__(instructions="Help with support.")

            async def llm_node(self, chat_ctx, tools, model_settings):
                await asyncio.sleep({delay})  # the model thinking
                yield f"{{TAG}}: thanks, noted."
    """,
    "{pkg}/sales.py": """
        from livekit.agents import Agent

        class Sales(Agent):
            def __init__(self):
                super().__init__(instructions="Sell.")
    """,
    "{pkg}/__init__.py": "",
}


def write_project(root: Path, isolation: str, sessions: int) -> tuple[Path, Path]:
    """The project under `root`, in a package of its own name: (its app.py, its support.py)."""
    pkg = f"reloadbench_{uuid.uuid4().hex[:8]}"
    (root / pkg).mkdir(parents=True)
    fields = {"pkg": pkg, "isolation": isolation, "sessions": sessions, "env": STAMPS_ENV}
    for name, text in PROJECT.items():
        code = textwrap.dedent(text).format(**fields, delay=MODEL_DELAY_S)
        (root / name.format(pkg=pkg)).write_text(code)
    return root / "app.py", root / pkg / "support.py"


def save(path: Path, text: str) -> None:
    """Replace `path` as an editor does: write a new file beside it, then rename."""
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    aside.write_text(text)
    os.replace(aside, path)


class StampFile:
    """The stamps file, read as it grows (whole lines only, each line parsed once)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.rows = path, 0, list[dict[str, Any]]()

    def read(self) -> list[dict[str, Any]]:
        if self.path.exists():
            with self.path.open("rb") as file:
                file.seek(self.offset)
                data = file.read()
            whole = data[: data.rfind(b"\n") + 1]
            self.offset += len(whole)
            self.rows += [json.loads(line) for line in whole.splitlines()]
        return self.rows


async def until(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)
    return found


async def one_call(
    dispatch: LoopbackDispatchServer, n: int, a: argparse.Namespace
) -> dict[str, Any]:
    lines = [f"line {i}" for i in range(a.turns)]
    meta = simulated_call_metadata("support", turns=lines, pause_s=(a.pause / 2, a.pause * 1.5))
    d = await dispatch_until_accepted(dispatch, f"reload-bench-{n}", job_metadata=meta)
    call: dict[str, Any] = {"job_id": d.job_id, "accepted": d.accepted, "turns": []}
    try:
        if not d.accepted:
            raise RuntimeError(f"not accepted: {d.error}")
        report = await dispatch.wait_for_report(d.job_id, timeout=a.turns * (a.pause + 5) + 60)
    except (RuntimeError, TimeoutError) as exc:
        return {**call, "outcome": "no report", "error": str(exc)}
    call["turns"] = [(t["latency_s"], t["version"]) for t in report["turns"]]
    call.update(outcome=report["outcome"], error=report["error"], ended=time.monotonic())
    return call


async def drive(a: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The run: the worker, the calls, the saves. Raw stamps, saves and reports out."""
    app, support = write_project(root / "project", a.isolation, a.calls + 10)
    if a.unrelated_files:
        virtualenv_like(support.parent, a.unrelated_files)
    os.environ[STAMPS_ENV] = str(root / "stamps.jsonl")  # outside the watched project
    stamps, me = StampFile(root / "stamps.jsonl"), os.getpid()
    pool = load_pool(str(app))
    lag = LoopLagMonitor(interval_s=LAG_INTERVAL_S)
    lag.start()
    began = time.monotonic()
    async with LoopbackDispatchServer() as dispatch, running_worker(pool, dispatch, reload=True):
        await until(lambda: "support" in pool.view().agent_versions, "the reloader")
        startup_s = time.monotonic() - began
        log(f"worker and reloader started in {startup_s:.2f} s")
        versions, saves = [pool.view().agent_versions["support"]], list[dict[str, Any]]()
        calls = [asyncio.create_task(one_call(dispatch, n, a)) for n in range(a.calls)]
        log(f"{a.calls} calls dispatched; the first save once each has had a turn")
        await until(
            lambda: len(turn_spans(stamps.read())) >= a.calls or any(c.done() for c in calls),
            "every call's first turn",
            WAIT_S + a.calls,
        )
        for n in range(2, a.saves + 2):
            text = support.read_text().replace(f'TAG = "v{n - 1}"', f'TAG = "v{n}"')
            seen, t_save = len(stamps.read()), time.monotonic()
            save(support, text)

            def applied(seen: int = seen) -> list[dict[str, Any]]:
                return [
                    r for r in stamps.read()[seen:] if r["kind"] == "applied" and r["pid"] == me
                ]

            event = (await until(applied, f"save {n - 1} to be applied"))[0]
            versions.append(event["versions"]["support"])
            saves.append({"t": t_save, "version": versions[-1], "applied_t": event["t"]})
            log(f"save {n - 1}: {versions[-2]} → {versions[-1]}")
            await asyncio.sleep(max(0.0, t_save + a.interval - time.monotonic()))
        results = list(await asyncio.gather(*calls))
    await lag.stop()
    # The monitor stamps wall-clock times; the stamps are monotonic: shift them over.
    shift = time.monotonic() - time.time()
    lags = [[t + shift, s] for t, s in zip(lag.times, lag.samples, strict=True)]
    raw = dict(pid=me, versions=versions, saves=saves, calls=results)
    raw.update(startup_s=startup_s, startup_end=began + startup_s, loop_lag=lags)
    return {**raw, "stamps": stamps.read()}


def turn_spans(rows: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Each job's turns as (start, end): the agent ``thinking``, then back to ``listening``."""
    spans: dict[str, list[tuple[float, float]]] = {}
    started: dict[str, float] = {}
    for r in sorted((r for r in rows if "job" in r), key=lambda r: float(r["t"])):
        if r["kind"] == "thinking":
            started.setdefault(r["job"], r["t"])
        elif r["job"] in started:
            spans.setdefault(r["job"], []).append((started.pop(r["job"]), r["t"]))
    return spans


def spread(values: Sequence[float]) -> dict[str, Any]:
    """n, p50, p99 (nearest rank) and max of `values`, in their unit; None where empty."""
    return percentiles(values, (50, 99))


def analyse(raw: dict[str, Any]) -> dict[str, Any]:
    """Per-save and overall figures (ms), every call's turns, and the checks."""
    rows, me, t0 = raw["stamps"], raw["pid"], raw["saves"][0]["t"] if raw["saves"] else 0.0
    events = [r for r in rows if r["kind"] not in TURN_KINDS]
    saves, windows = [], []
    for s in raw["saves"]:
        ours = [r for r in events if r.get("versions", {}).get("support") == s["version"]]
        switched = [(r["t"] - s["t"]) * 1000 for r in ours if r["kind"] == "switched"]
        jobs = [(r["t"] - s["t"]) * 1000 for r in ours if r["kind"] == "applied" and r["pid"] != me]
        loads = [r["t"] for r in events if r["kind"] == "loading" and r["pid"] == me]
        load = max([t for t in loads if s["t"] < t < s["applied_t"]], default=None)
        live = [c for c in raw["calls"] if c["accepted"] and c.get("ended", 0) > s["applied_t"]]
        windows.append((s["t"], max([r["t"] for r in ours], default=s["applied_t"])))
        saves.append(dict(version=s["version"], applied_ms=(s["applied_t"] - s["t"]) * 1000))
        reload_ms = None if load is None else (s["applied_t"] - load) * 1000
        saves[-1].update(reload_ms=reload_ms, live_sessions=len(live))
        saves[-1].update(switched=spread(switched), switched_ms=switched, job_procs_applied_ms=jobs)
    order = {v: i for i, v in enumerate(raw["versions"])}
    spans, during, other, calls = turn_spans(rows), list[float](), list[float](), []
    for c in raw["calls"]:
        turns = []
        for (latency, version), span in zip(c["turns"], spans.get(c["job_id"], []), strict=False):
            swap = any(span[0] <= end and span[1] >= start for start, end in windows)
            (during if swap else other).append(latency * 1000)
            at = [round(t - t0, 4) for t in span]
            turns.append([round(latency * 1000, 2), version, *at, swap])
        steps = [order.get(version, -1) for _, version in c["turns"]]
        backwards = -1 in steps or steps != sorted(steps)
        calls.append({k: c[k] for k in ("job_id", "accepted", "outcome", "error")})
        calls[-1].update(turns=turns, backwards=backwards, unstamped=len(c["turns"]) - len(turns))
    dropped = [c for c in calls if not c["accepted"] or c["outcome"] != "completed"]
    return {
        "saves": saves,
        "applied_ms": spread([s["applied_ms"] for s in saves]),
        "reload_ms": spread([s["reload_ms"] for s in saves if s["reload_ms"] is not None]),
        "switched_ms": spread([ms for s in saves for ms in s["switched_ms"]]),
        "turn_ms_during_swaps": spread(during),
        "turn_ms_otherwise": spread(other),
        "startup_ms": spread([raw["startup_s"] * 1000]),
        **loop_lag(raw["loop_lag"], windows, raw["startup_end"]),
        "calls_dropped": len(dropped),
        "calls_with_versions_backwards": [c["job_id"] for c in calls if c["backwards"]],
        "turns_without_stamps": sum(c["unstamped"] for c in calls),
        "turn_fields": ["latency_ms", "version", "start_s", "end_s", "during_swap"],
        "calls": calls,
        "events": [{**r, "t": round(r["t"] - t0, 4)} for r in events],
    }


def loop_lag(
    samples: list[list[float]], windows: list[tuple[float, float]], startup_end: float
) -> dict[str, Any]:
    """The loop's lag (ms) in the samples taken while the worker started, during a
    save..last-switch window, and in the others."""
    startup, during, other = list[float](), list[float](), list[float]()
    for t, lag in samples:
        # A sample taken at t measured the sleep that ended then.
        swap = any(start <= t <= end + LAG_INTERVAL_S + lag for start, end in windows)
        (startup if t <= startup_end + lag else during if swap else other).append(lag * 1000)
    return {
        "loop_lag_ms_in_startup": spread(startup),
        "loop_lag_ms_during_swaps": spread(during),
        "loop_lag_ms_otherwise": spread(other),
    }


def ms(value: float | None) -> str:
    return number(value, "{:.0f}", missing="-")


def trio(f: dict[str, Any]) -> list[str]:
    """The p50, p99 and max cells of a :func:`spread`."""
    return [ms(f["p50"]), ms(f["p99"]), ms(f["max"])]


OVERALL: Final = (
    ("applied", "applied_ms", "saves"),
    ("reload", "reload_ms", "saves"),
    ("switched", "switched_ms", "sessions"),
    ("turn during swaps", "turn_ms_during_swaps", "turns"),
    ("turn otherwise", "turn_ms_otherwise", "turns"),
    ("loop lag in start-up", "loop_lag_ms_in_startup", "samples"),
    ("loop lag in swaps", "loop_lag_ms_during_swaps", "samples"),
    ("loop lag otherwise", "loop_lag_ms_otherwise", "samples"),
    ("start-up", "startup_ms", "start"),
)


SAVE_HEADERS: Final = (
    "save",
    "version",
    "applied",
    "reload",
    "sw p50",
    "sw p99",
    "sw max",
    "switched",
    "job procs applied max",
)


def render(summary: dict[str, Any], a: argparse.Namespace) -> str:
    """The table: one row per save, then the figures over all saves."""
    saves = [
        [
            str(i),
            s["version"],
            ms(s["applied_ms"]),
            ms(s["reload_ms"]),
            *trio(s["switched"]),
            f"{s['switched']['n']}/{s['live_sessions']}",
            ms(max(s["job_procs_applied_ms"], default=None)),
        ]
        for i, s in enumerate(summary["saves"], 1)
    ]
    overall = [
        [label, *trio(summary[key]), f"{summary[key]['n']} {unit}"] for label, key, unit in OVERALL
    ]
    backwards = len(summary["calls_with_versions_backwards"])
    return "\n".join(
        [
            f"hot reload: {a.calls} calls, {a.isolation} isolation, {a.unrelated_files} unrelated "
            "files in the project; ms after each save "
            "(reload: loading the code to applied, in the worker; switched: sessions/live)",
            *terminal(SAVE_HEADERS, saves, "><>>>>>>>"),
            "",
            *terminal(["all saves, ms", "p50", "p99", "max", "n"], overall, "<>>>"),
            f"calls dropped: {summary['calls_dropped']} (must be 0)",
            f"versions backwards: {backwards} call(s) (must be 0)",
        ]
    )


OPTIONS: Final = (
    ("--calls", int, 1, 100, "live calls to support, all dispatched at once"),
    ("--turns", int, 2, 40, "lines each caller says"),
    ("--pause", float, 0.05, 0.5, "mean seconds before each line (0.5x-1.5x: out of step)"),
    ("--saves", int, 1, 5, "saves of support.py, each with a new reply tag"),
    ("--interval", float, MIN_INTERVAL_S, 3.0, "seconds from one save to the next"),
    ("--unrelated-files", int, 0, 0, "files of a virtualenv beside the agent's module"),
)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The arguments, every one checked before anything runs."""
    parser = OneLineParser(prog="python -m benchmarks.reload", description=__doc__.split("\n\n")[0])
    add_numeric_options(parser, OPTIONS)
    parser.add_argument("--isolation", choices=("coroutine", "process"), default="coroutine")
    parser.add_argument(
        "--json", dest="json_path", type=Path, help=f"raw results (a new file in {RESULTS_DIR})"
    )
    args = parser.parse_args(argv)
    needed = (args.saves - 1) * args.interval + 3 * args.pause + 2.0
    if args.turns * args.pause < needed:
        parser.error(
            f"argument --turns: {args.turns} lines {args.pause:g} s apart end before every call "
            f"has switched to the last save (~{needed:g} s): use --turns "
            f"{math.ceil(needed / args.pause)} or more, or fewer --saves"
        )
    problem = unwritable_file(args.json_path) if args.json_path else uncreatable_dir(RESULTS_DIR)
    if problem:
        parser.error(f"argument --json: {problem}")
    stem = f"reload-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"
    args.json_path = args.json_path or RESULTS_DIR / stem
    return args


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(arguments)
    began = time.time()
    with tempfile.TemporaryDirectory(prefix="openrtc-reload-bench-") as tmp:
        try:
            summary = analyse(asyncio.run(drive(args, Path(tmp))))
        except RuntimeError as exc:
            log(f"failed: {exc}")
            return 1
    dists = ("livekit-agents", "openrtc-core", "openrtc-reload", "openrtc-testing")
    machine = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "revision": source_revision(),
    }
    machine.update({"python": platform.python_version(), **{d: package_version(d) for d in dists}})
    data = {
        "command": shlex.join(["python", "-m", "benchmarks.reload", *arguments]),
        "started_at": began,
        "duration_s": time.time() - began,
        "machine": machine,
        "settings": {**vars(args), "model_delay_s": MODEL_DELAY_S},
        **summary,
    }
    args.json_path.parent.mkdir(parents=True, exist_ok=True)
    args.json_path.write_text(json.dumps(data, indent=1, default=str))
    print(render(summary, args))
    log(f"wrote {args.json_path}")
    ok = not summary["calls_dropped"] and not summary["calls_with_versions_backwards"]
    return 0 if ok and len(summary["saves"]) == args.saves else 1


if __name__ == "__main__":
    sys.exit(main())
