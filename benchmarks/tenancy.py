"""Tenancy's admission cost: what per-tenant caps add to each job request, and whether they hold.

    python -m benchmarks.tenancy                      # a private redis-server, default sizes
    python -m benchmarks.tenancy --redis-url redis://127.0.0.1:6379/15 --json out.json

It needs a Redis server. Without ``--redis-url`` it starts a private ``redis-server`` (no
persistence, a temporary directory, a free loopback port) and stops it at the end; with one, it
writes only keys named after this run (``openrtc:tenancy:tenant:bench-<run>-*`` and
``openrtc:bench:<run>:*``) and deletes them at the end. Three measurements:

direct
    A real ``Tenancy`` on a tenants file, driven as the worker's tenancy hooks drive it for one
    job request: ``resolve``, ``admit`` (which resolves again), ``await claim``. Timed from the
    first to the end of the claim, ``--requests`` times per configuration, one request at a
    time, the configurations taking turns; each request is then released (untimed) and its
    release settled in Redis before the next. In-process caps: a tenant with ``max_sessions``;
    Redis fleet caps: a tenant with ``fleet_max_sessions`` (one ``FleetSlots.take`` script).
    A Redis ``PING`` on a client of its own is timed alongside, for scale.
end to end
    A loopback dispatch server and two real OpenRTC workers (coroutine isolation, the
    Simulation plugin) in this process, told apart by agent name: one whose pool loads every
    installed plugin but tenancy, one with the tenancy plugin and the tenants file. Each
    simulated call (no turns, no hold) is timed from the dispatch server's offer of the job to
    the worker's answer (``dispatch()`` returns once the worker accepted and the assignment was
    sent), ``--calls`` calls per configuration, one at a time, the configurations taking turns,
    each call finished (its job closed) before the next. The dispatch server shares the
    workers' event loop, as in every test.
exact caps
    ``--burst`` simultaneous requests against a cap of ``--cap``: through the tenancy worker
    (in-process and fleet caps; admitted calls hold ``--hold`` s, so all of them overlap the
    burst), and straight on ``FleetSlots.take`` with one client and with three (each its own
    connection pool). Admitted must be min(burst, cap). Before a burst the worker idles
    1.5 s, and its max_sessions is far above the burst, so that livekit's own availability
    check (loop load over the last second, each request in flight counted) does not refuse
    requests before tenancy sees them; refusals it still makes are counted apart.

The first ``--warmup`` requests of each configuration are not counted (connections, scripts,
first-call imports). The tenants file sets ``lease_s = 600``: no lease renewal (background work,
not admission) runs during a run. Nothing is asserted on time: the run fails (exit 1) only if a
cap admitted other than min(burst, cap), or a call failed or was refused where it should not be.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from livekit.agents import Agent

from openrtc_core import AgentPool, JobView, RouteDecision, TenantContext
from openrtc_tenancy import plugin as tenancy_plugin
from openrtc_tenancy.counting import FleetSlots
from openrtc_testing import LoopbackDispatchServer, ScriptedLLM
from openrtc_testing.worker import running_worker, simulated_call_metadata

from .arguments import OneLineParser, add_numeric_options
from .provenance import package_version, source_revision, uncreatable_dir, unwritable_file
from .tables import number, percentiles, terminal

RESULTS_DIR: Final = Path(tempfile.gettempdir()) / "openrtc-bench"
REDIS_URL_ENV: Final = "OPENRTC_BENCH_REDIS_URL"
"""The tenants file names Redis through this variable (a URL may hold a password)."""
REDIS_SCHEMES: Final = ("redis", "rediss", "unix")
REDIS_START_S: Final = 10.0
AGENT: Final = "support"
PLAIN_WORKER: Final = "bench-plain"
TENANCY_WORKER: Final = "bench-tenancy"
UNCAPPED: Final = 1_000_000
"""The caps of the latency tenants: counted as a capped tenant is, never reached."""
NO_TENANCY: Final = "no tenancy"
LOCAL: Final = "in-process caps"
FLEET: Final = "Redis fleet caps"
PING: Final = "Redis PING (for scale)"
CALL_TIMEOUT_S: Final = 60.0
SETTLE_S: Final = 1.5
LEASE_S: Final = 600
"""Fleet leases outlast a run: no renewal (background work, not admission) runs during one,
and none is in flight when the run stops its renewers (redis-py may swallow the cancellation
of a command in flight, and a renewer's stop would then wait forever)."""


# -- Redis ------------------------------------------------------------------------------------


def shown_url(url: str) -> str:
    """`url` without its password (in the user part or the query), for messages and results."""
    url = re.sub(r"^([a-z]+://[^/@?#]*?:)[^/@?#]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_problem(url: str) -> str:
    """Why `url` is no usable Redis (it is tried: one PING), or ""."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        return f"cannot reach {shown_url(url)}: {exc}".replace(url, shown_url(url))
    finally:
        client.close()
    return ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def private_redis(executable: str, workdir: Path) -> Iterator[str]:
    """A redis-server of our own on a free loopback port (tried on three ports), its URL."""
    problems = []
    for attempt in range(3):
        port = _free_loopback_port()
        log_path = workdir / f"redis-{attempt}.log"
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                [
                    *(executable, "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
                    *("--appendonly", "no", "--dir", str(workdir)),
                ],
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + REDIS_START_S
        while process.poll() is None and time.monotonic() < deadline:
            if not redis_problem(url):
                try:
                    yield url
                finally:
                    _stop(process)
                return
            time.sleep(0.05)
        _stop(process)
        problems.append(f"port {port}: {log_path.read_text(errors='replace').strip()[-500:]}")
    raise RuntimeError("redis-server did not answer PING: " + " / ".join(problems))


def redis_version(url: str) -> str:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        info = client.info("server")
        return str(info.get("redis_version", "unknown"))
    finally:
        client.close()


# -- the pools --------------------------------------------------------------------------------


class Support(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Support.")


def other_plugins() -> list[object]:
    """Every installed OpenRTC plugin but tenancy (what the plain worker loads)."""
    found = importlib.metadata.entry_points(group="openrtc.plugins")
    return [ep.load() for ep in sorted(found, key=lambda ep: ep.name) if ep.name != "tenancy"]


def make_pool(agent_name: str, tenants: str, sessions: int) -> AgentPool:
    """The benchmark's pool: with a tenants file and every plugin, or without tenancy."""
    if tenants:
        pool = AgentPool(agent_name=agent_name, tenants=tenants, max_sessions=sessions)
    else:
        pool = AgentPool(
            agent_name=agent_name,
            max_sessions=sessions,
            load_plugins=False,
            plugins=other_plugins(),
        )
    pool.add(AGENT, Support, default=True, llm=ScriptedLLM(default_reply="noted"))
    return pool


def loaded_plugins(pool: AgentPool) -> list[str]:
    return sorted(r.name for r in pool.plugins.records if r.status == "loaded")


def tenants_text(run: str, cap: int) -> str:
    return textwrap.dedent(
        f"""\
        redis_url_env = "{REDIS_URL_ENV}"
        lease_s = {LEASE_S}
        [tenants.{run}-local]
        max_sessions = {UNCAPPED}
        [tenants.{run}-fleet]
        fleet_max_sessions = {UNCAPPED}
        [tenants.{run}-local-cap]
        max_sessions = {cap}
        [tenants.{run}-fleet-cap]
        fleet_max_sessions = {cap}
        """
    )


# -- measuring --------------------------------------------------------------------------------


class Refusals(logging.Filter):
    """Counts the worker's "rejecting job" lines and keeps them off the terminal: the exact-cap
    bursts refuse by design (the counts are in the table)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("rejecting job"):
            self.count += 1
            return False
        return True


def spread(values: Sequence[float]) -> dict[str, Any]:
    """n, p50, p99 (nearest rank) and max of `values`, in their unit; None where empty."""
    return percentiles(values, (50, 99))


def turns(i: int, labels: Sequence[str]) -> list[str]:
    """The configurations in round `i`: each goes first in turn, so none always follows one."""
    k = i % len(labels)
    return [*labels[k:], *labels[:k]]


async def settled(probe: FleetSlots, tenant: str) -> None:
    """Wait until `tenant` holds no lease (a release is sent after the job, on its own task)."""
    deadline = time.monotonic() + 10
    while await probe.live(tenant):
        if time.monotonic() > deadline:
            raise RuntimeError(f"tenant {tenant}: a released slot was still live after 10 s")
        await asyncio.sleep(0)


async def direct(a: argparse.Namespace, tenants: str, run: str) -> dict[str, list[float]]:
    """ms per request of the tenancy hooks' work, on a real Tenancy and Redis."""
    tenancy = tenancy_plugin.Tenancy(tenants)
    probe = FleetSlots.from_url(a.redis_url)
    ping = aioredis.Redis.from_url(a.redis_url)
    decision = RouteDecision(agent=AGENT, strategy="benchmark")
    tenant_of = {LOCAL: f"{run}-local", FLEET: f"{run}-fleet"}
    samples: dict[str, list[float]] = {LOCAL: [], FLEET: [], PING: []}
    try:
        for i in range(a.warmup + a.requests):
            for label in turns(i, (LOCAL, FLEET, PING)):
                if label == PING:
                    began = time.perf_counter()
                    await ping.ping()
                    took = time.perf_counter() - began
                else:
                    tenant = tenant_of[label]
                    job = JobView(
                        job_id=f"AJ_{run}_{i}_{tenant}",
                        room_name=f"room-{i}",
                        job_metadata={"tenant": tenant},
                    )
                    began = time.perf_counter()
                    tenant_id, _ = tenancy.resolve(job)
                    refused = tenancy.admit(job, decision)
                    context = TenantContext(tenant_id=tenant_id) if tenant_id else None
                    if refused is None:
                        refused = await tenancy.claim(job, context)
                    took = time.perf_counter() - began
                    if refused is not None:
                        raise RuntimeError(f"direct: {label} refused a request: {refused.reason}")
                    tenancy.released(job, context, None)
                    if label == FLEET:
                        await settled(probe, tenant)
                if i >= a.warmup:
                    samples[label].append(took * 1000)
    finally:
        await tenancy.aclose()
        await probe.aclose()
        await ping.aclose()
    return samples


async def one_call(
    dispatch: LoopbackDispatchServer, worker: str, tenant: str | None, room: str
) -> float:
    """ms from the offer of one simulated call to the worker's answer; the call then ends."""
    extra = {"tenant": tenant} if tenant else None
    meta = simulated_call_metadata(AGENT, extra=extra)
    began = time.perf_counter()
    d = await dispatch.dispatch(room, agent_name=worker, job_metadata=meta)
    took = time.perf_counter() - began
    if not d.accepted:
        raise RuntimeError(f"call {room} ({worker}, tenant {tenant}) was refused: {d.error}")
    report = await dispatch.wait_for_report(d.job_id, timeout=CALL_TIMEOUT_S)
    if report["outcome"] != "completed" or report["tenant"] != tenant:
        raise RuntimeError(f"call {room}: outcome {report['outcome']!r}, {report['error']}")
    await d.wait_for_status(timeout=CALL_TIMEOUT_S)  # its job closed: the worker is idle
    return took * 1000


async def end_to_end(
    a: argparse.Namespace, dispatch: LoopbackDispatchServer, run: str
) -> dict[str, list[float]]:
    target = {
        NO_TENANCY: (PLAIN_WORKER, None),
        LOCAL: (TENANCY_WORKER, f"{run}-local"),
        FLEET: (TENANCY_WORKER, f"{run}-fleet"),
    }
    samples: dict[str, list[float]] = {label: [] for label in target}
    for i in range(a.warmup + a.calls):
        for label in turns(i, tuple(target)):
            worker, tenant = target[label]
            took = await one_call(dispatch, worker, tenant, f"e2e-{i}-{worker}-{tenant}")
            if i >= a.warmup:
                samples[label].append(took)
    return samples


async def worker_burst(
    a: argparse.Namespace,
    dispatch: LoopbackDispatchServer,
    refusals: Refusals,
    through: str,
    tenant: str,
) -> dict[str, Any]:
    """--burst simultaneous calls of `tenant` to the tenancy worker: how many it admitted."""
    meta = simulated_call_metadata(AGENT, turns=["hi"], hold_s=a.hold, extra={"tenant": tenant})
    # The worker's load counts how busy its loop was over the last second: let the calls
    # before this burst fall out of it, so the burst meets the cap, not livekit's load check.
    await asyncio.sleep(SETTLE_S)
    logged = refusals.count
    began = time.perf_counter()
    burst = await asyncio.gather(
        *(
            dispatch.dispatch(f"burst-{tenant}-{i}", agent_name=TENANCY_WORKER, job_metadata=meta)
            for i in range(a.burst)
        )
    )
    took_s = time.perf_counter() - began
    accepted = [d for d in burst if d.accepted]
    for d in accepted:
        report = await dispatch.wait_for_report(d.job_id, timeout=a.hold + CALL_TIMEOUT_S)
        if report["outcome"] != "completed":
            raise RuntimeError(f"burst call {d.room}: outcome {report['outcome']!r}")
    for d in accepted:
        await d.wait_for_status(timeout=CALL_TIMEOUT_S)
    refused = [d for d in burst if not d.accepted]
    return {
        "through": through,
        "requests": a.burst,
        "cap": a.cap,
        "admitted": len(accepted),
        "expected": min(a.burst, a.cap),
        "refused": len(refused),
        "refused_terminate": sum(1 for d in refused if d.terminate),
        "refused_by_openrtc": refusals.count - logged,
        "refused_unanswered": sum(1 for d in refused if not d.rejected_by),
        "burst_ms": took_s * 1000,
        "overlapped": took_s < a.hold,
    }


async def slots_burst(a: argparse.Namespace, clients: int, run: str) -> dict[str, Any]:
    """--burst simultaneous FleetSlots.take calls over `clients` clients, against --cap."""
    prefix = f"openrtc:bench:{run}"
    slots = [FleetSlots.from_url(a.redis_url, prefix=prefix) for _ in range(clients)]
    tenant = f"clients-{clients}"
    try:
        for each in slots:
            await each.live(tenant)  # connected, scripts loaded: the burst races on Redis
        began = time.perf_counter()
        taken = await asyncio.gather(
            *(slots[i % clients].take(tenant, f"job-{i}", a.cap) for i in range(a.burst))
        )
        took_s = time.perf_counter() - began
        live = await slots[0].live(tenant)
        await slots[0].client.delete(slots[0].key(tenant))
    finally:
        for each in slots:
            await each.aclose()
    admitted = sum(taken)
    return {
        "through": f"FleetSlots.take, {clients} client{'s' if clients > 1 else ''}",
        "requests": a.burst,
        "cap": a.cap,
        "admitted": admitted,
        "expected": min(a.burst, a.cap),
        "refused": a.burst - admitted,
        "live_after": live,
        "burst_ms": took_s * 1000,
    }


async def drive(a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    run = f"bench-{uuid.uuid4().hex[:8]}"
    tenants = tmp / "tenants.toml"
    tenants.write_text(tenants_text(run, a.cap))
    os.environ[REDIS_URL_ENV] = a.redis_url
    log(f"direct: {a.requests} requests per configuration (+{a.warmup} warm-up)")
    direct_ms = await direct(a, str(tenants), run)
    # Far above the burst: livekit's own availability check counts each request in flight as
    # 1/max_sessions of the worker's load until the job starts (a burst of max_sessions
    # requests would read as a full worker before tenancy even sees them).
    sessions = 4 * a.burst + 10
    plain = make_pool(PLAIN_WORKER, "", sessions)
    capped = make_pool(TENANCY_WORKER, str(tenants), sessions)
    plugins = {NO_TENANCY: loaded_plugins(plain), "with tenancy": loaded_plugins(capped)}
    if any("tenancy" in name for name in plugins[NO_TENANCY]) or not any(
        "tenancy" in name for name in plugins["with tenancy"]
    ):
        raise RuntimeError(f"the tenancy plugin is not where it should be: {plugins}")
    refusals = Refusals()
    logging.getLogger("openrtc.worker").addFilter(refusals)
    async with (
        LoopbackDispatchServer() as dispatch,
        running_worker(plain, dispatch),
        running_worker(capped, dispatch),
    ):
        log(f"end to end: {a.calls} calls per configuration (+{a.warmup} warm-up)")
        e2e_ms = await end_to_end(a, dispatch, run)
        log(f"exact caps: {a.burst} simultaneous requests, cap {a.cap}")
        caps = [
            await worker_burst(a, dispatch, refusals, "worker, in-process cap", f"{run}-local-cap"),
            await worker_burst(
                a, dispatch, refusals, "worker, Redis fleet cap", f"{run}-fleet-cap"
            ),
        ]
        current = tenancy_plugin.current()
        if current is not None:
            await current.aclose()
    caps += [await slots_burst(a, 1, run), await slots_burst(a, 3, run)]
    client = aioredis.Redis.from_url(a.redis_url)
    try:
        leftover = [key async for key in client.scan_iter(match=f"openrtc:*{run}*")]
        if leftover:
            await client.delete(*leftover)
    finally:
        await client.aclose()
    logging.getLogger("openrtc.worker").removeFilter(refusals)
    return {
        "run": run,
        "plugins": plugins,
        "direct_ms": direct_ms,
        "e2e_ms": e2e_ms,
        "caps": caps,
        "refusals_logged": refusals.count,
    }


def analyse(raw: dict[str, Any]) -> dict[str, Any]:
    def figures(samples: dict[str, list[float]]) -> dict[str, Any]:
        return {
            label: {**spread(values), "samples_ms": values} for label, values in samples.items()
        }

    e2e = figures(raw["e2e_ms"])
    base = e2e[NO_TENANCY]["p50"]
    added = {label: f["p50"] - base for label, f in e2e.items() if label != NO_TENANCY}
    wrong = [c["through"] for c in raw["caps"] if c["admitted"] != c["expected"]]
    return {
        "run": raw["run"],
        "plugins": raw["plugins"],
        "direct": figures(raw["direct_ms"]),
        "end_to_end": e2e,
        "end_to_end_p50_added_ms": added,
        "exact_caps": raw["caps"],
        "caps_wrong": wrong,
        "refusals_logged": raw["refusals_logged"],
    }


# -- the table --------------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return number(value, "{:.3f}", missing="-")


def _indented(lines: Sequence[str]) -> list[str]:
    return [f"  {line}" for line in lines]


def render(summary: dict[str, Any], a: argparse.Namespace, redis_note: str) -> str:
    def row(label: str, f: dict[str, Any]) -> list[str]:
        return [label, ms(f["p50"]), ms(f["p99"]), ms(f["max"]), str(f["n"])]

    headers = ["ms per request", "p50", "p99", "max", "n"]
    direct = [row(label, f) for label, f in summary["direct"].items()]
    added = summary["end_to_end_p50_added_ms"]
    end_to_end = [
        [*row(label, f), "" if label not in added else f"{added[label]:+.3f}"]
        for label, f in summary["end_to_end"].items()
    ]
    caps = [
        [
            c["through"],
            str(c["admitted"]),
            str(c["expected"]),
            str(c["refused"]),
            number(c.get("refused_by_openrtc"), "{}", missing="-"),
            number(c.get("refused_terminate"), "{}", missing="-"),
            f"{c['burst_ms']:.1f}",
        ]
        for c in summary["exact_caps"]
    ]
    cap_headers = ["through", "admitted", "expected", "refused", "by openrtc", "terminate"]
    lines = [
        f"tenancy admission: {a.requests} direct requests and {a.calls} calls end to end per "
        f"configuration (after {a.warmup} warm-up); Redis: {redis_note}",
        "",
        "direct: resolve + admit + claim on a real Tenancy",
        *_indented(terminal(headers, direct, "<>>>>")),
        "end to end: offer -> the worker's answer (accept + assignment)",
        *_indented(terminal([*headers, "p50 vs no tenancy"], end_to_end, "<>>>>>")),
        "",
        f"exact caps: {a.burst} simultaneous requests, cap {a.cap}",
        *_indented(terminal([*cap_headers, "burst ms"], caps, "<>>>>>>")),
        "  (by openrtc: refusals OpenRTC's admission logged, here tenancy's; any others came",
        "  from livekit's own availability check)",
    ]
    late = [c["through"] for c in summary["exact_caps"] if c.get("overlapped") is False]
    if late:
        lines.append(
            f"  note: {', '.join(late)}: the burst outlasted --hold, so early calls may have "
            "ended and freed slots before it was over: use a longer --hold"
        )
    wrong = summary["caps_wrong"]
    lines.append(
        f"  caps admitting other than expected: {', '.join(wrong) or 'none'} (must be none)"
    )
    return "\n".join(lines)


# -- arguments --------------------------------------------------------------------------------


OPTIONS: Final = (
    ("--requests", int, 1, 2000, "direct requests per configuration"),
    ("--calls", int, 1, 500, "calls end to end per configuration"),
    ("--warmup", int, 0, 20, "first requests of each configuration not counted"),
    ("--burst", int, 1, 50, "simultaneous requests in each exact-cap run"),
    ("--cap", int, 1, 10, "the cap those requests meet"),
    ("--hold", float, 0.5, 2.0, "seconds each admitted burst call holds"),
)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The arguments, every one checked before anything runs (a given Redis gets one PING)."""
    parser = OneLineParser(
        prog="python -m benchmarks.tenancy", description=__doc__.split("\n\n")[0]
    )
    add_numeric_options(parser, OPTIONS)
    parser.add_argument(
        "--redis-url",
        help="a Redis to use (redis://[:password@]host:port/db); by default a private "
        "redis-server is started on a free loopback port",
    )
    parser.add_argument(
        "--json", dest="json_path", type=Path, help=f"raw results (a new file in {RESULTS_DIR})"
    )
    args = parser.parse_args(argv)
    problem = unwritable_file(args.json_path) if args.json_path else uncreatable_dir(RESULTS_DIR)
    if problem:
        parser.error(f"argument --json: {problem}")
    disabled = {p.strip() for p in os.environ.get("OPENRTC_DISABLE_PLUGINS", "").split(",")}
    if "tenancy" in disabled:
        parser.error("OPENRTC_DISABLE_PLUGINS disables tenancy: there would be nothing to measure")
    args.redis_server = None
    if args.redis_url is None:
        args.redis_server = shutil.which("redis-server")
        if args.redis_server is None:
            parser.error(
                "argument --redis-url: none given, and redis-server is not installed to start a "
                "private one (apt install redis-server)"
            )
    else:
        if urlsplit(args.redis_url).scheme not in REDIS_SCHEMES:
            parser.error(
                f"argument --redis-url: {shown_url(args.redis_url)!r} is not a "
                f"{', '.join(s + '://' for s in REDIS_SCHEMES)} URL"
            )
        problem = redis_problem(args.redis_url)
        if problem:
            parser.error(f"argument --redis-url: {problem}")
    stem = f"tenancy-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"
    args.json_path = args.json_path or RESULTS_DIR / stem
    return args


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(arguments)
    command = shlex.join(["python", "-m", "benchmarks.tenancy", *arguments])
    if args.redis_url is not None:
        command = command.replace(args.redis_url, shown_url(args.redis_url))  # no password
    began = time.time()
    with tempfile.TemporaryDirectory(prefix="openrtc-tenancy-bench-") as tmp:
        try:
            with contextlib.ExitStack() as stack:
                if args.redis_server is not None:
                    args.redis_url = stack.enter_context(
                        private_redis(args.redis_server, Path(tmp))
                    )
                    log(f"no --redis-url: started a private redis-server at {args.redis_url}")
                redis_info = {
                    "url": shown_url(args.redis_url),
                    "private": args.redis_server is not None,
                    "version": redis_version(args.redis_url),
                }
                summary = analyse(asyncio.run(drive(args, Path(tmp))))
        except (RuntimeError, TimeoutError, redis.RedisError) as exc:
            log(f"failed: {exc}")
            return 1
    dists = ("livekit-agents", "openrtc-core", "openrtc-tenancy", "openrtc-testing", "redis")
    machine = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "revision": source_revision(),
        "python": platform.python_version(),
        **{d: package_version(d) for d in dists},
    }
    settings = {k: v for k, v in vars(args).items() if k not in ("redis_url", "redis_server")}
    data = {
        "command": command,
        "started_at": began,
        "duration_s": time.time() - began,
        "machine": machine,
        "redis": redis_info,
        "settings": settings,
        **summary,
    }
    args.json_path.parent.mkdir(parents=True, exist_ok=True)
    args.json_path.write_text(json.dumps(data, indent=1, default=str))
    kind = "private redis-server" if redis_info["private"] else "given"
    print(render(summary, args, f"{kind} {redis_info['version']} at {redis_info['url']}"))
    log(f"wrote {args.json_path}")
    return 1 if summary["caps_wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
