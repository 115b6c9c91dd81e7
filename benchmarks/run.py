"""One benchmark run: one variant's worker, N simulated calls dispatched at once, figures.

The driver (this process) hosts the loopback dispatch server; the worker runs in its own
subprocess (``python -m benchmarks.runner``), so its process tree's PSS and CPU time are its
own. The run:

1. starts the worker, waits until it registered, runs one warm-up call (see
   :func:`_warm_up`), lets it settle, and samples its idle PSS;
2. dispatches all N calls at once and samples the worker's PSS every second until every call
   reported (or the time bound passed, or the machine ran low on memory);
3. asks the worker for its event-loop lag over the calls, and stops it.

Variant E's subprocess is openrtc-workers' supervisor (``benchmarks.runner supervised``):
the run waits until each of its workers registered, warms up each, samples the PSS of the
supervisor and of each worker beside the tree's, reads each worker's loop lag from the file
it writes (:mod:`benchmarks.supervised_worker`), and stops the supervisor with SIGTERM (it
drains its workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs

from openrtc_core import process_tree
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.measure import percentile
from openrtc_testing.worker import dispatch_until_accepted

from .runner import LAG_PREFIX
from .sampling import PssSample, TreeSampler, pss_resolution_mb, tree_cpu_seconds
from .supervised_worker import LAG_DIR_ENV, LAG_START, LAG_STOP, lag_file, started_file
from .variants import Variant
from .workload import CALLER_TURNS, VOICE_CALLER_TURNS, VOICE_ENV, call_metadata

ROOT: Final = Path(__file__).resolve().parent.parent

REGISTER_TIMEOUT_S: Final = 120.0
SETTLE_S: Final = 2.0
IDLE_SAMPLES: Final = 5
IDLE_INTERVAL_S: Final = 0.5
"""The idle PSS is the median of 5 samples 0.5 s apart; their spread is the run's noise."""
REDISPATCH_DELAY_S: Final = 0.25
WORKER_EXIT_TIMEOUT_S: Final = 30.0
LAG_FILES_TIMEOUT_S: Final = 30.0
"""How long a supervised worker may take to answer lag-start or lag-stop with its file."""
STDOUT_LINE_LIMIT: Final = 64 * 1024 * 1024
"""The worker's LAG line carries the whole lag series: 20 samples a second, minutes long."""
_Value = TypeVar("_Value")
FAILED_SHARE: Final = 0.10
"""A run in which at least this share of calls fails counts as failed (the sweep stops)."""


@attrs.frozen(kw_only=True)
class RunPlan:
    variant: Variant
    calls: int
    repeat: int
    hold_s: float
    pause_s: tuple[float, float]
    """Seconds each caller waits before a line, drawn uniformly (workload.PACES)."""
    time_bound_s: float
    memory_floor_mb: float
    logs_dir: Path
    voice: bool = False
    """Callers speak their lines (voice mode) instead of typing them."""


@attrs.define(kw_only=True)
class CallRecord:
    """One simulated call as the driver saw it, with its worker-side report."""

    dispatched_at: float
    accepted: bool = False
    redispatches: int = 0
    outcome: str = "not finished"
    error: str = ""
    started_at: float | None = None
    """session_started_at from the report (wall clock, after session.start returned)."""
    duration_s: float | None = None
    """From session start to the end of the hold, as the worker measured it."""
    turn_latencies_s: list[float] = attrs.field(factory=list)
    worker: int | None = None
    """Which of a supervisor's workers ran the call (its report's ``worker``), None with one."""
    waited_out: list[bool] = attrs.field(factory=list)
    """Voice mode, per turn: the turn detector never said "done" (the longest wait ran out)."""
    voice: dict[str, Any] = attrs.field(factory=dict)
    """Voice mode: the call's audio figures (VoiceCaller.figures)."""

    @property
    def ok(self) -> bool:
        return self.outcome == "completed"

    @property
    def start_latency_s(self) -> float | None:
        return None if self.started_at is None else self.started_at - self.dispatched_at

    @property
    def first_reply_s(self) -> float | None:
        if self.started_at is None or not self.turn_latencies_s:
            return None
        return self.started_at + self.turn_latencies_s[0] - self.dispatched_at

    @property
    def ended_at(self) -> float | None:
        if self.started_at is None or self.duration_s is None:
            return None
        return self.started_at + self.duration_s

    @property
    def turns_done_at(self) -> float | None:
        """When the last turn's reply was done, for a call whose caller does not pause
        (burst pace): the session's start plus its turns' latencies."""
        if self.started_at is None or not self.turn_latencies_s:
            return None
        return self.started_at + sum(self.turn_latencies_s)

    def take_report(self, report: dict[str, Any]) -> None:
        self.outcome = str(report.get("outcome", "unknown"))
        self.error = str(report.get("error") or "")
        started = report.get("session_started_at")
        self.started_at = float(started) if isinstance(started, int | float) else None
        duration = report.get("duration_s")
        self.duration_s = float(duration) if isinstance(duration, int | float) else None
        self.turn_latencies_s = [float(t["latency_s"]) for t in report.get("turns", [])]
        self.waited_out = [bool(t.get("turn_waited_out")) for t in report.get("turns", [])]
        self.voice = dict(report.get("voice") or {})
        worker = report.get("worker")
        self.worker = worker if isinstance(worker, int) else None


def _quantiles(values: list[float], prefix: str) -> dict[str, float | None]:
    if not values:
        return {f"{prefix}_p50_s": None, f"{prefix}_p95_s": None, f"{prefix}_p99_s": None}
    return {
        f"{prefix}_p50_s": percentile(values, 50),
        f"{prefix}_p95_s": percentile(values, 95),
        f"{prefix}_p99_s": percentile(values, 99),
    }


def all_live_lag(calls: list[CallRecord], lag: dict[str, Any] | None) -> dict[str, Any] | None:
    """The loop lag while the most sessions were live at once (the "holding N" phase).

    The whole-run figure also covers the burst of session starts and the calls winding
    down; this one is the steady state of a worker holding all its calls. The samples'
    series is dropped from `lag` here: the figures are what the report keeps.
    """
    if lag is None:
        return None
    most, held = while_most_live(calls, [(at, value) for at, value in lag.pop("series", [])])
    if not held:
        return None
    return {
        "live_sessions": most,
        "samples": len(held),
        "p50_s": percentile(held, 50),
        "p99_s": percentile(held, 99),
        "max_s": max(held),
    }


def while_most_live(
    calls: list[CallRecord], timed: list[tuple[float, _Value]]
) -> tuple[int, list[_Value]]:
    """The most sessions live at once, and the values sampled (at wall time) while they were."""
    counted = [(live_at(calls, at), value) for at, value in timed]
    most = max((live for live, _ in counted), default=0)
    return most, [value for live, value in counted if live == most and live > 0]


def live_at(calls: list[CallRecord], at: float) -> int:
    """How many sessions were up (started, not yet past their hold) at wall time `at`."""
    live = 0
    for call in calls:
        start, end = call.started_at, call.ended_at
        if start is not None and start <= at and (end is None or at < end):
            live += 1
    return live


def memory_figures(
    calls: list[CallRecord], samples: list[PssSample], idle_mb: list[float]
) -> dict[str, Any]:
    """PSS while the most sessions were live at once, and what each of them added.

    The samples taken while the number of live sessions was at its maximum are the "all
    live" samples (all N when the hold outlasts the spread of start times); their median,
    minus the idle worker's PSS (the median of `idle_mb`), divided by that number, is the
    added PSS per session. Its resolution is the PSS resolution (from the idle samples'
    spread and the all-live samples' steps, :func:`pss_resolution_mb`) divided by the same
    number: a figure smaller than that is noise.
    """
    baseline_mb = statistics.median(idle_mb)
    peak_mb = max((s.pss_mb for s in samples), default=0.0)
    max_live, at_max = while_most_live(calls, [(s.at, s.pss_mb) for s in samples])
    if not at_max:
        return {
            "peak_pss_mb": peak_mb,
            "max_live_sessions": 0,
            "live_pss_mb": None,
            "added_pss_per_session_mb": None,
            "pss_resolution_mb": pss_resolution_mb(idle_mb),
            "added_pss_resolution_mb": None,
            "processes_at_peak": max((s.processes for s in samples), default=0),
        }
    live_mb = statistics.median(at_max)
    resolution_mb = pss_resolution_mb(idle_mb, at_max)
    return {
        "peak_pss_mb": peak_mb,
        "max_live_sessions": max_live,
        "live_pss_mb": live_mb,
        "added_pss_per_session_mb": (live_mb - baseline_mb) / max_live,
        "pss_resolution_mb": resolution_mb,
        "added_pss_resolution_mb": resolution_mb / max_live,
        "processes_at_peak": max((s.processes for s in samples), default=0),
    }


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def supervised_figures(
    calls: list[CallRecord],
    samples: list[PssSample],
    idle: list[PssSample],
    lags: dict[int, dict[str, Any]],
    supervisor_pid: int,
) -> dict[str, Any]:
    """Variant E: the supervisor's PSS, and each worker's calls, turn latency, PSS and loop
    lag; the worst worker's loop lag stands for the run's (``loop_lag``,
    ``loop_lag_all_live``).

    A worker's PSS is its subtree's (PssSample.parts); idle is the median of the idle
    samples, live the median of those taken while the most sessions were live at once, and
    its added PSS per session is the difference ÷ its own calls live then. Its loop lag is
    cut at the same window as the whole tree's.
    """
    pids = {index: int(lag["pid"]) for index, lag in lags.items() if "pid" in lag}
    _, at_max = while_most_live(calls, [(s.at, s) for s in samples])
    workers = []
    for index in sorted(pids):
        pid = pids[index]
        mine = [c for c in calls if c.worker == index]
        idle_mb = _median([s.parts[pid] for s in idle if pid in s.parts])
        live_mb = _median([s.parts[pid] for s in at_max if pid in s.parts])
        live = max((live_at(mine, s.at) for s in at_max), default=0)
        lag = lags[index]
        all_live = all_live_lag(calls, lag)
        turns = [t for c in mine for t in c.turn_latencies_s]
        added = None
        if idle_mb is not None and live_mb is not None and live:
            added = (live_mb - idle_mb) / live
        workers.append(
            {
                "worker": index,
                "pid": pid,
                "calls": len(mine),
                "completed": len([c for c in mine if c.ok]),
                "turns": len(turns),
                **_quantiles(turns, "turn"),
                "idle_pss_mb": idle_mb,
                "live_pss_mb": live_mb,
                "live_sessions": live,
                "added_pss_per_session_mb": added,
                "loop_lag": lag,
                "loop_lag_all_live": all_live,
            }
        )
    unassigned = len([c for c in calls if c.accepted and c.worker not in pids])
    return {
        "worker_processes": len(workers),
        "workers": workers,
        "calls_without_worker": unassigned,
        "supervisor": {
            "pid": supervisor_pid,
            "idle_pss_mb": _median([s.parts[supervisor_pid] for s in idle if s.parts]),
            "live_pss_mb": _median([s.parts[supervisor_pid] for s in at_max if s.parts]),
        },
        "loop_lag": _worst(workers, "loop_lag"),
        "loop_lag_all_live": _worst(workers, "loop_lag_all_live"),
        "process_init": None,
    }


def _worst(workers: Iterable[dict[str, Any]], part: str) -> dict[str, Any] | None:
    """The figures of the worker whose `part` has the highest p99, naming it."""
    measured = [(w[part], w["worker"]) for w in workers if w.get(part)]
    if not measured:
        return None
    figures, index = max(measured, key=lambda found: found[0].get("p99_s") or 0.0)
    return {**{k: v for k, v in figures.items() if k != "gc"}, "worker": index}


async def _call(
    lk: LoopbackDispatchServer, room: str, metadata: str, deadline: float
) -> CallRecord:
    record = CallRecord(dispatched_at=time.time())
    try:
        # Like LiveKit's dispatcher, offer the job again while the worker answers "not now"
        # (terminate=False), until the run's deadline.
        while True:
            d = await lk.dispatch(room, job_metadata=metadata)
            if d.accepted or d.terminate or time.monotonic() >= deadline:
                break
            record.redispatches += 1
            await asyncio.sleep(REDISPATCH_DELAY_S)
        if not d.accepted:
            record.outcome = "not accepted"
            record.error = d.error
            return record
        record.accepted = True
        report = await lk.wait_for_report(d.job_id, timeout=max(0.1, deadline - time.monotonic()))
    except TimeoutError:
        record.outcome = "no report"
        record.error = "the call did not report before the run's time bound"
        return record
    except (ConnectionError, RuntimeError) as exc:
        record.outcome = "no report"
        record.error = f"{type(exc).__name__}: {exc}"
        return record
    record.take_report(report)
    return record


class _Worker:
    """The worker subprocess, with its stdout read in the background for LAG lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lag_lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read_stdout(), name="worker-stdout")

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _read_stdout(self) -> None:
        if self.proc.stdout is None:
            return  # a supervisor's stdout goes to the log
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith(LAG_PREFIX):
                self.lag_lines.put_nowait(json.loads(line[len(LAG_PREFIX) :]))

    async def command(self, text: str) -> None:
        if self.proc.stdin is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ConnectionError):
            self.proc.stdin.write(text.encode() + b"\n")
            await self.proc.stdin.drain()

    async def lag_start(self) -> None:
        await self.command("lag start")

    async def loop_lag(self) -> dict[str, Any] | None:
        await self.command("lag stop")
        try:
            return await asyncio.wait_for(self.lag_lines.get(), 30)
        except TimeoutError:
            return None

    async def stop(self) -> int | None:
        """Ask the worker to exit; kill its process group if it does not, and any stragglers.

        The group is the worker's own (it was started in a new session), so this reaches
        its job processes, which ignore SIGTERM, and nothing else.
        """
        await self.command("quit")
        with contextlib.suppress(ConnectionError, OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), WORKER_EXIT_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        await self._stop_reading()
        return self.proc.returncode

    async def _stop_reading(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class _Supervisor(_Worker):
    """Variant E's subprocess: openrtc-workers' supervisor, its workers steered by files."""

    def __init__(self, proc: asyncio.subprocess.Process, lag_dir: Path, workers: int) -> None:
        super().__init__(proc)
        self.lag_dir = lag_dir
        self.workers = workers

    async def lag_start(self) -> None:
        """Every worker samples its loop from now on (waits until each said it does)."""
        (self.lag_dir / LAG_START).touch()
        await _appear([started_file(self.lag_dir, i) for i in range(1, self.workers + 1)])

    async def worker_lags(self) -> dict[int, dict[str, Any]]:
        """Each worker's loop lag since lag_start, by worker index (those that answered)."""
        (self.lag_dir / LAG_STOP).touch()
        paths = [lag_file(self.lag_dir, i) for i in range(1, self.workers + 1)]
        await _appear(paths)
        found = {}
        for index, path in enumerate(paths, start=1):
            with contextlib.suppress(OSError, ValueError):
                found[index] = json.loads(path.read_text(encoding="utf-8"))
        return found

    async def stop(self) -> int | None:
        """SIGTERM to the supervisor: it drains its workers and exits. Whatever is left of
        its tree after the timeout is killed, each worker by its own process group."""
        tree = process_tree(self.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), WORKER_EXIT_TIMEOUT_S)
        except TimeoutError:
            for pid in tree:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if os.getpgid(pid) == pid:
                        os.killpg(pid, signal.SIGKILL)
            await self.proc.wait()
        await self._stop_reading()
        return self.proc.returncode


async def _appear(paths: Sequence[Path], timeout_s: float = LAG_FILES_TIMEOUT_S) -> None:
    """Wait until every one of `paths` exists, or the timeout passed."""
    deadline = time.monotonic() + timeout_s
    # Polled: the files are written by other processes.
    while not all(map(os.path.exists, paths)) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def _worker_env(plan: RunPlan, lk: LoopbackDispatchServer) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            **lk.worker_env(),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
    )
    env.update(plan.variant.env(plan.calls))
    if plan.voice:
        env[VOICE_ENV] = "1"
    return env


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


async def run_once(plan: RunPlan) -> dict[str, Any]:
    """Run one variant at one N; return its figures as a JSON-ready dict."""
    if plan.variant.supervised:
        with tempfile.TemporaryDirectory(prefix="openrtc-bench-lag-") as lag_dir:
            return await _run_once(plan, Path(lag_dir))
    return await _run_once(plan, None)


async def _run_once(plan: RunPlan, lag_dir: Path | None) -> dict[str, Any]:
    plan.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = plan.logs_dir / f"{plan.variant.key}-n{plan.calls}-r{plan.repeat}.log"
    result: dict[str, Any] = {
        "variant": plan.variant.key,
        "label": plan.variant.label,
        "name": plan.variant.name,
        "config": plan.variant.describe(plan.calls),
        "calls": plan.calls,
        "repeat": plan.repeat,
        "hold_s": plan.hold_s,
        "pause_s": list(plan.pause_s),
        "status": "ok",
        "note": "",
        "log": str(log_path),
    }
    workers = plan.variant.workers()
    async with LoopbackDispatchServer() as lk:
        env = _worker_env(plan, lk)
        args: list[str] = [plan.variant.kind]
        if lag_dir is not None:
            env[LAG_DIR_ENV] = str(lag_dir)
            # E is openrtc-workers' supervisor itself, also where openrtc-deploy is installed.
            env["OPENRTC_DISABLE_PLUGINS"] = "deploy"
            args += ["--workers", str(workers)]
        with log_path.open("wb") as log:
            spawned = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "benchmarks.runner",
                *args,
                # The supervisor reads no commands: it is steered by files and signals.
                stdin=asyncio.subprocess.PIPE if lag_dir is None else asyncio.subprocess.DEVNULL,
                # ... and, like livekit's start, logs JSON lines on stdout: they go to the log.
                stdout=asyncio.subprocess.PIPE if lag_dir is None else log,
                stderr=log,
                cwd=ROOT,
                env=env,
                start_new_session=True,
                limit=STDOUT_LINE_LIMIT,
            )
        worker = _Worker(proc) if lag_dir is None else _Supervisor(proc, lag_dir, workers)
        try:
            await _drive(plan, lk, worker, spawned, result)
        finally:
            result["worker_exit_code"] = await worker.stop()
    if result["status"] not in ("ok",):
        result["log_tail"] = _log_tail(log_path)
    return result


async def _registered(lk: LoopbackDispatchServer, count: int) -> None:
    """Until `count` workers are registered (all of a supervisor's)."""
    await lk.wait_for_worker(timeout=REGISTER_TIMEOUT_S)
    deadline = time.monotonic() + REGISTER_TIMEOUT_S
    while len([w for w in lk.workers if not w.closed]) < count:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"fewer than {count} workers registered")
        await asyncio.sleep(0.1)


async def _wait_registered(lk: LoopbackDispatchServer, worker: _Worker, count: int) -> bool:
    registered = asyncio.create_task(_registered(lk, count))
    exited = asyncio.create_task(worker.proc.wait())
    done, _ = await asyncio.wait({registered, exited}, return_when=asyncio.FIRST_COMPLETED)
    for task in (registered, exited):
        task.cancel()
    return registered in done and registered.exception() is None


async def _warm_up(lk: LoopbackDispatchServer, workers: int, *, voice: bool) -> str:
    """One short call per worker before the idle PSS is sampled; what went wrong, or "".

    One-time costs (the forkserver a process-isolated pool starts for its first job,
    modules a first session imports lazily, in voice mode the turn detector's model) then sit
    in the idle baseline instead of being charged to the N sessions measured after it. A
    supervisor's workers each get one: the dispatch server offers calls round-robin, so
    consecutive calls reach each in turn.
    """
    seen: set[int | None] = set()
    for _ in range(3 * workers):
        problem, worker = await _warm_up_call(lk, voice=voice)
        if problem:
            return problem
        seen.add(worker)
        if len(seen) >= workers:
            return ""
    return f"{workers} workers, but the warm-up calls reached only {sorted(map(str, seen))}"


async def _warm_up_call(lk: LoopbackDispatchServer, *, voice: bool) -> tuple[str, int | None]:
    """One short call: what went wrong (or ""), and which worker ran it.

    A worker whose loop is still busy starting up answers "not available"; the call is
    offered again, as LiveKit would.
    """
    turns = (VOICE_CALLER_TURNS if voice else CALLER_TURNS)[:1]
    metadata = call_metadata(turns=turns, hold_s=0.0, voice=voice)
    d = await dispatch_until_accepted(
        lk, "bench-warm-up", job_metadata=metadata, retry_for_s=REGISTER_TIMEOUT_S
    )
    if not d.accepted:
        return f"not accepted: {d.error}", None
    try:
        report = await lk.wait_for_report(d.job_id, timeout=REGISTER_TIMEOUT_S)
        await d.wait_for_status(timeout=REGISTER_TIMEOUT_S)
    except TimeoutError as exc:
        return str(exc), None
    if report.get("outcome") != "completed":
        return f"{report.get('outcome')}: {report.get('error')}", None
    worker = report.get("worker")
    return "", worker if isinstance(worker, int) else None


async def _drive(
    plan: RunPlan,
    lk: LoopbackDispatchServer,
    worker: _Worker,
    spawned: float,
    result: dict[str, Any],
) -> None:
    workers = worker.workers if isinstance(worker, _Supervisor) else 1
    if not await _wait_registered(lk, worker, workers):
        result["status"] = "crashed"
        result["note"] = "the worker did not register"
        if workers > 1:
            result["note"] = f"not all {workers} workers registered"
        return
    result["worker_ready_s"] = time.monotonic() - spawned
    warm_up = await _warm_up(lk, workers, voice=plan.voice)
    if warm_up:
        result["status"] = "crashed"
        result["note"] = f"the warm-up call failed: {warm_up}"
        return
    await asyncio.sleep(SETTLE_S)
    loop = asyncio.get_running_loop()
    memory_low = asyncio.Event()
    sampler = TreeSampler(
        worker.pid,
        memory_floor_mb=plan.memory_floor_mb,
        on_out_of_memory=lambda: loop.call_soon_threadsafe(memory_low.set),
        parts=isinstance(worker, _Supervisor),
    )
    idle = []
    for i in range(IDLE_SAMPLES):
        if i:
            await asyncio.sleep(IDLE_INTERVAL_S)
        idle.append(await asyncio.to_thread(sampler.sample))
    idle_mb = [s.pss_mb for s in idle]
    result["idle_pss_mb"] = statistics.median(idle_mb)
    result["idle_pss_samples_mb"] = [round(mb, 3) for mb in idle_mb]
    result["idle_processes"] = max(s.processes for s in idle)

    metadata = call_metadata(hold_s=plan.hold_s, pause_s=plan.pause_s, voice=plan.voice)
    cpu_before = await asyncio.to_thread(tree_cpu_seconds, worker.pid)
    await worker.lag_start()
    sampler.start()
    started = time.monotonic()
    deadline = started + plan.time_bound_s
    tasks = [
        asyncio.create_task(_call(lk, f"bench-{plan.variant.key}-{i}", metadata, deadline))
        for i in range(plan.calls)
    ]
    everything = asyncio.gather(*tasks)
    exited = asyncio.create_task(worker.proc.wait())
    low = asyncio.create_task(memory_low.wait())
    watched: set[asyncio.Future[Any]] = {everything, exited, low}
    await asyncio.wait(
        watched,
        timeout=plan.time_bound_s + 5,
        return_when=asyncio.FIRST_COMPLETED,
    )
    wall = time.monotonic() - started
    if memory_low.is_set():
        result["status"] = "out of memory"
        result["note"] = f"available memory fell below {plan.memory_floor_mb:.0f} MiB"
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.pid, signal.SIGKILL)
    elif exited.done():
        result["status"] = "crashed"
        result["note"] = f"the worker exited with code {worker.proc.returncode} mid-run"
    elif not everything.done() or wall >= plan.time_bound_s:
        # Calls stop waiting for their reports at the deadline, so a run that reached it
        # timed out even when every call task has returned.
        result["status"] = "timed out"
        result["note"] = f"not every call reported within {plan.time_bound_s:.0f} s"
    low.cancel()
    exited.cancel()
    cpu_after = await asyncio.to_thread(tree_cpu_seconds, worker.pid)
    if isinstance(worker, _Supervisor):
        lags = await worker.worker_lags()
    else:
        lag = await worker.loop_lag()
    sampler.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(everything, return_exceptions=True)
    calls = [t.result() for t in tasks if t.done() and not t.cancelled()]
    calls += [CallRecord(dispatched_at=0.0) for t in tasks if t.cancelled()]
    _figures(plan, result, calls, sampler.samples, idle_mb, wall, cpu_after - cpu_before)
    if isinstance(worker, _Supervisor):
        result.update(supervised_figures(calls, sampler.samples, idle, lags, worker.pid))
        result["pss_part_samples"] = [
            [round(s.at, 3), {str(pid): round(mb, 2) for pid, mb in s.parts.items()}]
            for s in sampler.samples
        ]
        missing = workers - len(lags)
        if missing and result["status"] == "ok":
            result["status"] = "failed"
            result["note"] = f"{missing} of {workers} workers wrote no loop lag"
        return
    result["loop_lag_all_live"] = all_live_lag(calls, lag)
    result["process_init"] = lag.pop("process_init", None) if lag is not None else None
    result["loop_lag"] = lag


def _figures(
    plan: RunPlan,
    result: dict[str, Any],
    calls: list[CallRecord],
    samples: list[PssSample],
    idle_mb: list[float],
    wall_s: float,
    cpu_s: float,
) -> None:
    completed = [c for c in calls if c.ok]
    failures = len(calls) - len(completed)
    turns = sum(len(c.turn_latencies_s) for c in calls)
    errors: dict[str, int] = {}
    for call in calls:
        if not call.ok:
            key = f"{call.outcome}: {call.error}"[:200]
            errors[key] = errors.get(key, 0) + 1
    if result["status"] == "ok" and failures >= max(1, FAILED_SHARE * plan.calls):
        result["status"] = "failed"
        result["note"] = f"{failures} of {plan.calls} calls failed"
    starts = [c.start_latency_s for c in calls if c.start_latency_s is not None]
    # Throughput, where callers do not pause (burst): turns answered over the time from
    # the first dispatch to the last reply done.
    turns_per_s = None
    if plan.pause_s[1] <= 0 and turns:
        dispatched = min(c.dispatched_at for c in calls if c.dispatched_at > 0)
        done = max((at for c in calls if (at := c.turns_done_at) is not None), default=None)
        if done is not None and done > dispatched:
            turns_per_s = turns / (done - dispatched)
    replies = [c.first_reply_s for c in calls if c.first_reply_s is not None]
    turn_latencies = [t for c in calls for t in c.turn_latencies_s]
    result.update(
        {
            "completed": len(completed),
            "failures": failures,
            "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5]),
            "redispatches": sum(c.redispatches for c in calls),
            "wall_s": wall_s,
            "turns": turns,
            "expected_turns": plan.calls * len(CALLER_TURNS),
            "cpu_s": cpu_s,
            "cpu_per_turn_s": cpu_s / turns if turns else None,
            "turns_per_s": turns_per_s,
            **_quantiles(starts, "start"),
            **_quantiles(replies, "first_reply"),
            **_quantiles(turn_latencies, "turn"),
            "start_max_s": max(starts, default=None),
            **memory_figures(calls, samples, idle_mb),
            "pss_samples": [[round(s.at, 3), round(s.pss_mb, 2), s.processes] for s in samples],
        }
    )
    if plan.voice:
        result.update(voice_figures(calls, cpu_s))


def voice_figures(calls: Sequence[CallRecord], cpu_s: float) -> dict[str, Any]:
    """Voice mode: what the callers heard, the worker's CPU per second of call, the line.

    A voice turn's latency is what its caller heard: end of speech to the agent's first
    audio. Turns the turn detector never ended (it waited the endpointing delay out) are
    counted, and the latency of the others is given apart: theirs moves with the worker's
    load, the waited-out ones mostly with the detector's doubt about the clip.
    """
    heard = [t for c in calls for t in c.turn_latencies_s]
    detected = [
        t
        for c in calls
        for t, waited in zip(c.turn_latencies_s, c.waited_out, strict=True)
        if not waited
    ]
    call_s = sum(c.duration_s for c in calls if c.duration_s)

    def total(key: str) -> float:
        return sum(float(c.voice.get(key) or 0.0) for c in calls)

    return {
        **_quantiles(heard, "heard"),
        "heard_max_s": max(heard, default=None),
        **_quantiles(detected, "heard_detected"),
        "turns_waited_out": sum(w for c in calls for w in c.waited_out),
        "call_seconds": call_s,
        "cpu_per_call_s": cpu_s / call_s if call_s else None,
        "vad_inference_per_call_s": total("vad_inference_s") / call_s if call_s else None,
        "frames_sent": int(total("frames_sent")),
        "frames_late": int(total("frames_late")),
        "frames_dropped": int(total("frames_dropped")),
        "max_input_lag_s": max(
            (float(c.voice.get("max_input_lag_s") or 0.0) for c in calls), default=None
        ),
    }
