"""``openrtc simulate``: run a pool for real against the embedded loopback dispatch server.

Simulated callers (scripted text turns) are dispatched across the pool's agents through the
routing rules; the real worker accepts them, builds each session with the pool's factory and
runs it. Providers that need keys or a network are swapped for scripted ones (and said so).

With tenants (``--tenants FILE``, ``--tenant NAME``) each call's job metadata names a tenant,
round-robin, and the figures are also given per tenant: what the worker admitted, what it
refused and why, and how many of a tenant's sessions were live at once.

With ``--workers N`` (2 or more) the worker does not run in this process: the real supervisor
of ``openrtc start --workers N`` runs as a subprocess (:mod:`.supervising`), its N workers
register with the embedded server, and the figures are also given per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Protocol

import attrs
import typer
from livekit.protocol import agent as agent_pb
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from openrtc_core import AgentPool, OpenRTCError, load_pool

from . import offline, voice_figures
from .caller import MAX_SCRIPT_S
from .dispatch import Dispatch, LoopbackDispatchServer
from .interruption import STOP_SIGNALS, CutCall, SimulationInterrupted, StopSignals, exit_status
from .measure import LoopLagMonitor, PeakMemory, percentile
from .supervising import (
    LogRefusals,
    SupervisedWorkers,
    SupervisorFailed,
    SupervisorSpec,
    log_tail,
    supervised_workers,
)
from .voice_clips import SAMPLE_RATES, VoiceUnavailable, prepare
from .voice_figures import VoiceSettings
from .worker import Pause, dispatch_until_accepted, running_worker, simulated_call_metadata

TENANTS_OPTION: Final = "tenants"
"""The run option a tenancy plugin adds for its tenants file (``--tenants`` on the run verbs)."""
_TURN_KEYS = ("user", "reply", "version", "error", "latency_s", *voice_figures.TURN_KEYS)
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
    tenant: str | None = None
    """The tenant the job metadata named (None: the call named none)."""
    accepted: bool = False
    """Whether a worker accepted the call (after any re-offers)."""
    refusal: str = ""
    """Why a call never accepted was not: the worker's stated reason for its last refusal,
    in the form figures group by (:func:`reason_key`); "" for an accepted call."""
    session_started_at: float | None = None
    """Wall-clock time the session started, from the report; None when it never did."""
    duration_s: float | None = None
    """From the session's start to the end of the call, from the report."""
    worker: int | None = None
    """Which of the supervisor's workers served the call (1-based), from the report; None
    when one worker ran in-process, or no worker reported."""
    worker_pid: int | None = None
    """That worker's process id, from the report."""
    deploy: str = ""
    """The deployment version of the worker that served the call, from the report; "" when
    no worker reported."""
    voice: dict[str, Any] | None = None
    """A voice call's figures from its report (frames, VAD time, barge-ins); None in text
    mode."""
    lost: bool = False
    """The call was lost with its worker: the worker died while the call ran (its
    connection to the stand-in closed with the call assigned); ``worker`` and ``worker_pid``
    say which, as far as the worker said who it was."""

    def as_dict(self, *, with_worker: bool = False) -> dict[str, Any]:
        call: dict[str, Any] = {
            "job_id": self.job_id,
            "agent": self.agent,
            "room": self.room,
            "outcome": self.outcome or ("completed" if self.ok else "failed"),
            "error": self.error,
            "deploy": self.deploy,
            "turns": self.turns,
        }
        if self.voice is not None:
            call["voice"] = self.voice
        if self.tenant is not None:
            call["tenant"] = self.tenant
        if with_worker:
            call["worker"] = self.worker
            call["worker_pid"] = self.worker_pid
        return call

    def live_span(self) -> tuple[float, float] | None:
        """When the call's session was live (wall clock), from its report; None if never."""
        if self.session_started_at is None or self.duration_s is None:
            return None
        return self.session_started_at, self.session_started_at + self.duration_s


@attrs.define
class SimulationResult:
    calls: list[CallResult]
    wall_s: float
    baseline_pss_mb: float
    peak_pss_mb: float
    loop_lag_p99_s: float | None
    """The in-process worker's event-loop lag; None with several workers (not measured)."""
    isolation: str
    swapped: dict[str, dict[str, str]]
    worker_full_s: float = 0.0
    """How long the worker reported itself full (at max_sessions or its loop saturated)."""
    tenants: list[str] = attrs.field(factory=list)
    """The tenants calls were spread over, in order; empty when calls named none."""
    workers: int = 1
    """Worker processes: 1 ran in this process; more ran under the supervisor, and the PSS
    figures are then those of the supervisor with its workers."""
    supervisor_error: str | None = None
    """What went wrong when the supervisor stopped (a non-zero exit); None when it drained
    and exited 0, or with one worker."""
    interrupted: signal.Signals | None = None
    """The stop signal that ended the run early; None when every call was placed and ended."""
    cut: list[CutCall] = attrs.field(factory=list)
    """With `interrupted`: the calls in flight then, which ``calls`` (what finished) omits."""
    not_placed: int = 0
    """With `interrupted`: the calls not placed yet (waiting for a slot under --concurrency)."""

    @property
    def supervised(self) -> bool:
        return self.workers > 1

    def admission(self) -> dict[str, Any]:
        """Offers, re-offers and why: what stood between callers and a session."""
        return {
            "offers": sum(c.offers for c in self.calls),
            "re_offers": sum(c.offers - 1 for c in self.calls),
            "refused_by_worker": sum(c.refused for c in self.calls),
            "offered_while_full": sum(c.unavailable for c in self.calls),
            "never_accepted": sum(not c.accepted for c in self.calls),
            "lost": sum(c.lost for c in self.calls),
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

    def per_tenant(self) -> dict[str, dict[str, Any]]:
        """Per tenant: calls, ``admitted`` (accepted, after any re-offers), ``rejected`` (never
        accepted, by reason), ``failed`` (admitted but did not complete) and ``max_live``.

        ``calls`` is always ``admitted`` plus every count in ``rejected``. ``max_live`` is the
        most of the tenant's sessions live at one instant, from the calls' reports (each
        session's start time and duration), not sampled.
        """
        grouped: dict[str, list[CallResult]] = {name: [] for name in self.tenants}
        for call in self.calls:
            if call.tenant is not None:
                grouped.setdefault(call.tenant, []).append(call)
        figures: dict[str, dict[str, Any]] = {}
        for tenant, calls in grouped.items():
            refused = Counter(c.refusal or "not accepted" for c in calls if not c.accepted)
            figures[tenant] = {
                "calls": len(calls),
                "admitted": sum(c.accepted for c in calls),
                "rejected": dict(sorted(refused.items(), key=lambda item: (-item[1], item[0]))),
                "failed": sum(c.accepted and not c.ok for c in calls),
                "max_live": most_at_once(span for c in calls if (span := c.live_span())),
            }
        return figures

    def per_worker(self) -> dict[str, dict[str, Any]]:
        """Per worker index (every one of them, as a string): its pids (one, or more if the
        supervisor replaced it), the calls it served, completed and failed, and its turns'
        latency. Calls no worker reported on are in none."""
        grouped: dict[int, list[CallResult]] = {i: [] for i in range(1, self.workers + 1)}
        for call in self.calls:
            if call.worker is not None:
                grouped.setdefault(call.worker, []).append(call)
        figures: dict[str, dict[str, Any]] = {}
        for index, calls in sorted(grouped.items()):
            turns = [t for c in calls for t in c.turn_latencies_s]
            figures[str(index)] = {
                "pids": sorted({c.worker_pid for c in calls if c.worker_pid is not None}),
                "calls": len(calls),
                "completed": sum(c.ok for c in calls),
                "failed": sum(not c.ok for c in calls),
                "lost": sum(c.lost for c in calls),
                "turns": len(turns),
                "turn_latency_p50_s": percentile(turns, 50) if turns else None,
                "turn_latency_p95_s": percentile(turns, 95) if turns else None,
            }
        return figures

    def per_agent_voice(self) -> dict[str, dict[str, Any]]:
        """Voice figures per agent (empty in text mode); see :mod:`.voice_figures`."""
        return voice_figures.per_agent((c.agent, c.voice, c.turns) for c in self.calls)

    def per_deploy(self) -> dict[str, int]:
        """How many calls each deployment version served, in order of first appearance
        (calls no worker reported on are in none)."""
        return dict(Counter(c.deploy for c in self.calls if c.deploy))

    def as_dict(self) -> dict[str, Any]:
        tenants = {"tenants": self.per_tenant()} if self.tenants else {}
        spoken = self.per_agent_voice()
        voice = {"voice": spoken} if spoken else {}
        workers = (
            {"workers": self.per_worker(), "supervisor_error": self.supervisor_error}
            if self.supervised
            else {}
        )
        interrupted = (
            None
            if self.interrupted is None
            else {
                "signal": self.interrupted.name,
                "cut": [call.as_dict() for call in self.cut],
                "not_placed": self.not_placed,
            }
        )
        return {
            "isolation": self.isolation,
            "interrupted": interrupted,
            "call_count": len(self.calls),
            "failures": sum(not c.ok for c in self.calls),
            "wall_s": self.wall_s,
            "worker_baseline_pss_mb": self.baseline_pss_mb,
            "worker_peak_pss_mb": self.peak_pss_mb,
            "loop_lag_p99_s": self.loop_lag_p99_s,
            "swapped_providers": self.swapped,
            "admission": self.admission(),
            "agents": self.per_agent(),
            "deploys": self.per_deploy(),
            **voice,
            **tenants,
            **workers,
            "calls": [call.as_dict(with_worker=self.supervised) for call in self.calls],
        }


def most_at_once(spans: Iterable[tuple[float, float]]) -> int:
    """The most of `spans` (start, end) overlapping at one instant; one ending as another
    starts does not overlap it."""
    # At the same time an end (-1) sorts before a start (+1).
    events = sorted(event for start, end in spans for event in ((start, 1), (end, -1)))
    live = most = 0
    for _, step in events:
        live += step
        most = max(most, live)
    return most


# -- why the worker refused a call --------------------------------------------------------------

REFUSAL_LOGGER: Final = "openrtc.worker"
_REFUSAL_MESSAGE: Final = "rejecting job %s in room %s: %s%s"
"""The core's one log line per refusal (``openrtc_core.admission``); its last argument is the
reason. LiveKit's protocol carries no reason with a rejection, so this is where it is read."""
_ASIDE: Final = re.compile(r"\s*\([^()]*\)")
_COUNT: Final = re.compile(r"(?<![=\w'\".])\d+(?:\.\d+)?(?![\w'\"])")
_WORKER_ID: Final = re.compile(r"\bworker AW_\w+")
_CAP: Final = re.compile(r"\b(?:fleet_)?max_sessions=\d+")
_SHORT: Final = (
    ("may not use agent", "agent not allowed"),
    ("not allowed", "not allowed"),
    ("unknown tenant", "unknown tenant"),
    ("names no 'tenant'", "no tenant"),
    ("signature", "signature"),
    ("breaker", "breaker"),
    ("too long", "id too long"),
    ("tenant id", "invalid tenant id"),
    ("no worker available", "worker full"),
)
SHORT_REASON_CHARS: Final = 28
SUPERVISOR_LOG: Final = "supervisor.log"
"""The file the supervisor's output goes to (``--workers N``), in a temporary directory kept
only when something went wrong."""
TENANT_KEY: Final = "tenant"
"""The job-metadata key naming a call's tenant (what openrtc-tenancy reads)."""


def reason_key(reason: str) -> str:
    """A refusal reason in the form figures group by: asides in parentheses dropped, counts
    that change from one offer to the next (calls live, seconds left) written ``N``. Limits
    (``max_sessions=2``) and quoted values stay."""
    reason = _WORKER_ID.sub("the worker", _ASIDE.sub("", reason))
    return " ".join(_COUNT.sub("N", reason).split())


def short_reason(key: str) -> str:
    """A grouped reason (:func:`reason_key`) in its shortest form, for the table: the limit
    it hit (``max_sessions=2``, ``worker max_sessions=4``) or a few words."""
    cap = _CAP.search(key)
    if cap is not None:
        return ("worker " if key.startswith("the worker") else "") + cap.group()
    for phrase, short in _SHORT:
        if phrase in key:
            return short
    if len(key) <= SHORT_REASON_CHARS:
        return key
    cut = key[: SHORT_REASON_CHARS - 1]
    words = cut.rsplit(" ", 1)[0] if " " in cut else cut  # no word cut in two
    return words.rstrip(" ,:;") + "…"


class WorkerRefusals(logging.Filter):
    """The worker's stated reason for each job it refused, by job id, read from its log line.

    Installed on the ``openrtc.worker`` logger for a run (:func:`watching_refusals`), which is
    opened to INFO so that refusals logged at INFO (a full worker) are seen; records below the
    level the logger had are dropped here once read, so what is printed does not change.
    """

    def __init__(self, shown_from: int) -> None:
        super().__init__()
        self.shown_from = shown_from
        self.reasons: dict[str, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        job_id = getattr(record, "job_id", None)
        args = record.args
        if record.msg == _REFUSAL_MESSAGE and isinstance(job_id, str) and isinstance(args, tuple):
            self.reasons[job_id] = str(args[-1])
        return record.levelno >= self.shown_from

    def stated(self, d: Dispatch) -> str:
        """The reason the worker gave for refusing `d` (its last offer); "" if none was seen."""
        return self.reasons.pop(d.job_id, "") if d.rejected_by else ""


class Refusals(Protocol):
    """Where a worker's stated reasons for refusing calls are read (its log)."""

    def stated(self, d: Dispatch) -> str:
        """The reason given for refusing `d` (its last offer); "" if none was seen."""


def refusal_key(d: Dispatch, stated: str) -> str:
    """Why `d`, a dispatch no worker accepted, was not: the worker's `stated` reason, else
    what the dispatch saw; grouped form (:func:`reason_key`)."""
    if stated:
        return reason_key(stated)
    if d.rejected_by:  # refused, but its log line was not seen
        return "rejected by the worker" + (" with terminate=True" if d.terminate else "")
    if d.error.startswith("no available worker"):
        return "no worker available: it reported itself full"
    return reason_key(d.error or "not accepted")


@contextlib.contextmanager
def watching_refusals() -> Iterator[WorkerRefusals]:
    """Read the worker's refusals while the block runs; the logger is as it was afterwards."""
    logger = logging.getLogger(REFUSAL_LOGGER)
    level = logger.level
    refusals = WorkerRefusals(shown_from=logger.getEffectiveLevel())
    logger.addFilter(refusals)
    logger.setLevel(min(logging.INFO, logger.getEffectiveLevel()))
    try:
        yield refusals
    finally:
        logger.removeFilter(refusals)
        logger.setLevel(level)


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
    tenants: Sequence[str] = (),
    supervisor: SupervisorSpec | None = None,
    supervisor_log: Path | None = None,
    voice: VoiceSettings | None = None,
    stop_signals: Sequence[signal.Signals] = (),
    run_options: Mapping[str, Any] | None = None,
) -> SimulationResult:
    """Dispatch `calls` simulated calls, `concurrency` at a time, round-robin over agents.

    `reload` runs the worker with code reloading (openrtc-reload); `script` replaces the
    stock caller lines (`turns` of them). With `tenants`, call ``i`` names tenant
    ``tenants[i % len(tenants)]`` in its job metadata (as it names agent ``i % len(agents)``).
    `run_options` set the options plugins add for the worker in this process, as
    ``pool.create_server(...)`` takes them (``tenants="tenants.toml"``).

    With `supervisor`, its workers serve the calls instead of one in this process (`pool` is
    then only read for its agents and settings); their output goes to `supervisor_log`
    (None: the terminal). :raises SupervisorFailed: its workers did not all register, or it
    exited while the calls ran; a non-zero exit after the calls is the result's
    ``supervisor_error``.

    One of `stop_signals` ends the run early: the calls in flight are cut, the worker or
    supervisor (and its workers) stopped at once, and the result holds what finished, the
    cut calls and the signal. :raises SimulationInterrupted: it came before the calls began.
    """
    agents = list(pool.agents)
    tenants = list(tenants)
    lines = list(script) if script else list(CALLER_LINES)
    script = [lines[i % len(lines)] for i in range(turns)]
    lag = LoopLagMonitor()
    results: list[CallResult] = []
    in_flight: dict[int, tuple[str, str, str | None]] = {}
    """Calls placed and not ended, by index: agent, room, tenant."""
    fleet: SupervisedWorkers | None = None
    memory: PeakMemory | None = None
    wall = full_s = 0.0
    stop = StopSignals(stop_signals)
    with watching_refusals() as in_process, stop.installed(), stop.cutting():
        if voice is not None:
            # Spoken once here, before any worker starts: the workers read the clips' cache.
            await asyncio.to_thread(prepare, script, sample_rate=voice.sample_rate)
        async with contextlib.AsyncExitStack() as stack:
            lk = await stack.enter_async_context(LoopbackDispatchServer())
            refusals: Refusals | None = in_process
            if supervisor is None:
                await stack.enter_async_context(
                    running_worker(pool, lk, **_worker_options(reload, run_options))
                )
                lag.start()  # the worker's loop is this one
            else:
                fleet = await stack.enter_async_context(
                    supervised_workers(
                        supervisor,
                        lk,
                        agent_name=pool.settings.agent_name,
                        log_path=supervisor_log,
                    )
                )
                refusals = LogRefusals(supervisor_log) if supervisor_log is not None else None
            memory = PeakMemory(pid=None if fleet is None else fleet.pid)
            memory.start()
            # Stopped before the workers are (callbacks run last in, first out).
            stack.push_async_callback(memory.stop)
            stack.push_async_callback(lag.stop)
            gate = asyncio.Semaphore(concurrency)
            started = time.monotonic()

            async def one(index: int) -> None:
                agent = agents[index % len(agents)]
                tenant = tenants[index % len(tenants)] if tenants else None
                room = f"sim-{index}"
                async with gate:
                    in_flight[index] = (agent, room, tenant)
                    result = await _call(
                        lk,
                        agent,
                        room,
                        script,
                        hold_s=hold_s,
                        pause_s=pause_s,
                        timeout_s=call_timeout_s + hold_s + (10 + _longest(pause_s)) * len(script),
                        agent_name=pool.settings.agent_name,
                        tenant=tenant,
                        refusals=refusals,
                        voice=voice,
                    )
                del in_flight[index]
                results.append(result)
                if on_call_done is not None:
                    on_call_done(result)

            placed = asyncio.gather(*(one(i) for i in range(calls)))
            try:
                await (placed if fleet is None else fleet.while_running(placed))
            finally:  # also when a signal cut the calls
                wall = time.monotonic() - started
                full_s = sum(w.seconds_in(agent_pb.WS_FULL, since=started) for w in lk.workers)
    if memory is None:  # a stop signal came before the calls began
        assert stop.received is not None
        raise SimulationInterrupted(stop.received)
    return SimulationResult(
        calls=results,
        wall_s=wall,
        baseline_pss_mb=memory.baseline_mb,
        peak_pss_mb=memory.peak_mb,
        loop_lag_p99_s=percentile(lag.samples, 99) if fleet is None else None,
        isolation=pool.settings.isolation,
        swapped=planned_swaps(pool),
        worker_full_s=full_s,
        tenants=tenants,
        workers=1 if supervisor is None else supervisor.workers,
        supervisor_error=None if fleet is None else fleet.failure(),
        interrupted=stop.received,
        cut=[CutCall.found(lk, *in_flight[index]) for index in sorted(in_flight)],
        not_placed=calls - len(results) - len(in_flight),
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
    tenant: str | None = None,
    refusals: Refusals | None = None,
    voice: VoiceSettings | None = None,
) -> CallResult:
    dispatched_at = time.time()
    metadata = simulated_call_metadata(
        agent,
        turns=script,
        hold_s=hold_s,
        pause_s=pause_s,
        extra=None if tenant is None else {TENANT_KEY: tenant},
        voice=voice is not None,
        sample_rate=None if voice is None else voice.sample_rate,
        barge_in=() if voice is None else voice.barge_in_lines(len(script)),
    )
    d: Dispatch | None = None
    try:
        d = await dispatch_until_accepted(lk, room, job_metadata=metadata, agent_name=agent_name)
        offers, refused, unavailable = d.offers, d.refused, d.unavailable
        if not d.accepted:
            stated = refusals.stated(d) if refusals is not None else ""
            return CallResult(
                agent,
                room,
                ok=False,
                error=f"not accepted: {d.error}" + (f": {reason_key(stated)}" if stated else ""),
                offers=offers,
                refused=refused,
                unavailable=unavailable,
                tenant=tenant,
                refusal=refusal_key(d, stated),
            )
        report = await lk.wait_for_end(d.job_id, timeout=timeout_s)
        if report is None:
            return _unreported(lk, d, agent, room, tenant)
    except (TimeoutError, ConnectionError, RuntimeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        accepted = d is not None and d.accepted
        return CallResult(
            agent,
            room,
            ok=False,
            error=error,
            offers=1 if d is None else d.offers,
            refused=0 if d is None else d.refused,
            unavailable=0 if d is None else d.unavailable,
            tenant=tenant,
            accepted=accepted,
            refusal="" if accepted else reason_key(error),
        )
    started_at = report.get("session_started_at")
    duration = report.get("duration_s")
    return CallResult(
        job_id=d.job_id,
        outcome=str(report.get("outcome") or ""),
        turns=[{key: t[key] for key in _TURN_KEYS if key in t} for t in report.get("turns", [])],
        agent=str(report.get("agent", agent)),
        room=room,
        ok=report.get("outcome") == "completed",
        error=str(report.get("error") or ""),
        start_latency_s=started_at - dispatched_at if isinstance(started_at, float) else None,
        turn_latencies_s=[float(t["latency_s"]) for t in report.get("turns", [])],
        offers=offers,
        refused=refused,
        unavailable=unavailable,
        tenant=tenant,
        accepted=True,
        session_started_at=started_at if isinstance(started_at, float) else None,
        duration_s=float(duration) if isinstance(duration, int | float) else None,
        worker=_whole(report.get("worker")),
        worker_pid=_whole(report.get("worker_pid")),
        deploy=str(report.get("deploy") or ""),
        voice=report["voice"] if isinstance(report.get("voice"), dict) else None,
    )


def _unreported(
    lk: LoopbackDispatchServer, d: Dispatch, agent: str, room: str, tenant: str | None
) -> CallResult:
    """A call whose job ended with no report: lost with its worker, or ended as its worker's
    final job status says (a job process killed for its memory: the status's error)."""
    said = lk.processes.get(d.lost_by or d.worker_id, {})
    if d.lost:
        outcome, error = "lost", d.lost
    else:
        status = agent_pb.JobStatus.Name(d.status) if d.status is not None else "no status"
        outcome, error = "failed", d.error or f"the job ended ({status}) with no report"
    return CallResult(
        agent,
        room,
        ok=False,
        error=error,
        offers=d.offers,
        refused=d.refused,
        unavailable=d.unavailable,
        job_id=d.job_id,
        outcome=outcome,
        tenant=tenant,
        accepted=True,
        worker=said.get("worker"),
        worker_pid=said.get("pid"),
        lost=bool(d.lost),
    )


def _whole(value: object) -> int | None:
    """An integer field of a report; None when it is missing or not one."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _time(seconds: float | None) -> str:
    """A latency for the table: ms below a second, seconds above; "-" for no figure."""
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def tenant_table(result: SimulationResult) -> Table:
    """Per tenant: calls, admitted, rejected (by reason, shortest form), failed, most live."""
    table = Table(title="per tenant", box=box.SIMPLE_HEAD)
    table.add_column("tenant", overflow="fold")
    for column in ("calls", "admitted"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("rejected", overflow="fold")
    for column in ("failed", "most live"):
        table.add_column(column, justify="right", no_wrap=True)
    for tenant, f in result.per_tenant().items():
        rejected = "\n".join(
            f"[red]{count}[/red] {escape(short_reason(reason))}"
            for reason, count in f["rejected"].items()
        )
        table.add_row(
            escape(tenant),
            str(f["calls"]),
            str(f["admitted"]),
            rejected or "0",
            f"[red]{f['failed']}[/red]" if f["failed"] else "0",
            str(f["max_live"]),
        )
    return table


def worker_table(result: SimulationResult) -> Table:
    """Per worker: its pid(s), the calls it served, completed and failed, turn latency."""
    table = Table(title="per worker", box=box.SIMPLE_HEAD)
    table.add_column("worker", justify="right", no_wrap=True)
    table.add_column("pid", justify="right", overflow="fold")
    for column in ("calls", "completed", "failed", "lost", "turn p50", "p95"):
        table.add_column(column, justify="right", no_wrap=True)
    for index, f in result.per_worker().items():
        table.add_row(
            index,
            "\n".join(str(pid) for pid in f["pids"]) or "-",
            str(f["calls"]),
            str(f["completed"]),
            f"[red]{f['failed']}[/red]" if f["failed"] else "0",
            f"[red]{f['lost']}[/red]" if f["lost"] else "0",
            _time(f["turn_latency_p50_s"]),
            _time(f["turn_latency_p95_s"]),
        )
    return table


def render(result: SimulationResult, console: Console) -> None:
    """The per-agent table (and per-tenant and per-worker ones) and what held calls back, in
    80 columns."""
    workers = f", {result.workers} workers" if result.supervised else ""
    table = Table(
        title=f"openrtc simulate: {len(result.calls)} calls, isolation={result.isolation}"
        + workers,
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
    spoken = result.per_agent_voice()
    if spoken:
        console.print(voice_figures.table(spoken))
    if result.tenants:
        console.print(tenant_table(result))
    if result.supervised:
        console.print(worker_table(result))
    deploys = result.per_deploy()
    if len(deploys) > 1:
        served = ", ".join(f"{escape(version)} {count}" for version, count in deploys.items())
        console.print(f"calls per deploy version ({len(deploys)} versions): {served}")
    admission = result.admission()
    # Calls a tenant's breaker refused: no worker or max_sessions would have taken them.
    broken = Counter(
        c.tenant or "" for c in result.calls if not c.accepted and "breaker" in c.refusal
    )
    if broken:
        refused = ", ".join(f"{escape(tenant)} {count}" for tenant, count in broken.items())
        console.print(
            f"calls refused by their tenant's breaker: {refused}. The tenant's calls were "
            "failing (errors below): fix what fails them; more workers or a higher "
            "max_sessions would not help."
        )
    if admission["re_offers"]:
        full = (
            f"{admission['offered_while_full']} while every worker reported itself full; "
            f"workers full for {result.worker_full_s:.1f} s in all, over {result.wall_s:.1f} s"
            if result.supervised
            else f"{admission['offered_while_full']} while it reported itself full, for "
            f"{result.worker_full_s:.1f} s of {result.wall_s:.1f} s"
        )
        console.print(
            f"calls waited for a slot: {admission['re_offers']} re-offers "
            f"({admission['refused_by_worker']} refused by "
            f"{'a' if result.supervised else 'the'} worker, which logs why; "
            f"{full})."
            + (
                ""
                if broken
                else " More concurrent callers than max_sessions queue: raise it, or run more "
                "workers."
                + (" A tenant's own max_sessions queues its calls too." if result.tenants else "")
            )
        )
    lost = [c for c in result.calls if c.lost]
    if lost:
        console.print(f"[red]{len(lost)} call(s) lost with their worker[/red] (it died):")
        for gone in lost:
            pid = f", pid {gone.worker_pid}" if gone.worker_pid is not None else ""
            console.print(f"  {gone.job_id} ({escape(gone.agent)}): worker {gone.worker}{pid}")
    memory = f"{result.baseline_pss_mb:.0f} MiB idle, {result.peak_pss_mb:.0f} MiB peak"
    if result.supervised:
        console.print(
            f"supervisor and {result.workers} workers PSS: {memory}; wall {result.wall_s:.1f} s"
        )
    else:
        console.print(
            f"worker PSS: {memory}; event-loop lag p99 {_time(result.loop_lag_p99_s)}; "
            f"wall {result.wall_s:.1f} s"
        )
    for agent, f in result.per_agent().items():
        for error in f["errors"]:
            console.print(f"[red]{agent}[/red]: {escape(error)}")
    if result.interrupted is not None:
        console.print(
            f"[bold red]interrupted by {result.interrupted.name}[/bold red]: "
            f"{len(result.calls)} call(s) finished, {len(result.cut)} cut, "
            f"{result.not_placed} not placed"
        )
        for call in result.cut:
            console.print(f"  cut: {escape(call.describe())}")


def _print_error(message: str) -> None:
    # One line, never wrapped, the message's brackets printed as they are.
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/bold red] {escape(message)}")


def _supervisor_failed(message: str, log_dir: Path | None) -> bool:
    """Say what went wrong with the supervisor, then the last lines of its log (unless it
    holds no more than that error line); whether the log is worth keeping."""
    _print_error(message)
    if log_dir is None:  # --verbose: its output went to the terminal
        return False
    log = log_dir / SUPERVISOR_LOG
    tail = log_tail(log)
    if not [line for line in tail if not line.startswith("error:")]:
        return False
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    err.print(f"last lines of the supervisor's log ({log}):", markup=False)
    for line in tail:
        err.print(f"  {line}", markup=False)
    return True


def parse_workers(text: str | None) -> int:
    """``--workers``: how many worker processes (1, or none given: one in this process).

    :raises ValueError: not a whole number of 1 or more (one line, naming the option).
    """
    if text is None:
        return 1
    raw = text.strip()
    if not raw.isdecimal() or int(raw) < 1:
        raise ValueError(f"--workers {text!r}: give a number of worker processes, 1 or more")
    return int(raw)


def parse_voice(voice: bool, rate: int, barge_in: bool, turns: int) -> VoiceSettings | None:
    """``--voice``, ``--voice-rate``, ``--barge-in``: the voice calls asked for, or None.

    :raises ValueError: a voice option without ``--voice``, or one that cannot apply.
    """
    if not voice:
        if barge_in or rate != VoiceSettings().sample_rate:
            raise ValueError("--voice-rate and --barge-in go with --voice")
        return None
    if rate not in SAMPLE_RATES:
        raise ValueError(f"--voice-rate {rate}: give one of {', '.join(map(str, SAMPLE_RATES))}")
    if barge_in and turns < 2:
        raise ValueError(f"--barge-in needs two caller turns or more (--turns {turns})")
    return VoiceSettings(sample_rate=rate, barge_in=barge_in)


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


def tenants_in_file(path: Path) -> list[str]:
    """The tenants a tenants file names, to spread calls over: its ``[tenants.NAME]`` tables
    in file order, then ``default_tenant`` when it is not one of them.

    Only the names are read here; the tenancy plugin checks the whole file when the worker
    starts. :raises ValueError: the file cannot be read, is not TOML, or its ``tenants`` or
    ``default_tenant`` has the wrong type (one line, naming the file).
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such tenants file") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the tenants file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: invalid TOML: {exc}") from None
    tenants = data.get("tenants", {})
    if not isinstance(tenants, dict):
        raise ValueError(f"{path}: tenants must be a table of tenants ([tenants.NAME])")
    names = list(tenants)
    default = data.get("default_tenant")
    if default is not None and not isinstance(default, str):
        raise ValueError(f"{path}: default_tenant must be a string (a tenant id)")
    if default is not None and default not in names:
        names.append(default)
    return names


def call_tenants(tenants_file: Path | None, names: Sequence[str]) -> list[str]:
    """The tenants calls are spread over: `names` (``--tenant``) if any, else the file's.

    :raises ValueError: the file cannot be read for its names, or names none.
    """
    in_file = tenants_in_file(tenants_file) if tenants_file is not None else []
    if names or tenants_file is None:
        return list(names)
    if not in_file:
        raise ValueError(
            f"{tenants_file}: names no tenant to place calls for: add a [tenants.NAME] table "
            "or default_tenant, or give --tenant NAME"
        )
    return in_file


def _worker_options(reload: bool, run_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The in-process worker's run options: `run_options`, and ``reload=True`` only when
    asked for (the option is openrtc-reload's; without it installed, asking is an error
    naming it, and not asking must work)."""
    return {**(run_options or {}), **({"reload": True} if reload else {})}


def _control_socket(pool: AgentPool) -> str | None:
    """A control socket of this run's own for a deploy controller (openrtc-deploy), when
    one will run the workers (it adds ``--control``); None when none will."""
    if "control" not in pool.plugins.run_options():
        return None
    return str(Path(tempfile.mkdtemp(prefix="openrtc-simulate-control-")) / "control.sock")


def tenants_run_option(pool: AgentPool, tenants_file: Path | None) -> dict[str, str]:
    """``--tenants FILE`` as the run verbs take it: the run option a tenancy plugin adds
    (``{"tenants": FILE}``), for the worker (``create_server(tenants=...)``) or a
    supervisor's ``start --tenants FILE``; {} without a file or without such a plugin."""
    if tenants_file is None or TENANTS_OPTION not in pool.plugins.run_options():
        return {}
    return {TENANTS_OPTION: str(tenants_file)}


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
    tenants_file: Annotated[
        Path | None,
        typer.Option(
            "--tenants",
            help="Run the pool with this tenants file (needs openrtc-tenancy) and spread the "
            "calls round-robin over its tenants; figures per tenant follow.",
            show_default=False,
        ),
    ] = None,
    tenant_names: Annotated[
        list[str] | None,
        typer.Option(
            "--tenant",
            help="Place calls for this tenant (repeat for several): calls are spread over "
            "these names instead. A name is sent as given, for the worker to accept or refuse.",
            show_default=False,
        ),
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
    voice: Annotated[
        bool,
        typer.Option(
            "--voice",
            help="Callers speak their lines as real speech (espeak-ng) into each session's "
            "audio input in real time: the pool's VAD and turn detector run on it, replies "
            "play out in real time, and what the caller hears is measured.",
        ),
    ] = False,
    voice_rate: Annotated[
        int,
        typer.Option("--voice-rate", help="With --voice: the caller's line, 16000 or 48000 Hz."),
    ] = 16000,
    barge_in: Annotated[
        bool,
        typer.Option(
            "--barge-in",
            help="With --voice: each caller starts its last line while the agent still speaks.",
        ),
    ] = False,
    workers: Annotated[
        str | None,
        typer.Option(
            "--workers",
            metavar="N",
            help="Run N worker processes under the real supervisor of openrtc start --workers "
            "N (needs openrtc-workers), each registered with the stand-in, instead of one "
            "worker in this process; figures per worker follow.",
            show_default=False,
        ),
    ] = None,
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
    try:
        worker_count = parse_workers(workers)
        voice_settings = parse_voice(voice, voice_rate, barge_in, turns)
    except ValueError as exc:
        _print_error(str(exc))
        raise typer.Exit(2) from None
    try:
        tenants = call_tenants(tenants_file, tenant_names or [])
    except ValueError as exc:
        _print_error(str(exc))
        raise typer.Exit(1) from None
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR)
    if not verbose:
        for name in ("livekit", "livekit.agents", "openrtc"):
            logging.getLogger(name).setLevel(logging.ERROR)
        if reload:
            # What a reload did is what the user is trying out: said, not hidden.
            logging.getLogger("openrtc.reload").setLevel(logging.INFO)
    try:
        pool = load_pool(target, isolation=isolation)
        run_options = tenants_run_option(pool, tenants_file)
    except OpenRTCError as exc:
        _print_error(str(exc))
        raise typer.Exit(1) from None
    os.environ.setdefault("LIVEKIT_API_KEY", "openrtc-simulation")
    os.environ.setdefault("LIVEKIT_API_SECRET", "openrtc-simulation-secret-0123456789")
    console.print(pool.describe(), markup=False)
    for agent, swapped in planned_swaps(pool).items():
        listed = ", ".join(f"{k}={v}" for k, v in swapped.items())
        console.print(f"[yellow]scripted providers for {agent}[/yellow] (instead of {listed})")
    if tenants:
        console.print(f"calls for tenants: {escape(', '.join(tenants))}")
    if tenants_file is not None and not run_options:
        console.print(
            "[yellow]no installed plugin takes a tenants file[/yellow] (--tenants): it is not "
            "applied (install openrtc-tenancy)"
        )
    supervisor: SupervisorSpec | None = None
    log_dir: Path | None = None
    if worker_count > 1:
        supervisor = SupervisorSpec(
            target=target,
            workers=worker_count,
            isolation=isolation,
            tenants=run_options.get(TENANTS_OPTION),
            reload=reload,
            control=_control_socket(pool),
        )
        if not verbose:
            log_dir = Path(tempfile.mkdtemp(prefix="openrtc-simulate-"))
        console.print(f"{worker_count} worker processes, under openrtc start's supervisor")
        if supervisor.control is not None:
            console.print(
                "a deploy controller runs them: rehearse a deploy while the calls run with "
                f"[bold]openrtc deploy --control {escape(supervisor.control)}[/bold]"
            )
    keep_log = False
    try:
        result = _run(
            console,
            pool,
            calls=calls,
            concurrency=concurrency,
            turns=turns,
            hold_s=hold_s,
            pause_s=pause_s,
            reload=reload,
            tenants=tenants,
            supervisor=supervisor,
            log_dir=log_dir,
            voice=voice_settings,
            run_options=run_options,
        )
        render(result, console)
        if json_path is not None:
            json_path.write_text(json.dumps(result.as_dict(), indent=2))
            console.print(f"figures written to {json_path}")
        if result.supervisor_error is not None:
            keep_log = _supervisor_failed(result.supervisor_error, log_dir)
        if result.interrupted is not None:
            raise typer.Exit(exit_status(result.interrupted))
        if result.supervisor_error is not None:
            raise typer.Exit(1)
    except SupervisorFailed as exc:
        keep_log = _supervisor_failed(str(exc), log_dir)
        raise typer.Exit(1) from None
    finally:
        if log_dir is not None and not keep_log:
            shutil.rmtree(log_dir, ignore_errors=True)
        if supervisor is not None and supervisor.control is not None:
            shutil.rmtree(Path(supervisor.control).parent, ignore_errors=True)
    if any(not call.ok for call in result.calls):
        raise typer.Exit(1)


def _run(
    console: Console,
    pool: AgentPool,
    *,
    calls: int,
    concurrency: int,
    turns: int,
    hold_s: float,
    pause_s: Pause,
    reload: bool,
    tenants: Sequence[str],
    supervisor: SupervisorSpec | None,
    log_dir: Path | None,
    voice: VoiceSettings | None = None,
    run_options: Mapping[str, Any] | None = None,
) -> SimulationResult:
    """The calls, with a progress bar; :class:`SupervisorFailed` as run_simulation raises it."""
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
            return asyncio.run(
                run_simulation(
                    pool,
                    calls=calls,
                    concurrency=concurrency,
                    turns=turns,
                    hold_s=hold_s,
                    pause_s=pause_s,
                    on_call_done=done,
                    reload=reload,
                    tenants=tenants,
                    supervisor=supervisor,
                    supervisor_log=None if log_dir is None else log_dir / SUPERVISOR_LOG,
                    voice=voice,
                    stop_signals=STOP_SIGNALS,
                    run_options=run_options,
                )
            )
        except SimulationInterrupted as exc:
            Console(stderr=True, soft_wrap=True).print(f"[bold red]{escape(str(exc))}[/bold red]")
            raise typer.Exit(exit_status(exc.signal)) from None
        except (OpenRTCError, VoiceUnavailable) as exc:
            # The worker would not start: reload with no strategy, a bad tenants file; or
            # the callers cannot speak (no espeak-ng).
            _print_error(str(exc))
            raise typer.Exit(1) from None
