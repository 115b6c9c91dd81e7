"""Blue-green deploys under load: how soon new code takes calls, whether any moment had no
taker, and whether any call was dropped.

    python -m benchmarks.deploy                                # 200 calls, 10 deploys, 2 workers
    python -m benchmarks.deploy --calls 6 --deploys 2 --workers 1 --hold 3 --out /tmp/deploy

A real deploy controller (``openrtc start`` with openrtc-deploy, simulation on, ``--workers``
workers per generation) serves a throwaway pool against a loopback dispatch server. The pool
answers "hello" with the contents of a state file, read when a generation imports it, so each
call's report says which code served it as well as which deployment version.

``--calls`` callers keep that many calls live from start to end: each call says one or two
lines, holds for ``--hold`` s (0.8x to 1.2x, so the calls do not end in step) and, when it
ends, its caller dials again. A probe caller places a short call every 0.25 s on top. Once
every caller is on a call, the benchmark deploys ``--deploys`` times: it writes the next reply
to the state file and runs ``openrtc deploy --version bench-N`` as a user runs it, then waits
until the previous generation has drained and exited before the next deploy (a deploy asked
for while one drains would wait for it, and that wait is not what is measured).

Per deploy, in seconds after ``openrtc deploy`` was started: when it returned (every worker of
the new generation registered, the old one draining), when a worker of the new generation
first accepted a call, and the controller's own count from the generation's start to ready.
Then, from the deploy to the old generation's exit: the longest stretch in which the loopback
server had no available worker (from its availability timeline), the most offers any call
dispatched then needed (more than one is a moment with no taker), each old and new worker's
reported status (a registered worker that reports itself full takes no call), and how long
the old generation drained. The workers' own "worker full" lines are collected from the log.

Nothing is asserted on time. The run fails (exit 1) when a deploy fails, a call is dropped
(not accepted, or not completed), a drain cuts a call, or a call is served by a version other
than the one live when it was dispatched or the next one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import random
import resource
import shlex
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
from livekit.protocol import agent

from openrtc_core import DEPLOY_ATTRIBUTE, VERSION_ENV, process_tree
from openrtc_deploy.client import ControlError, final
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.dispatch import WorkerConnection
from openrtc_testing.measure import LoopLagMonitor, percentile
from openrtc_testing.supervising import PARENT_ENV
from openrtc_testing.worker import dispatch_until_accepted, simulated_call_metadata

from .arguments import OneLineParser, add_numeric_options
from .provenance import package_version, source_revision, uncreatable_dir
from .tables import markdown as markdown_table
from .tables import number, percentiles

DEFAULT_OUT: Final = Path("benchmarks/results/deploy")
POOL_MODULE: Final = "deploybench_pool"
STATE_ENV: Final = "OPENRTC_BENCH_DEPLOY_STATE"
VERSION_PREFIX: Final = "bench-"
PROBE_EVERY_S: Final = 0.25
HOLD_SPREAD: Final = (0.8, 1.2)
SESSION_HEADROOM: Final = 50
"""Slots per worker beyond ``--calls``: one worker may briefly hold every call (while the
other of its generation registers) without reporting itself full."""
START_TIMEOUT_S: Final = 180.0
DEPLOY_TIMEOUT_S: Final = 300.0
REPORT_SLACK_S: Final = 120.0
"""How long after its hold a call's report may take before it counts as dropped."""
STATUS_EVERY_S: Final = 0.5
STOP_TIMEOUT_S: Final = 120.0
SEED: Final = 14

POOL: Final = '''
    """The deploy benchmark's pool; every generation imports it afresh from disk."""
    import os
    from pathlib import Path

    from livekit.agents import Agent

    from openrtc_core import AgentPool
    from openrtc_testing import Rule, ScriptedLLM

    REPLY = (Path(os.environ["{env}"]) / "reply").read_text().strip()


    class Desk(Agent):
        def __init__(self):
            super().__init__(instructions="Answer briefly.")


    pool = AgentPool(
        llm=ScriptedLLM(name="desk-llm", rules=[Rule(when="hello", reply=f"{{REPLY}} here")]),
        turn_handling={{"turn_detection": None}},
        max_sessions={sessions},
    )
    pool.add("desk", Desk, default=True)
'''


def version_of(n: int) -> str:
    return f"{VERSION_PREFIX}{n}"


class NoAnswer(RuntimeError):
    """The controller is running but did not answer on its control socket (yet)."""


@attrs.define(eq=False)
class Call:
    """One simulated call, from its first offer to its report (monotonic times)."""

    n: int
    kind: str
    """``load`` (a caller that dials again when it ends) or ``probe`` (a short call)."""
    dispatched: float
    accepted_at: float | None = None
    offers: int = 0
    refusals: int = 0
    """Workers that answered "not available" before one took it (passed on, not re-offered)."""
    job_id: str = ""
    accepted_by: str = ""
    """The deployment version in the accepting worker's participant attributes."""
    outcome: str = "not accepted"
    deploy: str = ""
    """The deployment version the call's report names."""
    reply: str = ""
    error: str = ""
    ended: float | None = None


@attrs.define(eq=False)
class Deploy:
    """One ``openrtc deploy``: when it ran, what it said, and what the controller reported."""

    n: int
    started: float
    started_wall: float
    live_calls: int
    returned: float | None = None
    exit_status: int | None = None
    said: list[str] = attrs.field(factory=list)
    drained_at: float | None = None
    new: dict[str, Any] = attrs.field(factory=dict)
    old: dict[str, Any] = attrs.field(factory=dict)
    workers: list[dict[str, Any]] = attrs.field(factory=list)
    """Each old and new worker's status as the loopback server saw it in the deploy's window."""

    @property
    def version(self) -> str:
        return version_of(self.n)


@attrs.define(eq=False)
class Bench:
    """The controller, its loopback server, the callers, and what they saw."""

    lk: LoopbackDispatchServer
    proc: asyncio.subprocess.Process
    control: Path
    state: Path
    log: Path
    env: dict[str, str]
    hold: float
    rng: random.Random = attrs.Factory(lambda: random.Random(SEED))
    calls: list[Call] = attrs.Factory(list)
    deploys: list[Deploy] = attrs.Factory(list)
    live: int = 0
    """Held calls (not probes) accepted and not yet ended."""
    stopping: bool = False
    live_samples: list[tuple[float, int]] = attrs.Factory(list)
    load_samples: list[float] = attrs.Factory(list)
    holding_max: int = 0
    serving_ids: set[str] = attrs.Factory(set)
    """The LiveKit worker ids of the generation serving now."""
    """The most generations seen holding calls at once (from ``--status``)."""
    _numbers: itertools.count[int] = attrs.Factory(lambda: itertools.count(1))

    # -- the controller ------------------------------------------------------------------------

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self, what: str) -> None:
        if self.proc.returncode is not None:
            raise RuntimeError(
                f"the controller exited ({self.proc.returncode}) while waiting for {what}; "
                f"its last lines:\n{self.tail()}"
            )

    async def until(self, check: Callable[[], Any], what: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := check()):
            self.check_alive(what)
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} within {timeout:g} s; last lines:\n{self.tail()}")
            await asyncio.sleep(0.05)
        return found

    async def status(self) -> dict[str, Any]:
        """The controller's ``--status``, over its control socket."""
        message = {"op": "status"}
        try:
            answer = await asyncio.to_thread(final, self.control, message, timeout=10.0)
        except ControlError as exc:
            self.check_alive("its status")
            raise NoAnswer(f"the controller did not answer: {exc}") from None
        status: dict[str, Any] = answer.get("status", {})
        return status

    async def watch(self) -> None:
        """Every half second: live calls, the machine's load, generations holding calls."""
        while True:
            self.live_samples.append((time.monotonic(), self.live))
            self.load_samples.append(os.getloadavg()[0])
            with contextlib.suppress(NoAnswer):
                status = await self.status()
                holding = sum(1 for g in status.get("generations", []) if g["live_calls"])
                self.holding_max = max(self.holding_max, holding)
            await asyncio.sleep(STATUS_EVERY_S)

    async def until_settled(self, what: str) -> dict[str, Any]:
        """Until one generation serves and every other has exited; the status then."""
        deadline = time.monotonic() + DEPLOY_TIMEOUT_S
        generations: list[dict[str, Any]] = []
        while True:
            with contextlib.suppress(NoAnswer):  # the socket is there a moment before it listens
                status = await self.status()
                generations = status.get("generations", [])
                live = [g for g in generations if not g["exit"]]
                if len(live) == 1 and live[0]["state"] == "serving":
                    return status
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} within {DEPLOY_TIMEOUT_S:g} s: {generations}")
            await asyncio.sleep(0.2)

    # -- the callers ---------------------------------------------------------------------------

    async def place(self, kind: str, turns: int, hold: float) -> Call:
        """One call until its report; a dropped one is recorded, never raised."""
        call = Call(n=next(self._numbers), kind=kind, dispatched=time.monotonic())
        self.calls.append(call)
        meta = simulated_call_metadata(turns=["hello"] * turns, hold_s=hold)
        d = await dispatch_until_accepted(self.lk, f"{kind}-{call.n}", job_metadata=meta)
        call.offers = d.offers
        call.refusals = d.refused + len(d.rejected_by)
        if not d.accepted:
            call.error = d.error
            call.ended = time.monotonic()
            return call
        call.accepted_at = time.monotonic()
        call.job_id = d.job_id
        call.accepted_by = d.participant_attributes.get(DEPLOY_ATTRIBUTE, "")
        held = 1 if kind == "load" else 0
        self.live += held
        try:
            report = await self.lk.wait_for_report(d.job_id, timeout=hold + REPORT_SLACK_S)
        except TimeoutError as exc:
            call.outcome, call.error = "no report", str(exc)
        else:
            call.outcome = str(report.get("outcome", ""))
            call.deploy = str(report.get("deploy", ""))
            call.error = str(report.get("error") or "")
            first = (report.get("turns") or [{}])[0]
            call.reply = str(first.get("reply", ""))
        finally:
            self.live -= held
            call.ended = time.monotonic()
        return call

    async def caller(self, delay: float) -> None:
        """A caller that keeps one call live: it dials again as soon as a call ends."""
        await asyncio.sleep(delay)
        while not self.stopping:
            hold = self.hold * self.rng.uniform(*HOLD_SPREAD)
            await self.place("load", self.rng.choice((1, 2)), hold)

    async def prober(self) -> None:
        """A short call every PROBE_EVERY_S, each on its own: the deploy's fine time scale."""
        probes: set[asyncio.Task[Call]] = set()
        try:
            while not self.stopping:
                task = asyncio.create_task(self.place("probe", 1, 0.0))
                probes.add(task)
                task.add_done_callback(probes.discard)
                await asyncio.sleep(PROBE_EVERY_S)
        finally:
            await asyncio.gather(*probes)

    # -- deploys -------------------------------------------------------------------------------

    async def deploy(self, n: int) -> Deploy:
        """Deploy bench-N under load, then wait until the previous generation has exited."""
        (self.state / "reply").write_text(version_of(n))
        record = Deploy(
            n=n, started=time.monotonic(), started_wall=time.time(), live_calls=self.live
        )
        self.deploys.append(record)
        old = [w for w in self.lk.workers if w.worker_id in self.serving_ids]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "openrtc_core",
            "deploy",
            "--control",
            str(self.control),
            "--version",
            record.version,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), DEPLOY_TIMEOUT_S)
        record.returned, record.exit_status = time.monotonic(), proc.returncode
        record.said = (out.decode() + err.decode()).strip().splitlines()
        status = await self.until_settled(f"generation of {record.version} alone serving")
        record.drained_at = time.monotonic()
        by_version = {g["version"]: g for g in status["generations"]}
        record.new = by_version.get(record.version, {})
        record.old = by_version.get(version_of(n - 1), {})
        self.serving_ids = worker_ids(record.new) or self.serving_ids
        new = [w for w in self.lk.workers if w.worker_id in worker_ids(record.new)]
        record.workers = [
            *(timeline(w, "old", record) for w in old),
            *(timeline(w, "new", record) for w in new),
        ]
        return record


def worker_ids(generation: dict[str, Any]) -> set[str]:
    return {w["id"] for w in generation.get("workers", []) if w.get("id")}


def timeline(worker: WorkerConnection, side: str, d: Deploy) -> dict[str, Any]:
    """`worker`'s reported status in `d`'s window: when it changed (s after the deploy began),
    and how long it said it was full (a registered worker that is full takes no call)."""
    end = d.drained_at or time.monotonic()
    changes = [
        (round(t - d.started, 3), agent.WorkerStatus.Name(status))
        for t, status in worker.status_since
        if t <= end
    ]
    # The status in effect when the deploy began (changed at a negative time), then each change.
    return {
        "generation": side,
        "id": worker.worker_id,
        "status": [c for c in changes if c[0] < 0][-1:] + [c for c in changes if c[0] >= 0],
        "full_s": round(worker.seconds_in(agent.WS_FULL, d.started, end), 3),
    }


FULL_NOTICES: Final = ("worker full", "worker has room again")
MAX_NOTICES: Final = 100


def full_notices(log: Path) -> list[dict[str, Any]]:
    """The workers' own lines saying they became full or have room again (and why), from
    the controller's log, which holds every generation's."""
    found: list[dict[str, Any]] = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{") or not any(n in line for n in FULL_NOTICES):
            continue
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and str(record.get("message", "")).startswith(FULL_NOTICES):
                keys = ("timestamp", "generation", "deploy", "worker", "message")
                found.append({k: record.get(k) for k in keys})
    return found[:MAX_NOTICES]


def write_pool(root: Path, sessions: int) -> None:
    code = textwrap.dedent(POOL).lstrip().format(env=STATE_ENV, sessions=sessions)
    (root / f"{POOL_MODULE}.py").write_text(code)


def environment(root: Path, state: Path, lk: LoopbackDispatchServer) -> dict[str, str]:
    env = {
        **os.environ,
        **lk.worker_env(),
        "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p),
        "PYTHONUNBUFFERED": "1",
        STATE_ENV: str(state),
        VERSION_ENV: version_of(0),
        # The controller drains when this process dies, however it dies: no controller
        # outlives its benchmark (it would restart its workers for as long as it lives).
        PARENT_ENV: str(os.getpid()),
    }
    for inherited in ("OPENRTC_CONTROL", "OPENRTC_WORKERS"):
        env.pop(inherited, None)
    return env


def stop_tree(pid: int) -> None:
    """SIGKILL the controller and everything under it (only after it failed to stop)."""
    for member in process_tree(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


async def drive(a: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The run: the controller and generation 1, the callers, the deploys, the stop."""
    state, control, log = root / "state", root / "run" / "control.sock", root / "controller.log"
    state.mkdir()
    (state / "reply").write_text(version_of(0))
    write_pool(root, a.calls + SESSION_HEADROOM)
    async with LoopbackDispatchServer() as lk:
        env = environment(root, state, lk)
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "openrtc_testing.supervised",
                f"{POOL_MODULE}:pool",
                "--control",
                str(control),
                "--workers",
                str(a.workers),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C here must not reach the generations twice
            )
        bench = Bench(lk=lk, proc=proc, control=control, state=state, log=log, env=env, hold=a.hold)
        lag = LoopLagMonitor(interval_s=0.1)
        tasks: list[asyncio.Task[Any]] = []
        watcher: asyncio.Task[None] | None = None
        try:
            log_line(f"starting generation 1 ({a.workers} worker(s))")
            await bench.until(control.exists, "control socket", START_TIMEOUT_S)
            first = await bench.until_settled("first generation serving")
            bench.serving_ids = worker_ids(first["generations"][-1])
            ready_at = time.monotonic()
            lag.start()
            watcher = asyncio.create_task(bench.watch())
            spread = a.hold  # the first calls end as evenly as later ones
            tasks = [
                asyncio.create_task(bench.caller(i * spread / a.calls)) for i in range(a.calls)
            ]
            tasks.append(asyncio.create_task(bench.prober()))
            log_line(f"{a.calls} callers ramping up over {spread:g} s")
            await asyncio.sleep(spread + 1.0)
            loaded_at = time.monotonic()
            for n in range(1, a.deploys + 1):
                record = await bench.deploy(n)
                took = (record.returned or 0.0) - record.started
                log_line(
                    f"deploy {n}: exit {record.exit_status}, returned in {took:.1f} s, "
                    f"{record.live_calls} calls live"
                )
                if record.exit_status != 0:
                    log_line("\n".join(record.said[-5:]))
            deployed_at = time.monotonic()
            bench.stopping = True
            log_line("deploys done; letting every call end")
            await asyncio.wait_for(asyncio.gather(*tasks), a.hold * 1.2 + REPORT_SLACK_S + 30)
            watcher.cancel()  # the controller stops next: no status to ask for
            proc.send_signal(signal.SIGTERM)
            exit_status = await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        finally:
            bench.stopping = True
            background = [*tasks, *([watcher] if watcher else [])]
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await lag.stop()
            if proc.returncode is None:
                stop_tree(proc.pid)
                await proc.wait()
    return {
        "full_notices": full_notices(log),
        "bench": bench,
        "lag": lag.samples,
        "ready_at": ready_at,
        "loaded_at": loaded_at,
        "deployed_at": deployed_at,
        "exit_status": exit_status,
    }


# -- the figures -------------------------------------------------------------------------------


def spread(values: Sequence[float]) -> dict[str, Any]:
    """n, p50, p95 (nearest rank) and max of `values`, rounded; None where empty."""
    return percentiles(values, (50, 95), digits=3)


def live_version(t: float, deploys: Sequence[Deploy]) -> int:
    """The number of the version serving at `t`: the last deploy that had returned by then."""
    serving = 0
    for d in deploys:
        if d.exit_status == 0 and d.returned is not None and d.returned <= t:
            serving = d.n
    return serving


def misserved(call: Call, deploys: Sequence[Deploy]) -> str:
    """Why `call` was served by the wrong code, or "" when it was not."""
    if call.outcome in ("not accepted", "no report"):
        return ""  # dropped, and counted as such
    live = live_version(call.dispatched, deploys)
    allowed = (version_of(live), version_of(live + 1))
    if call.deploy not in allowed:
        return f"served by {call.deploy or 'no version'}; {allowed[0]} was live at dispatch"
    if call.accepted_by != call.deploy:
        return f"accepted as {call.accepted_by!r} but its report says {call.deploy!r}"
    if call.outcome == "completed" and call.reply != f"{call.deploy} here":
        return f"{call.deploy} answered {call.reply!r}: not its own code"
    return ""


def deploy_figures(d: Deploy, bench: Bench) -> dict[str, Any]:
    start, end = d.started, d.drained_at or d.started
    first = min(
        (c.accepted_at for c in bench.calls if c.accepted_by == d.version and c.accepted_at),
        default=None,
    )
    window = [c for c in bench.calls if start <= c.dispatched <= end]
    drain = d.old.get("drain") or {}

    def after(t: float | None) -> float | None:
        return None if t is None else round(t - start, 3)

    return {
        "deploy": d.n,
        "version": d.version,
        "ok": d.exit_status == 0,
        "exit_status": d.exit_status,
        "live_calls_at_deploy": d.live_calls,
        "returned_s": after(d.returned),
        "reached_controller_s": None
        if "started_at" not in d.new
        else round(d.new["started_at"] - d.started_wall, 3),
        "first_call_on_new_s": after(first),
        "controller_ready_s": d.new.get("ready_s"),
        "longest_no_taker_ms": round(bench.lk.longest_unavailable(start, end) * 1000, 1),
        "calls_in_window": len(window),
        "max_offers": max((c.offers for c in window), default=0),
        "calls_needing_more_offers": sum(1 for c in window if c.offers > 1),
        "calls_refused_first": sum(1 for c in window if c.refusals),
        "new_workers_full_s": max(
            (w["full_s"] for w in d.workers if w["generation"] == "new"), default=None
        ),
        "drain_s": drain.get("for_s"),
        "drained_calls": drain.get("calls_at_start"),
        "cut": d.old.get("cut", []),
        "lost": d.old.get("lost", []),
        "said": d.said,
        "workers": d.workers,
    }


def analyse(raw: dict[str, Any]) -> dict[str, Any]:
    bench: Bench = raw["bench"]
    deploys = [deploy_figures(d, bench) for d in bench.deploys]
    first_deploy = bench.deploys[0].started if bench.deploys else raw["loaded_at"]
    phase = [n for t, n in bench.live_samples if first_deploy <= t <= raw["deployed_at"]]
    dropped = [c for c in bench.calls if c.outcome != "completed"]
    wrong = [(c, why) for c in bench.calls if (why := misserved(c, bench.deploys))]
    offered = [c for c in bench.calls if c.offers > 1]

    def noted(c: Call, why: str) -> dict[str, Any]:
        fields = attrs.asdict(c)
        for key in ("dispatched", "accepted_at", "ended"):
            if fields[key] is not None:
                fields[key] = round(fields[key] - first_deploy, 3)
        return {**fields, "why": why}

    served: dict[str, int] = {}
    for c in bench.calls:
        if c.deploy:
            served[c.deploy] = served.get(c.deploy, 0) + 1
    lag = raw["lag"]
    return {
        "deploys": deploys,
        "returned_s": spread([d["returned_s"] for d in deploys if d["returned_s"] is not None]),
        "reached_controller_s": spread(
            [d["reached_controller_s"] for d in deploys if d["reached_controller_s"] is not None]
        ),
        "first_call_on_new_s": spread(
            [d["first_call_on_new_s"] for d in deploys if d["first_call_on_new_s"] is not None]
        ),
        "controller_ready_s": spread(
            [d["controller_ready_s"] for d in deploys if d["controller_ready_s"] is not None]
        ),
        "drain_s": spread([d["drain_s"] for d in deploys if d["drain_s"] is not None]),
        "longest_no_taker_ms": max((d["longest_no_taker_ms"] for d in deploys), default=0.0),
        "longest_no_taker_ms_whole_run": round(
            bench.lk.longest_unavailable(first_deploy, raw["deployed_at"]) * 1000, 1
        ),
        "deploys_failed": sum(1 for d in deploys if not d["ok"]),
        "calls": len(bench.calls),
        "calls_by_kind": {
            kind: sum(1 for c in bench.calls if c.kind == kind) for kind in ("load", "probe")
        },
        "calls_served_by_version": served,
        "calls_dropped": len(dropped),
        "calls_cut": sum(len(d["cut"]) + len(d["lost"]) for d in deploys),
        "calls_misserved": len(wrong),
        "calls_needing_more_offers": len(offered),
        "max_offers": max((c.offers for c in bench.calls), default=0),
        "calls_refused_first": sum(1 for c in bench.calls if c.refusals),
        "generations_holding_calls_max": bench.holding_max,
        "live_calls_while_deploying": {
            "min": min(phase, default=0),
            "mean": round(sum(phase) / len(phase), 1) if phase else 0,
            "max": max(phase, default=0),
        },
        "driver_loop_lag_ms": {
            "p99": round(percentile(lag, 99) * 1000, 1),
            "max": round(max(lag, default=0.0) * 1000, 1),
        },
        "controller_exit_status": raw["exit_status"],
        "full_notices": raw["full_notices"],
        "calls_of_note": [
            *(noted(c, "dropped") for c in dropped),
            *(noted(c, why) for c, why in wrong),
            *(noted(c, f"{c.offers} offers") for c in offered if c not in dropped),
        ][:200],
    }


def sec(value: float | None) -> str:
    return number(value, "{:.2f}", missing="-")


SUMMARY: Final = (
    ("openrtc deploy returned", "returned_s"),
    ("new generation started", "reached_controller_s"),
    ("first call on the new code", "first_call_on_new_s"),
    ("controller: start to ready", "controller_ready_s"),
    ("old generation drained", "drain_s"),
)


DEPLOY_HEADERS: Final = (
    "deploy",
    "version",
    "live calls",
    "started s",
    "ready s",
    "first call on new s",
    "returned s",
    "new full s",
    "no taker ms",
    "max offers",
    "drain s (calls)",
    "cut",
)


def render(summary: dict[str, Any], settings: dict[str, Any]) -> str:
    """The table: one row per deploy, then the figures over every deploy."""
    deploys = [
        [
            str(d["deploy"]),
            d["version"] + ("" if d["ok"] else " FAILED"),
            str(d["live_calls_at_deploy"]),
            sec(d["reached_controller_s"]),
            sec(d["controller_ready_s"]),
            sec(d["first_call_on_new_s"]),
            sec(d["returned_s"]),
            sec(d["new_workers_full_s"]),
            f"{d['longest_no_taker_ms']:.0f}",
            str(d["max_offers"]),
            f"{sec(d['drain_s'])} ({d['drained_calls'] if d['drain_s'] else '-'})",
            str(len(d["cut"]) + len(d["lost"])),
        ]
        for d in summary["deploys"]
    ]
    overall = [
        [label, sec(summary[key]["p50"]), sec(summary[key]["p95"]), sec(summary[key]["max"])]
        for label, key in SUMMARY
    ]
    live = summary["live_calls_while_deploying"]
    lines = [
        f"{settings['deploys']} deploys under {settings['calls']} live calls, "
        f"{settings['workers']} worker(s) per generation, calls held ~{settings['hold']:g} s; "
        "seconds after `openrtc deploy` started",
        "",
        *markdown_table(DEPLOY_HEADERS, deploys, "><" + ">" * (len(DEPLOY_HEADERS) - 2)),
        "",
        *markdown_table(["over every deploy, s", "p50", "p95", "max"], overall, "<>>>"),
        "",
        f"- longest stretch with no worker available: {summary['longest_no_taker_ms']:.0f} ms "
        f"in a deploy's window, {summary['longest_no_taker_ms_whole_run']:.0f} ms over the run",
        f"- calls needing more than one offer: {summary['calls_needing_more_offers']} "
        f"(most offers: {summary['max_offers']}); calls a worker refused before another took "
        f"them: {summary['calls_refused_first']}",
        f"- calls: {summary['calls']} ({summary['calls_by_kind']['load']} held, "
        f"{summary['calls_by_kind']['probe']} probes); live while deploying: min {live['min']}, "
        f"mean {live['mean']}, max {live['max']}",
        f"- calls dropped: {summary['calls_dropped']} (must be 0); cut by a drain: "
        f"{summary['calls_cut']}; served by the wrong version: {summary['calls_misserved']}; "
        f"failed deploys: {summary['deploys_failed']}",
        f"- most generations holding calls at once: {summary['generations_holding_calls_max']}",
        f"- workers' notices of being full (all generations): {len(summary['full_notices'])}",
    ]
    return "\n".join(lines)


def machine_note(
    before: dict[str, float], after: dict[str, float], loads: list[float]
) -> dict[str, Any]:
    """The machine and how busy it was: its load average, and the CPU time this run used
    against what every process on it used (the rest was someone else's)."""
    wall = after["wall"] - before["wall"]
    cores = os.cpu_count() or 1
    machine_busy = (after["busy"] - before["busy"]) / (wall * cores) if wall else 0.0
    ours = (after["ours"] - before["ours"]) / (wall * cores) if wall else 0.0
    return {
        "cpus": cores,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_1m": {
            "start": round(before["load"], 2),
            "end": round(after["load"], 2),
            "mean": round(sum(loads) / len(loads), 2) if loads else None,
            "max": round(max(loads), 2) if loads else None,
        },
        "cpu_busy_share": round(machine_busy, 3),
        "cpu_share_of_this_run": round(ours, 3),
        "cpu_share_of_other_processes": round(max(0.0, machine_busy - ours), 3),
    }


def cpu_counters() -> dict[str, float]:
    """Wall time, CPU seconds every process used (/proc/stat), CPU seconds this run used
    (itself and its reaped children: the controller, and under it every generation)."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / ticks  # all but idle and iowait
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    ours = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return {"wall": time.monotonic(), "busy": busy, "ours": ours, "load": os.getloadavg()[0]}


def markdown(data: dict[str, Any], table: str) -> str:
    m = data["machine"]
    load = m["loadavg_1m"]
    return "\n".join(
        [
            "# Deploys under load",
            "",
            f"`{data['command']}`, revision {data['revision']}, "
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(data['started_at']))}, "
            f"{data['duration_s']:.0f} s.",
            "",
            table,
            "",
            f"Machine: {m['cpus']} cores, {m['platform']}, Python {m['python']}. Shared while it "
            f"ran: load average (1 min) {load['start']} at the start, {load['mean']} mean, "
            f"{load['max']} max; CPU busy {m['cpu_busy_share']:.0%} of the machine, of which "
            f"this run {m['cpu_share_of_this_run']:.0%} and other processes "
            f"{m['cpu_share_of_other_processes']:.0%}.",
            "",
            "Columns, in seconds after `openrtc deploy` was started: *live calls*: held calls "
            "live then (probes aside); *started*: the controller started the new generation "
            "(the command's own start-up comes first); *ready*: the controller's count from "
            "that start to every worker of the generation registered, when the old one begins "
            "to drain; *first call on new*: a worker of the new generation accepted a call (its "
            "first worker registers before its last, so this can come before started + ready); "
            "*returned*: `openrtc deploy` exited. From the deploy to the old generation's exit: "
            "*new full*: the longest any worker of the new generation reported itself full, so "
            "took no call; *no taker*: the longest stretch with no worker available to the "
            "loopback dispatcher; *max offers*: the most offers a call dispatched then needed "
            "(1: taken at the first); *drain*: the old generation's drain, with the calls it "
            "held when it began (probes included).",
            "",
        ]
    )


OPTIONS: Final = (
    ("--calls", int, 1, 200, "live calls kept up throughout"),
    ("--deploys", int, 1, 10, "deploys, one after the other"),
    ("--workers", int, 1, 2, "workers per generation"),
    ("--hold", float, 0.5, 25.0, "seconds each call holds (0.8x-1.2x)"),
)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The arguments, every one checked before anything runs."""
    parser = OneLineParser(prog="python -m benchmarks.deploy", description=__doc__.split("\n\n")[0])
    add_numeric_options(parser, OPTIONS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"({DEFAULT_OUT})")
    args = parser.parse_args(argv)
    problem = uncreatable_dir(args.out)
    if problem:
        parser.error(f"argument --out: {problem}")
    return args


def log_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(arguments)
    began, before = time.time(), cpu_counters()
    with tempfile.TemporaryDirectory(prefix="openrtc-deploy-bench-") as tmp:
        try:
            raw = asyncio.run(drive(args, Path(tmp)))
        except (RuntimeError, TimeoutError) as exc:
            log_line(f"failed: {exc}")
            return 1
    after = cpu_counters()
    summary = analyse(raw)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    settings.update(probe_every_s=PROBE_EVERY_S, hold_spread=HOLD_SPREAD)
    dists = ("livekit-agents", "openrtc-core", "openrtc-deploy", "openrtc-workers")
    data = {
        "command": shlex.join(["python", "-m", "benchmarks.deploy", *arguments]),
        "revision": source_revision(),
        "versions": {d: package_version(d) for d in dists},
        "started_at": began,
        "duration_s": round(time.time() - began, 1),
        "machine": machine_note(before, after, raw["bench"].load_samples),
        "settings": settings,
        **summary,
    }
    table = render(summary, settings)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "deploy.json").write_text(json.dumps(data, indent=1) + "\n")
    (args.out / "deploy.md").write_text(markdown(data, table))
    print(table)
    log_line(f"wrote {args.out / 'deploy.json'} and {args.out / 'deploy.md'}")
    failed = summary["calls_dropped"] or summary["calls_cut"] or summary["calls_misserved"]
    return 1 if failed or summary["deploys_failed"] or raw["exit_status"] else 0


if __name__ == "__main__":
    sys.exit(main())
