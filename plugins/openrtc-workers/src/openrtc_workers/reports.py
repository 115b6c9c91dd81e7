"""What a worker tells its supervisor, and what a supervisor tells a controller above it.

A worker writes one JSON line per event into a pipe its supervisor reads; the supervisor
then knows which calls a dead worker held (to name them as lost) and how many calls each
worker took (for ``--max-worker-sessions``). Writes never block the worker's event loop: a
full pipe (a supervisor that stopped reading) drops the line and counts it.

A supervisor run by a controller (openrtc-deploy runs each generation of workers as one)
finds a pipe of its own in ``OPENRTC_STATUS_FD`` and writes the same kind of lines up it:
its workers' events with the worker's index and pid, and its own (:data:`STARTED`,
:data:`EXITED`, :data:`GAVE_UP`, :data:`READY`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable
from typing import Any, Final

import attrs

from openrtc_core import (
    REASON_LIMIT,
    JobView,
    PoolView,
    RouteDecision,
    SessionOutcome,
    TenantContext,
    Verdict,
    bounded,
    hookimpl,
)

logger = logging.getLogger("openrtc.workers")

# A worker's events.
REGISTERED: Final = "registered"
TAKEN: Final = "taken"
RELEASED: Final = "released"
DRAINING: Final = "draining"
CUT: Final = "cut"
"""A call the worker's drain timeout ended (``job``, ``agent``), said as the worker exits."""
UNHEALTHY: Final = "unhealthy"
"""The worker holds something it cannot get rid of (``reason``): its supervisor replaces it."""
# A supervisor's own events, for a controller.
STARTED: Final = "started"
"""A worker process started (``worker``, ``pid``)."""
EXITED: Final = "exited"
"""A worker process exited (``worker``, ``pid``, ``reason``, ``lost``: live calls it held)."""
GAVE_UP: Final = "gave_up"
"""A worker slot crash-looped and is not started again (``worker``, ``reason``)."""
READY: Final = "ready"
"""Every worker slot has a worker registered with LiveKit (``workers``: LiveKit ids)."""

STATUS_FD_ENV: Final = "OPENRTC_STATUS_FD"
"""The pipe a controller reads a supervisor's status lines from (a file descriptor)."""


class LineWriter:
    """One JSON line per event into a pipe, never blocking: a full pipe drops the line."""

    def __init__(self, fd: int, reader: str) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.reader = reader
        """Who reads the pipe, for the warning when it stops reading."""
        self.dropped = 0

    def say(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}, separators=(",", ":")) + "\n"
        try:
            os.write(self.fd, line.encode())  # under PIPE_BUF: written whole or not at all
        except BlockingIOError:
            self.dropped += 1
            if self.dropped == 1:
                logger.warning("the %s is not reading our reports; dropping them", self.reader)
        except OSError:
            self.dropped += 1  # the reader is gone (its parent-death signal reaches us)


def status_writer() -> LineWriter | None:
    """The writer for a controller's pipe when ``OPENRTC_STATUS_FD`` names one, else None."""
    raw = os.environ.get(STATUS_FD_ENV, "").strip()
    if not raw.isdigit():
        return None
    fd = int(raw)
    try:
        os.set_inheritable(fd, False)  # not into the workers' job processes
    except OSError:
        logger.warning("%s=%s is not an open file descriptor; not reporting", STATUS_FD_ENV, raw)
        return None
    return LineWriter(fd, "controller")


class Reporter:
    """The worker-side plugin: writes the worker's events to the supervisor's pipe."""

    def __init__(self, fd: int) -> None:
        self.writer = LineWriter(fd, "supervisor")
        self._say = self.writer.say
        self.server: Any = None

    def report_cut_calls(self) -> None:
        """Name the calls the worker's drain timeout ended (once its server has stopped)."""
        for job, agent in getattr(self.server, "cut_calls", ()):
            self._say(CUT, job=job, agent=agent)

    @hookimpl
    def openrtc_worker_started(self, pool: PoolView, server: Any) -> None:
        # livekit's AgentServer event, on every registration (again after a reconnect).
        self.server = server
        server.on("worker_registered", self._registered)

    def _registered(self, worker_id: str, server_info: object) -> None:
        self._say(REGISTERED, id=worker_id)

    @hookimpl
    def openrtc_claim_job(
        self, job: JobView, decision: RouteDecision, tenant: TenantContext | None
    ) -> Awaitable[Verdict | None] | None:
        self._say(TAKEN, job=job.job_id, agent=decision.agent)
        return None

    @hookimpl
    def openrtc_job_released(
        self, job: JobView, tenant: TenantContext | None, outcome: SessionOutcome | None
    ) -> None:
        self._say(RELEASED, job=job.job_id)

    @hookimpl
    def openrtc_drain_started(self, pool: PoolView) -> None:
        self._say(DRAINING)

    @hookimpl
    def openrtc_worker_unhealthy(self, pool: PoolView, reason: str) -> None:
        # Bounded: a line up to PIPE_BUF is written whole or not at all.
        self._say(UNHEALTHY, reason=bounded(reason, REASON_LIMIT))


@attrs.define
class ReportReader:
    """The supervisor's end of one worker's pipe: complete lines in, events out."""

    fd: int
    ended: bool = False
    """The worker's end is closed (it exited): nothing more will come."""
    _pending: bytes = b""

    def read(self) -> list[dict[str, Any]]:
        """The events available now (never blocks); [] at end of file too."""
        chunks = []
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.ended = True
                break
            chunks.append(chunk)
        data = self._pending + b"".join(chunks)
        *lines, self._pending = data.split(b"\n")
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events
