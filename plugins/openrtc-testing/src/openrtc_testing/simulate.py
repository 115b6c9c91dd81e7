"""``openrtc simulate``: run a pool for real against the embedded loopback dispatch server.

Simulated callers (scripted text turns) are dispatched across the pool's agents through the
routing rules; the real worker accepts them, builds each session with the pool's factory and
runs it. Providers that need keys or a network are swapped for scripted ones (and said so).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import attrs
import typer
from livekit.protocol import agent as agent_pb
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from openrtc_core import AgentPool, OpenRTCError, load_pool

from . import offline
from .caller import MAX_SCRIPT_S
from .dispatch import LoopbackDispatchServer
from .measure import LoopLagMonitor, PeakMemory, percentile
from .worker import Pause, dispatch_until_accepted, running_worker, simulated_call_metadata

CALLER_LINES = (
    "Hi, I need some help.",
    "I have a question about my order.",
    "Can you check order 42 for me?",
    "What are your opening hours?",
    "Thanks, that helps.",
    "Goodbye.",
)


@attrs.define
class CallResult:
    agent: str
    room: str
    ok: bool
    error: str = ""
    start_latency_s: float | None = None
    """Dispatch to session start; None when the session never started."""
    turn_latencies_s: list[float] = attrs.field(factory=list)
    offers: int = 1
    """How many times the call was offered before it was accepted (or given up on)."""
    refused: int = 0
    """Offers the worker refused (a rejection naming its reason in the worker's log)."""
    unavailable: int = 0
    """Offers made while no worker was available (it reported itself full)."""
    job_id: str = ""
    outcome: str = ""
    """The caller's report: ``completed``, ``failed``, ``ended``; "" when none came."""
    turns: list[dict[str, Any]] = attrs.field(factory=list)
    """Per turn: the caller's line, the agent's reply, the code version that replied."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "agent": self.agent,
            "room": self.room,
            "outcome": self.outcome or ("completed" if self.ok else "failed"),
            "error": self.error,
            "turns": self.turns,
        }


@attrs.define
class SimulationResult:
    calls: list[CallResult]
    wall_s: float
    baseline_pss_mb: float
    peak_pss_mb: float
    loop_lag_p99_s: float
    isolation: str
    swapped: dict[str, dict[str, str]]
    worker_full_s: float = 0.0
    """How long the worker reported itself full (at max_sessions or its loop saturated)."""

    def admission(self) -> dict[str, Any]:
        """Offers, re-offers and why: what stood between callers and a session."""
        return {
            "offers": sum(c.offers for c in self.calls),
            "re_offers": sum(c.offers - 1 for c in self.calls),
            "refused_by_worker": sum(c.refused for c in self.calls),
            "offered_while_full": sum(c.unavailable for c in self.calls),
            "never_accepted": sum(c.start_latency_s is None and not c.ok for c in self.calls),
            "worker_full_s": self.worker_full_s,
        }

    def per_agent(self) -> dict[str, dict[str, Any]]:
        grouped: dict[str, list[CallResult]] = defaultdict(list)
        for call in self.calls:
            grouped[call.agent].append(call)
        figures: dict[str, dict[str, Any]] = {}
        for agent, calls in sorted(grouped.items()):
            starts = [c.start_latency_s for c in calls if c.start_latency_s is not None]
            turns = [t for c in calls for t in c.turn_latencies_s]
            figures[agent] = {
                "calls": len(calls),
                "started": len(starts),
                "turns": len(turns),
                # None, not 0: a figure over no started call would be a made-up one.
                "start_latency_p50_s": percentile(starts, 50) if starts else None,
                "start_latency_p95_s": percentile(starts, 95) if starts else None,
                "turn_latency_p50_s": percentile(turns, 50) if turns else None,
                "turn_latency_p95_s": percentile(turns, 95) if turns else None,
                "re_offers": sum(c.offers - 1 for c in calls),
                "failures": sum(not c.ok for c in calls),
                "errors": sorted({c.error for c in calls if c.error})[:5],
            }
        return figures

    def as_dict(self) -> dict[str, Any]:
        return {
            "isolation": self.isolation,
            "call_count": len(self.calls),
            "failures": sum(not c.ok for c in self.calls),
            "wall_s": self.wall_s,
            "worker_baseline_pss_mb": self.baseline_pss_mb,
            "worker_peak_pss_mb": self.peak_pss_mb,
            "loop_lag_p99_s": self.loop_lag_p99_s,
            "swapped_providers": self.swapped,
            "admission": self.admission(),
            "agents": self.per_agent(),
            "calls": [call.as_dict() for call in self.calls],
        }


def planned_swaps(pool: AgentPool) -> dict[str, dict[str, str]]:
    """Per agent, which providers a simulation replaces and what they were."""
    swaps = {}
    for name in pool.agents:
        found = offline.unreachable(pool.configured_options(name))
        if found:
            swaps[name] = found
    return swaps


async def run_simulation(
    pool: AgentPool,
    *,
    calls: int,
    concurrency: int,
    turns: int,
    hold_s: float = 0.0,
    pause_s: Pause = 0.0,
    call_timeout_s: float = 60.0,
    on_call_done: Callable[[CallResult], None] | None = None,
    reload: bool = False,
    script: Sequence[str] | None = None,
) -> SimulationResult:
    """Dispatch `calls` simulated calls, `concurrency` at a time, round-robin over agents.

    `reload` runs the worker with code reloading (openrtc-reload); `script` replaces the
    stock caller lines (`turns` of them).
    """
    agents = list(pool.agents)
    lines = list(script) if script else list(CALLER_LINES)
    script = [lines[i % len(lines)] for i in range(turns)]
    lag = LoopLagMonitor()
    memory = PeakMemory()
    results: list[CallResult] = []
    async with LoopbackDispatchServer() as lk, running_worker(pool, lk, reload=reload):
        memory.start()
        lag.start()
        gate = asyncio.Semaphore(concurrency)
        started = time.monotonic()

        async def one(index: int) -> None:
            agent = agents[index % len(agents)]
            room = f"sim-{index}"
            async with gate:
                result = await _call(
                    lk,
                    agent,
                    room,
                    script,
                    hold_s=hold_s,
                    pause_s=pause_s,
                    timeout_s=call_timeout_s + hold_s + (10 + _longest(pause_s)) * len(script),
                    agent_name=pool.settings.agent_name,
                )
            results.append(result)
            if on_call_done is not None:
                on_call_done(result)

        await asyncio.gather(*(one(i) for i in range(calls)))
        wall = time.monotonic() - started
        full_s = sum(w.seconds_in(agent_pb.WS_FULL, since=started) for w in lk.workers)
        await lag.stop()
        await memory.stop()
    return SimulationResult(
        calls=results,
        wall_s=wall,
        baseline_pss_mb=memory.baseline_mb,
        peak_pss_mb=memory.peak_mb,
        loop_lag_p99_s=percentile(lag.samples, 99),
        isolation=pool.settings.isolation,
        swapped=planned_swaps(pool),
        worker_full_s=full_s,
    )


async def _call(
    lk: LoopbackDispatchServer,
    agent: str,
    room: str,
    script: Sequence[str],
    *,
    hold_s: float,
    pause_s: Pause,
    timeout_s: float,
    agent_name: str,
) -> CallResult:
    dispatched_at = time.time()
    metadata = simulated_call_metadata(agent, turns=script, hold_s=hold_s, pause_s=pause_s)
    try:
        d = await dispatch_until_accepted(lk, room, job_metadata=metadata, agent_name=agent_name)
        offers, refused, unavailable = d.offers, d.refused, d.unavailable
        if not d.accepted:
            return CallResult(
                agent,
                room,
                ok=False,
                error=f"not accepted: {d.error}",
                offers=offers,
                refused=refused,
                unavailable=unavailable,
            )
        report = await lk.wait_for_report(d.job_id, timeout=timeout_s)
    except (TimeoutError, ConnectionError, RuntimeError) as exc:
        return CallResult(agent, room, ok=False, error=f"{type(exc).__name__}: {exc}")
    started_at = report.get("session_started_at")
    return CallResult(
        job_id=d.job_id,
        outcome=str(report.get("outcome") or ""),
        turns=[
            {key: t[key] for key in ("user", "reply", "version", "error", "latency_s") if key in t}
            for t in report.get("turns", [])
        ],
        agent=str(report.get("agent", agent)),
        room=room,
        ok=report.get("outcome") == "completed",
        error=str(report.get("error") or ""),
        start_latency_s=started_at - dispatched_at if isinstance(started_at, float) else None,
        turn_latencies_s=[float(t["latency_s"]) for t in report.get("turns", [])],
        offers=offers,
        refused=refused,
        unavailable=unavailable,
    )


def _time(seconds: float | None) -> str:
    """A latency for the table: ms below a second, seconds above; "-" for no figure."""
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def render(result: SimulationResult, console: Console) -> None:
    """The per-agent table and what held calls back, in 80 columns."""
    table = Table(
        title=f"openrtc simulate: {len(result.calls)} calls, isolation={result.isolation}",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("agent", overflow="fold")
    for column in ("calls", "failed", "start p50", "p95", "turn p50", "p95"):
        table.add_column(column, justify="right", no_wrap=True)
    for agent, f in result.per_agent().items():
        table.add_row(
            agent,
            str(f["calls"]),
            f"[red]{f['failures']}[/red]" if f["failures"] else "0",
            _time(f["start_latency_p50_s"]),
            _time(f["start_latency_p95_s"]),
            _time(f["turn_latency_p50_s"]),
            _time(f["turn_latency_p95_s"]),
        )
    console.print(table)
    admission = result.admission()
    if admission["re_offers"]:
        console.print(
            f"calls waited for a slot: {admission['re_offers']} re-offers "
            f"({admission['refused_by_worker']} refused by the worker, which logs why; "
            f"{admission['offered_while_full']} while it reported itself full, for "
            f"{result.worker_full_s:.1f} s of {result.wall_s:.1f} s). More concurrent "
            "callers than max_sessions queue: raise it, or run more workers."
        )
    console.print(
        f"worker PSS: {result.baseline_pss_mb:.0f} MiB idle, {result.peak_pss_mb:.0f} MiB peak; "
        f"event-loop lag p99 {_time(result.loop_lag_p99_s)}; wall {result.wall_s:.1f} s"
    )
    for agent, f in result.per_agent().items():
        for error in f["errors"]:
            console.print(f"[red]{agent}[/red]: {error}")


def _print_error(message: str) -> None:
    # One line, never wrapped, the message's brackets printed as they are.
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/bold red] {escape(message)}")


def _longest(pause: Pause) -> float:
    return pause[1] if isinstance(pause, tuple) else pause


def parse_pause(text: str) -> Pause:
    """``"2"`` -> 2.0, ``"1,4"`` -> (1.0, 4.0); a clear ValueError for anything else."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds or a range like 1,4") from None
    if len(values) > 2 or not all(0 <= v <= MAX_SCRIPT_S for v in values):
        raise ValueError(f"{text!r}: give 0 to {MAX_SCRIPT_S:g} seconds as 2, or a range as 1,4")
    if len(values) == 1:
        return values[0]
    low, high = values
    if low > high:
        raise ValueError(f"{text!r}: the range's low end is above its high end")
    return low, high


def simulate_command(
    target: Annotated[
        str,
        typer.Argument(help="The pool: module:pool, app.py or a directory.", metavar="TARGET"),
    ],
    calls: Annotated[int, typer.Option("--calls", min=1, help="How many calls.")] = 20,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Calls in flight at once.")
    ] = 10,
    turns: Annotated[int, typer.Option("--turns", min=0, help="Caller turns per call.")] = 3,
    hold_s: Annotated[
        float, typer.Option("--hold", min=0, help="Seconds a call stays up after its last turn.")
    ] = 0.0,
    pause: Annotated[
        str,
        typer.Option(
            "--pause",
            help="Seconds each caller waits before a line (listening, thinking): 2, or 1,4 "
            "for a random time between 1 and 4.",
        ),
    ] = "0",
    isolation: Annotated[
        str | None, typer.Option("--isolation", help="Override the pool's isolation backend.")
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures as JSON to this file.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show the worker's logs.")] = False,
    reload: Annotated[
        bool,
        typer.Option(
            "--reload",
            help="Reload agent code when its files change while the calls run; live calls "
            "switch at their next turn (needs openrtc-reload).",
        ),
    ] = False,
) -> None:
    """Run a pool against an embedded LiveKit stand-in with scripted callers; print figures.

    No LiveKit server and no provider keys are needed: providers that would need them are
    replaced by scripted ones for the simulated calls, and listed.
    """
    console = Console()
    try:
        pause_s = parse_pause(pause)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--pause") from None
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR)
    if not verbose:
        for name in ("livekit", "livekit.agents", "openrtc"):
            logging.getLogger(name).setLevel(logging.ERROR)
        if reload:
            # What a reload did is what the user is trying out: said, not hidden.
            logging.getLogger("openrtc.reload").setLevel(logging.INFO)
    try:
        pool = load_pool(target, isolation=isolation)
    except OpenRTCError as exc:
        _print_error(str(exc))
        raise typer.Exit(1) from None
    os.environ.setdefault("LIVEKIT_API_KEY", "openrtc-simulation")
    os.environ.setdefault("LIVEKIT_API_SECRET", "openrtc-simulation-secret-0123456789")
    console.print(pool.describe(), markup=False)
    for agent, swapped in planned_swaps(pool).items():
        listed = ", ".join(f"{k}={v}" for k, v in swapped.items())
        console.print(f"[yellow]scripted providers for {agent}[/yellow] (instead of {listed})")

    with Progress(
        TextColumn("calls"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[failed]} failed"),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("calls", total=calls, failed=0)
        failed = 0

        def done(call: CallResult) -> None:
            nonlocal failed
            failed += not call.ok
            progress.update(task, advance=1, failed=failed)

        try:
            result = asyncio.run(
                run_simulation(
                    pool,
                    calls=calls,
                    concurrency=concurrency,
                    turns=turns,
                    hold_s=hold_s,
                    pause_s=pause_s,
                    on_call_done=done,
                    reload=reload,
                )
            )
        except OpenRTCError as exc:  # the worker would not start (reload with no strategy)
            _print_error(str(exc))
            raise typer.Exit(1) from None
    render(result, console)
    if json_path is not None:
        json_path.write_text(json.dumps(result.as_dict(), indent=2))
        console.print(f"figures written to {json_path}")
    if failed:
        raise typer.Exit(1)
