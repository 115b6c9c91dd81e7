"""What a worker tells its supervisor: that it runs, and each call it takes and ends.

A worker writes one JSON line per event into a pipe its supervisor reads; the supervisor
then knows which calls a dead worker held (to name them as lost) and how many calls each
worker took (for ``--max-worker-sessions``). Writes never block the worker's event loop: a
full pipe (a supervisor that stopped reading) drops the line and counts it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable
from typing import Any, Final

import attrs

from openrtc_core import (
    JobView,
    PoolView,
    RouteDecision,
    SessionOutcome,
    TenantContext,
    Verdict,
    hookimpl,
)

logger = logging.getLogger("openrtc.workers")

REGISTERED: Final = "registered"
TAKEN: Final = "taken"
RELEASED: Final = "released"
DRAINING: Final = "draining"


class Reporter:
    """The worker-side plugin: writes the worker's events to the supervisor's pipe."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.dropped = 0

    def _say(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}, separators=(",", ":")) + "\n"
        try:
            os.write(self.fd, line.encode())  # under PIPE_BUF: written whole or not at all
        except BlockingIOError:
            self.dropped += 1
            if self.dropped == 1:
                logger.warning("the supervisor is not reading this worker's reports; dropping")
        except OSError:
            self.dropped += 1  # the supervisor is gone; the parent-death signal drains us

    @hookimpl
    def openrtc_worker_started(self, pool: PoolView, server: Any) -> None:
        # livekit's AgentServer event, on every registration (again after a reconnect).
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
