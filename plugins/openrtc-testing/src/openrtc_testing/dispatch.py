"""A loopback fake of the LiveKit server side of the agent worker protocol.

:class:`LoopbackDispatchServer` speaks the same WebSocket protocol a LiveKit server speaks to
agent workers (``GET /agent``, binary ``livekit.protocol.agent`` frames), so a real, unmodified
``livekit.agents.AgentServer`` can register against it, receive availability requests, accept or
reject jobs, get assignments, report job and worker status, and be told to terminate jobs.

There is no SFU behind it: an assigned job gets a valid join token for ``url``, but nothing
answers a room connection there. Entrypoints driven by this server therefore must not call
``ctx.connect()``; OpenRTC's simulated jobs instead post their results to the report endpoint
(``POST /openrtc/simulation/report``), which this server also hosts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import WSMsgType, web
from google.protobuf.message import DecodeError
from livekit import api
from livekit.protocol import agent, models

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "Dispatch",
    "LoopbackDispatchServer",
    "WorkerConnection",
]

logger = logging.getLogger("openrtc.testing.dispatch")

DEFAULT_API_KEY = "openrtc-test-key"
DEFAULT_API_SECRET = "openrtc-loopback-test-secret-not-for-production-use"

AGENT_PATH = "/agent"
# Where simulated calls post their reports (openrtc_testing.simulation). The dispatch server
# and the scripted providers load without openrtc_core: plain livekit workers in the
# benchmarks use them.
REPORT_PATH = "/openrtc/simulation/report"
# Where a simulating worker says which process it is, once registered (``worker_id``,
# ``worker``: its index under a supervisor or null, ``pid``), so that the calls a dead
# worker held can be named with it.
WORKER_PATH = "/openrtc/simulation/worker"
HEALTH_PATH = "/openrtc/health"

REGISTER_TIMEOUT = 10.0
"""Seconds a freshly connected worker has to send its ``register`` message."""

SERVER_VERSION = "openrtc-loopback"

TERMINAL_JOB_STATUSES: tuple[int, ...] = (agent.JS_SUCCESS, agent.JS_FAILED)


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:12]


def _job_status_name(status: int) -> str:
    try:
        return agent.JobStatus.Name(status)
    except ValueError:
        return str(status)


def _worker_status_name(status: int) -> str:
    try:
        return agent.WorkerStatus.Name(status)
    except ValueError:
        return str(status)


class _Signal:
    """Wakes every coroutine waiting for some state to change."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def fire(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        *,
        timeout: float,
        describe: Callable[[], str],
    ) -> None:
        """Return once ``predicate()`` holds; raise ``TimeoutError(describe())`` after
        ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(describe())
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.add(fut)
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns, dropping a
            # cancellation, when the future is done as it is cancelled (fire() sets every
            # waiter's), and a cut call would wait on for its report.
            try:
                async with asyncio.timeout(remaining):
                    await fut
            except TimeoutError:
                pass
            finally:
                self._waiters.discard(fut)


class WorkerConnection:
    """One registered agent worker, as seen by the loopback server."""

    def __init__(
        self,
        *,
        ws: web.WebSocketResponse,
        worker_id: str,
        register: agent.RegisterWorkerRequest,
        remote: str | None,
    ) -> None:
        self._ws = ws
        self._send_lock = asyncio.Lock()
        self._signal = _Signal()
        self.worker_id = worker_id
        self.agent_name: str = register.agent_name
        self.version: str = register.version
        self.job_type: int = register.type
        self.namespace: str = register.namespace
        self.deployment: str = register.deployment
        self.remote = remote
        self.registered_at = time.time()
        self.status: int = agent.WS_AVAILABLE
        """Latest ``agent.WorkerStatus`` reported through ``update_worker``."""
        self.status_history: list[int] = [agent.WS_AVAILABLE]
        """Every distinct status in the order reported (consecutive repeats collapsed)."""
        self.status_since: list[tuple[float, int]] = [(time.monotonic(), agent.WS_AVAILABLE)]
        """``(monotonic time, status)`` for each change of status."""
        self.load: float = 0.0
        self.job_count: int = 0
        self.updates_received = 0
        self.jobs: set[str] = set()
        """Ids of every job assigned to (or migrated onto) this worker."""
        self.closed = False

    def __repr__(self) -> str:
        return (
            f"WorkerConnection(worker_id={self.worker_id!r}, agent_name={self.agent_name!r}, "
            f"status={_worker_status_name(self.status)}, closed={self.closed})"
        )

    @property
    def available(self) -> bool:
        return not self.closed and self.status == agent.WS_AVAILABLE

    async def send(self, msg: agent.ServerMessage) -> None:
        """Send one server message to the worker."""
        await self.send_bytes(msg.SerializeToString())

    async def send_bytes(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionError(f"worker {self.worker_id} is disconnected")
        async with self._send_lock:
            await self._ws.send_bytes(data)

    async def wait_for_status(self, status: int, timeout: float = 30) -> None:
        """Wait until the worker's latest reported status is ``status`` (an
        ``agent.WorkerStatus`` value such as ``agent.WS_FULL``)."""
        await self._signal.wait_until(
            lambda: self.status == status,
            timeout=timeout,
            describe=lambda: (
                f"worker {self.worker_id} did not report {_worker_status_name(status)} within "
                f"{timeout}s (status history: "
                f"{[_worker_status_name(s) for s in self.status_history]}, "
                f"closed={self.closed})"
            ),
        )

    def seconds_in(self, status: int, since: float, until: float | None = None) -> float:
        """How long, between the monotonic times `since` and `until` (now), the worker's
        reported status was `status`."""
        end = time.monotonic() if until is None else until
        total = 0.0
        changes = [*self.status_since, (end, -1)]
        for (start, state), (stop, _) in itertools.pairwise(changes):
            if state == status:
                total += max(0.0, min(stop, end) - max(start, since))
        return total

    async def wait_closed(self, timeout: float = 30) -> None:
        """Wait until the worker's WebSocket connection is gone."""
        await self._signal.wait_until(
            lambda: self.closed,
            timeout=timeout,
            describe=lambda: f"worker {self.worker_id} still connected after {timeout}s",
        )

    async def close(self) -> None:
        """Close the worker's connection from the server side."""
        await self._ws.close()

    def _update_status(self, update: agent.UpdateWorkerStatus) -> None:
        self.updates_received += 1
        self.load = update.load
        self.job_count = update.job_count
        if update.status != self.status or not self.status_history:
            self.status_history.append(update.status)
            self.status_since.append((time.monotonic(), update.status))
        self.status = update.status
        self._signal.fire()

    def _mark_closed(self) -> None:
        self.closed = True
        self._signal.fire()


class Dispatch:
    """The outcome of :meth:`LoopbackDispatchServer.dispatch` and the live state of its job."""

    def __init__(self, *, job: agent.Job) -> None:
        self._signal = _Signal()
        self.job = job
        self.job_id: str = job.id
        self.dispatch_id: str = job.dispatch_id
        self.room: str = job.room.name
        self.room_sid: str = job.room.sid
        self.agent_name: str = job.agent_name
        self.worker_id: str = ""
        """The worker that got the assignment ("" when nothing accepted)."""
        self.accepted = False
        self.terminate = False
        """True when a worker rejected the job with ``terminate=True``."""
        self.participant_identity = ""
        self.participant_name = ""
        self.participant_metadata = ""
        self.participant_attributes: dict[str, str] = {}
        self.token = ""
        """The room-join JWT sent with the assignment."""
        self.rejected_by: list[tuple[str, bool]] = []
        """``(worker_id, terminate)`` for every worker that answered "not available"."""
        self.statuses: list[int] = []
        """Every ``agent.JobStatus`` reported for this job through ``update_job``, in order."""
        self.error = ""
        """Why the dispatch was not accepted, or the last job error a worker reported."""
        self.termination_requested = False
        self.lost = ""
        """Set when the job's worker went away while it ran: its connection closed with the
        job assigned, no final status and no report (see :meth:`LoopbackDispatchServer.
        wait_for_end`); says which worker."""
        self.lost_by = ""
        """The LiveKit id of the worker it was lost with ("" unless lost)."""
        self.offers = 1
        """How many times the job was offered, this offer included (see
        ``worker.dispatch_until_accepted``)."""
        self.refused = 0
        """Earlier offers a worker answered "not available" (rejected)."""
        self.unavailable = 0
        """Earlier offers no worker was available for (each reported itself full)."""

    def __repr__(self) -> str:
        return (
            f"Dispatch(job_id={self.job_id!r}, room={self.room!r}, accepted={self.accepted}, "
            f"worker_id={self.worker_id!r}, statuses={[_job_status_name(s) for s in self.statuses]}"
            f", error={self.error!r})"
        )

    @property
    def status(self) -> int | None:
        """The latest reported job status, or None before the worker reported any."""
        return self.statuses[-1] if self.statuses else None

    @property
    def ended(self) -> bool:
        """Whether the job's worker reported a final status for it, or the job was lost."""
        return bool(self.lost) or any(s in TERMINAL_JOB_STATUSES for s in self.statuses)

    async def wait_for_status(self, *statuses: int, timeout: float = 60) -> int:
        """Wait for the job to report one of ``statuses`` and return it.

        With no arguments, waits for a terminal status (``JS_SUCCESS`` or ``JS_FAILED``).
        A status reported before the call counts. Raises :class:`RuntimeError` at once for a
        dispatch no worker accepted, and :class:`TimeoutError` when nothing matches in time.
        """
        wanted = tuple(statuses) or TERMINAL_JOB_STATUSES
        if not self.accepted:
            raise RuntimeError(
                f"job {self.job_id} was never assigned, so it has no status "
                f"(error: {self.error or 'none'}, rejected_by: {self.rejected_by})"
            )

        def _match() -> int | None:
            for status in self.statuses:
                if status in wanted:
                    return status
            return None

        await self._signal.wait_until(
            lambda: _match() is not None,
            timeout=timeout,
            describe=lambda: (
                f"job {self.job_id} (room {self.room!r}, worker {self.worker_id}) did not reach "
                f"{' or '.join(_job_status_name(s) for s in wanted)} within {timeout}s; "
                f"statuses seen: {[_job_status_name(s) for s in self.statuses] or 'none'}"
                + (f", last error: {self.error}" if self.error else "")
            ),
        )
        result = _match()
        assert result is not None
        return result

    def _add_status(self, update: agent.UpdateJobStatus) -> None:
        self.statuses.append(update.status)
        if update.error:
            self.error = update.error
        self._signal.fire()


class _AvailabilityWait:
    def __init__(self, worker: WorkerConnection, fut: asyncio.Future[agent.AvailabilityResponse]):
        self.worker = worker
        self.fut = fut


class LoopbackDispatchServer:
    """A local stand-in for the LiveKit server's agent dispatch, on ``127.0.0.1``.

    Usage::

        async with LoopbackDispatchServer() as lk:
            server = AgentServer(ws_url=lk.url, api_key=lk.api_key, api_secret=lk.api_secret)
            ...
            worker = await lk.wait_for_worker(agent_name="my-agent")
            d = await lk.dispatch("room-1", agent_name="my-agent")
            await d.wait_for_status()
    """

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        api_secret: str = DEFAULT_API_SECRET,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret must be non-empty")
        self.api_key = api_key
        self.api_secret = api_secret
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._verifier = api.TokenVerifier(api_key, api_secret)
        self._signal = _Signal()
        self._worker_tasks: set[asyncio.Task[Any]] = set()
        self._sockets: set[web.WebSocketResponse] = set()
        self._pending_availability: dict[str, _AvailabilityWait] = {}
        self._round_robin: dict[tuple[str, int], itertools.count[int]] = {}
        self._closing = False
        self.workers: list[WorkerConnection] = []
        """Connected, registered workers, oldest first."""
        self.dispatches: dict[str, Dispatch] = {}
        """Every dispatch made, by job id."""
        self.reports: dict[str, dict[str, Any]] = {}
        """Reports POSTed to ``/openrtc/simulation/report``, by job id."""
        self.processes: dict[str, dict[str, Any]] = {}
        """What each simulating worker said of itself at ``/openrtc/simulation/worker``
        (``worker``: its index under a supervisor, or None; ``pid``), by LiveKit worker id."""
        self.rejected_connections = 0
        """WebSocket upgrades refused (bad or missing token)."""
        self.malformed_messages = 0
        """Worker frames that were dropped because they could not be understood."""
        self.availability: list[tuple[float, int]] = [(time.monotonic(), 0)]
        """``(monotonic time, workers available)`` at each change of that number."""
        self.withhold_assignments = False
        """Accept jobs but never assign them, as a LiveKit server does that lost a job (or a
        worker it has stopped talking to): the worker's accept times out."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("LoopbackDispatchServer already started")
        app = web.Application()
        app.router.add_get(AGENT_PATH, self._handle_agent_ws)
        app.router.add_post(REPORT_PATH, self._handle_report)
        app.router.add_post(WORKER_PATH, self._handle_worker_process)
        app.router.add_get(HEALTH_PATH, self._handle_health)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
            site = web.SockSite(runner, sock)
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._port = int(sock.getsockname()[1])
        self._runner = runner
        self._closing = False
        logger.debug("loopback dispatch server listening on %s", self.http_url)

    async def aclose(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing = True
        for wait in list(self._pending_availability.values()):
            if not wait.fut.done():
                wait.fut.set_exception(ConnectionError("dispatch server closed"))
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server shutting down")
        if self._worker_tasks:
            await asyncio.wait(list(self._worker_tasks), timeout=5)
        await runner.cleanup()
        self._signal.fire()
        logger.debug("loopback dispatch server closed")

    async def __aenter__(self) -> LoopbackDispatchServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("LoopbackDispatchServer is not started")
        return self._port

    @property
    def url(self) -> str:
        """The WebSocket URL a worker uses as ``LIVEKIT_URL``."""
        return f"ws://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def report_url(self) -> str:
        return self.http_url + REPORT_PATH

    def worker_env(self) -> dict[str, str]:
        """What a worker subprocess needs in its environment to register here: this server's
        URL and keys, and a free health port (``OPENRTC_HTTP_PORT=0``)."""
        return {
            "LIVEKIT_URL": self.url,
            "LIVEKIT_API_KEY": self.api_key,
            "LIVEKIT_API_SECRET": self.api_secret,
            "OPENRTC_HTTP_PORT": "0",
        }

    def worker_args(self) -> list[str]:
        """The same as command-line flags of a run verb: ``--url``, ``--api-key``,
        ``--api-secret`` of this server."""
        return ["--url", self.url, "--api-key", self.api_key, "--api-secret", self.api_secret]

    def worker_token(self) -> str:
        """A JWT a worker may register with (the same shape livekit-agents sends)."""
        return (
            api.AccessToken(self.api_key, self.api_secret)
            .with_grants(api.VideoGrants(agent=True))
            .to_jwt()
        )

    # -- queries -----------------------------------------------------------------------------

    def _find_worker(self, agent_name: str | None) -> WorkerConnection | None:
        for worker in self.workers:
            if worker.closed:
                continue
            if agent_name is None or worker.agent_name == agent_name:
                return worker
        return None

    async def wait_for_worker(
        self,
        *,
        agent_name: str | None = None,
        timeout: float = 30,
    ) -> WorkerConnection:
        """Wait for a registered worker (with ``agent_name``, when given) and return it."""
        await self._signal.wait_until(
            lambda: self._find_worker(agent_name) is not None,
            timeout=timeout,
            describe=lambda: (
                f"no worker{'' if agent_name is None else f' with agent_name={agent_name!r}'} "
                f"registered within {timeout}s; registered: "
                f"{[(w.worker_id, w.agent_name) for w in self.workers] or 'none'}"
            ),
        )
        worker = self._find_worker(agent_name)
        assert worker is not None
        return worker

    def _eligible_workers(self, agent_name: str, job_type: int) -> list[WorkerConnection]:
        eligible = [
            w
            for w in self.workers
            if w.available and w.agent_name == agent_name and w.job_type == job_type
        ]
        if len(eligible) > 1:
            counter = self._round_robin.setdefault((agent_name, job_type), itertools.count())
            start = next(counter) % len(eligible)
            eligible = eligible[start:] + eligible[:start]
        return eligible

    # -- dispatch ----------------------------------------------------------------------------

    async def dispatch(
        self,
        room: str,
        *,
        agent_name: str = "",
        job_metadata: str = "",
        room_metadata: str = "",
        participant_identity: str | None = None,
        job_type: int = agent.JT_ROOM,
        timeout: float = 30,
    ) -> Dispatch:
        """Offer a new job for ``room`` to the workers registered as ``agent_name``.

        Mirrors the LiveKit server: available workers are asked in round-robin order; a
        worker answering "not available" with ``terminate=False`` passes the job on to the
        next eligible worker, ``terminate=True`` ends the dispatch. An accepted job is
        assigned with a room-join token for the identity the worker chose.
        ``participant_identity`` fills ``Job.participant`` (the publisher of a
        ``JT_PUBLISHER``/``JT_PARTICIPANT`` job). ``timeout`` bounds the whole negotiation.
        """
        if self._runner is None:
            raise RuntimeError("LoopbackDispatchServer is not started")
        job = agent.Job(
            id=_new_id("AJ_"),
            dispatch_id=_new_id("AD_"),
            type=job_type,  # type: ignore[arg-type]
            room=models.Room(
                sid=_new_id("RM_"),
                name=room,
                metadata=room_metadata,
                creation_time=int(time.time()),
            ),
            metadata=job_metadata,
            agent_name=agent_name,
        )
        if participant_identity is not None:
            job.participant.CopyFrom(
                models.ParticipantInfo(sid=_new_id("PA_"), identity=participant_identity)
            )
        d = Dispatch(job=job)
        self.dispatches[job.id] = d

        candidates = self._eligible_workers(agent_name, job_type)
        if not candidates:
            d.error = (
                f"no available worker registered with agent_name={agent_name!r} "
                f"(registered: {[(w.worker_id, w.agent_name) for w in self.workers] or 'none'})"
            )
            logger.info("dispatch of %s not accepted: %s", job.id, d.error)
            return d

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for worker in candidates:
            if not worker.available or self._closing:
                continue  # went away or reported full since the candidates were picked
            remaining = deadline - loop.time()
            if remaining <= 0:
                d.error = f"timed out after {timeout}s offering the job"
                break
            fut: asyncio.Future[agent.AvailabilityResponse] = loop.create_future()
            self._pending_availability[job.id] = _AvailabilityWait(worker, fut)
            try:
                await worker.send(
                    agent.ServerMessage(availability=agent.AvailabilityRequest(job=job))
                )
                async with asyncio.timeout(remaining):  # see _Signal.wait_until
                    resp = await fut
            except TimeoutError:
                d.error = (
                    f"worker {worker.worker_id} did not answer the availability request "
                    f"within {timeout}s"
                )
                break
            except ConnectionError as e:
                d.error = f"worker {worker.worker_id} went away while offered the job: {e}"
                logger.info(d.error)
                continue
            finally:
                self._pending_availability.pop(job.id, None)

            if not resp.available:
                d.rejected_by.append((worker.worker_id, resp.terminate))
                logger.debug(
                    "worker %s rejected job %s (terminate=%s)",
                    worker.worker_id,
                    job.id,
                    resp.terminate,
                )
                if resp.terminate:
                    d.terminate = True
                    d.error = f"worker {worker.worker_id} rejected the job with terminate=True"
                    return d
                d.error = f"worker {worker.worker_id} rejected the job"
                continue

            identity = resp.participant_identity or f"agent-{job.id}"
            attributes = dict(resp.participant_attributes)
            token_builder = (
                api.AccessToken(self.api_key, self.api_secret)
                .with_identity(identity)
                .with_kind("agent")
                .with_grants(api.VideoGrants(room_join=True, room=room, agent=True))
            )
            if resp.participant_name:
                token_builder = token_builder.with_name(resp.participant_name)
            if resp.participant_metadata:
                token_builder = token_builder.with_metadata(resp.participant_metadata)
            if attributes:
                token_builder = token_builder.with_attributes(attributes)
            token = token_builder.to_jwt()

            d.worker_id = worker.worker_id
            d.participant_identity = identity
            d.participant_name = resp.participant_name
            d.participant_metadata = resp.participant_metadata
            d.participant_attributes = attributes
            d.token = token
            if self.withhold_assignments:
                d.error = f"assignment withheld from worker {worker.worker_id}"
                logger.info("job %s: %s", job.id, d.error)
                return d
            worker.jobs.add(job.id)
            try:
                await worker.send(
                    agent.ServerMessage(
                        assignment=agent.JobAssignment(job=job, url=self.url, token=token)
                    )
                )
            except ConnectionError as e:
                worker.jobs.discard(job.id)
                d.worker_id = ""
                d.error = f"worker {worker.worker_id} went away before the assignment: {e}"
                logger.info(d.error)
                continue
            d.accepted = True
            d.error = ""
            logger.debug("job %s assigned to worker %s", job.id, worker.worker_id)
            return d

        if not d.error:
            d.error = "no worker accepted the job"
        logger.info("dispatch of %s not accepted: %s", job.id, d.error)
        return d

    async def terminate(self, job_id: str) -> None:
        """Tell the worker running ``job_id`` to terminate it (``ServerMessage.termination``)."""
        d = self.dispatches.get(job_id)
        if d is None or not d.accepted:
            raise KeyError(f"no assigned job with id {job_id!r}")
        worker = next((w for w in self.workers if job_id in w.jobs and not w.closed), None)
        if worker is None:
            raise ConnectionError(f"the worker running job {job_id} is not connected")
        d.termination_requested = True
        await worker.send(agent.ServerMessage(termination=agent.JobTermination(job_id=job_id)))

    async def wait_for_end(self, job_id: str, timeout: float = 60) -> dict[str, Any] | None:
        """Wait until ``job_id``'s call is over and return its report, or None when it ended
        without one: its worker reported a final status first (a job process killed for its
        memory posts no report; the status's error says why) or the job was lost with its
        worker (``Dispatch.lost``). A call reports before its job ends (its report is posted
        in a shutdown callback, its status is sent once the job has ended), so a final status
        with no report means none is coming.

        :raises TimeoutError: neither within `timeout` seconds.
        """
        d = self.dispatches.get(job_id)
        await self._signal.wait_until(
            lambda: job_id in self.reports or (d is not None and d.ended),
            timeout=timeout,
            describe=lambda: (
                f"no report for job {job_id} posted to {REPORT_PATH} within {timeout}s, and "
                f"no final status ({d!r})"
            ),
        )
        return self.reports.get(job_id)

    async def wait_for_report(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        """Wait until a report for ``job_id`` was POSTed and return it."""
        await self._signal.wait_until(
            lambda: job_id in self.reports,
            timeout=timeout,
            describe=lambda: (
                f"no report for job {job_id} posted to {REPORT_PATH} within {timeout}s "
                f"(reports received for: {sorted(self.reports) or 'none'})"
            ),
        )
        return self.reports[job_id]

    # -- HTTP handlers -----------------------------------------------------------------------

    def _note_availability(self) -> None:
        count = sum(1 for worker in self.workers if worker.available)
        if count != self.availability[-1][1]:
            self.availability.append((time.monotonic(), count))

    def longest_unavailable(self, since: float, until: float | None = None) -> float:
        """The longest stretch, between the monotonic times `since` and `until` (now), in
        which no worker was available to take a job."""
        end = time.monotonic() if until is None else until
        longest = 0.0
        changes = [*self.availability, (end, -1)]
        for (start, count), (stop, _) in itertools.pairwise(changes):
            if count == 0:
                longest = max(longest, min(stop, end) - max(start, since))
        return longest

    async def _handle_worker_process(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        worker_id = body.get("worker_id") if isinstance(body, dict) else None
        if not isinstance(worker_id, str) or not worker_id:
            return web.json_response(
                {"error": "body must be a JSON object with a non-empty string 'worker_id'"},
                status=400,
            )
        assert isinstance(body, dict)
        self.processes[worker_id] = {
            "worker": _whole(body.get("worker")),
            "pid": _whole(body.get("pid")),
        }
        return web.json_response({"ok": True})

    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _handle_report(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response(
                {"error": "request body must be a JSON object with a string 'job_id'"}, status=400
            )
        if not isinstance(body, dict):
            return web.json_response(
                {"error": "request body must be a JSON object, got " + type(body).__name__},
                status=400,
            )
        job_id = body.get("job_id")
        if not isinstance(job_id, str) or not job_id:
            return web.json_response(
                {"error": "report is missing a non-empty string 'job_id'"}, status=400
            )
        self.reports[job_id] = body
        logger.debug("report received for job %s", job_id)
        self._signal.fire()
        return web.json_response({"ok": True, "job_id": job_id})

    def _authorize(self, request: web.Request) -> str | None:
        """Return why the request may not open a worker connection, or None when it may."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "missing Authorization: Bearer <token> header"
        try:
            claims = self._verifier.verify(token.strip())
        except Exception as e:
            return f"invalid token: {e}"
        if not (claims.video and claims.video.agent):
            return "token lacks the video grant agent=true"
        return None

    async def _handle_agent_ws(self, request: web.Request) -> web.StreamResponse:
        problem = self._authorize(request)
        if problem is not None:
            self.rejected_connections += 1
            logger.warning("refused worker connection from %s: %s", request.remote, problem)
            return web.Response(status=401, text=problem)
        if self._closing:
            return web.Response(status=503, text="server shutting down")

        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.add(ws)
        task = asyncio.current_task()
        if task is not None:
            self._worker_tasks.add(task)
        worker: WorkerConnection | None = None
        try:
            worker = await self._register(ws, request)
            if worker is not None:
                await self._serve_worker(worker, ws)
        except Exception:
            logger.exception("worker connection handler failed")
        finally:
            self._sockets.discard(ws)
            if task is not None:
                self._worker_tasks.discard(task)
            if worker is not None:
                self._drop_worker(worker)
            if not ws.closed:
                await ws.close()
        return ws

    async def _register(
        self, ws: web.WebSocketResponse, request: web.Request
    ) -> WorkerConnection | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REGISTER_TIMEOUT
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                logger.warning("worker from %s did not register in time", request.remote)
                await ws.close(code=1008, message=b"register timeout")
                return None
            try:
                raw = await ws.receive(timeout=remaining)
            except TimeoutError:
                continue
            if raw.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return None
            if raw.type != WSMsgType.BINARY:
                self.malformed_messages += 1
                logger.warning(
                    "ignoring non-binary %s frame before register from %s",
                    raw.type.name,
                    request.remote,
                )
                continue
            msg = agent.WorkerMessage()
            try:
                msg.ParseFromString(raw.data)
            except DecodeError:
                msg = agent.WorkerMessage()
            if msg.WhichOneof("message") != "register":
                self.malformed_messages += 1
                logger.warning(
                    "first message from worker at %s was not register (%r), closing",
                    request.remote,
                    msg.WhichOneof("message"),
                )
                await ws.close(code=1002, message=b"expected register as first message")
                return None
            break

        worker = WorkerConnection(
            ws=ws, worker_id=_new_id("AW_"), register=msg.register, remote=request.remote
        )
        await worker.send(
            agent.ServerMessage(
                register=agent.RegisterWorkerResponse(
                    worker_id=worker.worker_id,
                    server_info=models.ServerInfo(
                        edition=models.ServerInfo.Standard,
                        version=SERVER_VERSION,
                        region="loopback",
                        node_id=_new_id("ND_"),
                    ),
                )
            )
        )
        self.workers.append(worker)
        self._note_availability()
        logger.info(
            "registered worker %s (agent_name=%r, version=%s)",
            worker.worker_id,
            worker.agent_name,
            worker.version,
        )
        self._signal.fire()
        return worker

    async def _serve_worker(self, worker: WorkerConnection, ws: web.WebSocketResponse) -> None:
        async for raw in ws:
            if raw.type == WSMsgType.BINARY:
                self._on_worker_frame(worker, raw.data)
            elif raw.type == WSMsgType.ERROR:
                logger.warning("worker %s connection error: %s", worker.worker_id, ws.exception())
                return
            else:
                self.malformed_messages += 1
                logger.warning(
                    "ignoring non-binary %s frame from worker %s", raw.type.name, worker.worker_id
                )

    def _on_worker_frame(self, worker: WorkerConnection, data: bytes) -> None:
        msg = agent.WorkerMessage()
        try:
            msg.ParseFromString(data)
        except DecodeError as e:
            self.malformed_messages += 1
            logger.warning("dropping undecodable frame from worker %s: %s", worker.worker_id, e)
            return
        which = msg.WhichOneof("message")
        try:
            if which == "availability":
                self._on_availability(worker, msg.availability)
            elif which == "update_job":
                self._on_update_job(worker, msg.update_job)
            elif which == "update_worker":
                worker._update_status(msg.update_worker)
                self._note_availability()
            elif which == "ping":
                self._on_ping(worker, msg.ping)
            elif which == "migrate_job":
                self._on_migrate(worker, msg.migrate_job)
            elif which == "simulate_job":
                logger.debug("ignoring simulate_job from worker %s", worker.worker_id)
            elif which == "register":
                self.malformed_messages += 1
                logger.warning("ignoring repeated register from worker %s", worker.worker_id)
            else:
                self.malformed_messages += 1
                logger.warning(
                    "ignoring empty or unknown message from worker %s (%d bytes)",
                    worker.worker_id,
                    len(data),
                )
        except Exception:
            self.malformed_messages += 1
            logger.exception("failed to handle %s from worker %s", which, worker.worker_id)

    def _on_availability(self, worker: WorkerConnection, resp: agent.AvailabilityResponse) -> None:
        wait = self._pending_availability.get(resp.job_id)
        if wait is None or wait.worker is not worker:
            logger.warning(
                "worker %s answered availability for job %r that it was not offered",
                worker.worker_id,
                resp.job_id,
            )
            return
        if not wait.fut.done():
            wait.fut.set_result(resp)

    def _on_update_job(self, worker: WorkerConnection, update: agent.UpdateJobStatus) -> None:
        d = self.dispatches.get(update.job_id)
        if d is None:
            logger.warning(
                "worker %s reported status %s for unknown job %r",
                worker.worker_id,
                _job_status_name(update.status),
                update.job_id,
            )
            return
        logger.debug(
            "job %s is %s%s",
            update.job_id,
            _job_status_name(update.status),
            f" ({update.error})" if update.error else "",
        )
        d._add_status(update)
        self._signal.fire()

    def _on_ping(self, worker: WorkerConnection, ping: agent.WorkerPing) -> None:
        pong = agent.ServerMessage(
            pong=agent.WorkerPong(last_timestamp=ping.timestamp, timestamp=int(time.time() * 1000))
        )
        task = asyncio.get_running_loop().create_task(self._send_quietly(worker, pong))
        self._worker_tasks.add(task)
        task.add_done_callback(self._worker_tasks.discard)

    async def _send_quietly(self, worker: WorkerConnection, msg: agent.ServerMessage) -> None:
        try:
            await worker.send(msg)
        except Exception as e:
            logger.debug("could not send to worker %s: %s", worker.worker_id, e)

    def _on_migrate(self, worker: WorkerConnection, req: agent.MigrateJobRequest) -> None:
        job_ids = list(req.job_ids) + [j.id for j in req.jobs if j.id]
        for job_id in job_ids:
            for other in self.workers:
                if other is not worker:
                    other.jobs.discard(job_id)
            worker.jobs.add(job_id)
            d = self.dispatches.get(job_id)
            if d is not None:
                d.worker_id = worker.worker_id
                d.lost = d.lost_by = ""  # it lives on in the worker that took it over
                d._signal.fire()
        logger.info("worker %s took over jobs %s", worker.worker_id, job_ids)

    def _drop_worker(self, worker: WorkerConnection) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        worker._mark_closed()
        self._lose_jobs(worker)
        self._note_availability()
        for wait in list(self._pending_availability.values()):
            if wait.worker is worker and not wait.fut.done():
                wait.fut.set_exception(ConnectionError("worker disconnected"))
        logger.info("worker %s disconnected", worker.worker_id)
        self._signal.fire()

    def _lose_jobs(self, worker: WorkerConnection) -> None:
        """The jobs `worker` held when its connection closed: those with no final status
        and no report are lost with it. A worker that stops on its own reports every job's
        end before it disconnects; one that died (``os._exit``, SIGKILL) closes its
        connection the moment the kernel reaps it, with its calls still assigned."""
        said = self.processes.get(worker.worker_id, {})
        index, pid = said.get("worker"), said.get("pid")
        who = f"worker {worker.worker_id}" + "".join(
            f", {name} {value}" for name, value in (("index", index), ("pid", pid)) if value
        )
        for job_id in sorted(worker.jobs):
            d = self.dispatches.get(job_id)
            if d is None or d.ended or job_id in self.reports:
                continue
            d.lost = f"lost with its worker ({who}): its connection closed while the call ran"
            d.lost_by = worker.worker_id
            logger.warning("job %s %s", job_id, d.lost)
            d._signal.fire()


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
