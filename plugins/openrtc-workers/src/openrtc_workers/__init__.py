"""openrtc-workers: one ``openrtc start`` runs a worker per core under a supervisor.

Installed, ``openrtc start`` runs under its supervisor: ``openrtc start TARGET --workers N``
(``pool.run(workers=N)``, ``OPENRTC_WORKERS``; the default for ``start`` is one worker per
usable core). The supervisor runs the pool's prewarm once, forks the workers (each a normal
OpenRTC worker with its own LiveKit registration), replaces a worker that dies (exponential
backoff; a crash loop stops), recycles one above ``--max-worker-memory`` or
``--max-worker-sessions`` without cutting a call, and drains them all on SIGTERM. See
docs/workers.md.
"""

from __future__ import annotations

from openrtc_core import drain_when_parent_dies

from .plan import WORKERS_ENV, WorkerPlan
from .policy import RestartPolicy
from .reports import (
    CUT,
    DRAINING,
    EXITED,
    GAVE_UP,
    READY,
    REGISTERED,
    RELEASED,
    STARTED,
    STATUS_FD_ENV,
    TAKEN,
    UNHEALTHY,
    ReportReader,
)
from .signals import SignalInbox
from .supervisor import PORT_OFFSET_ENV, WorkerSupervisor

__all__ = [
    "CUT",
    "DRAINING",
    "EXITED",
    "GAVE_UP",
    "PORT_OFFSET_ENV",
    "READY",
    "REGISTERED",
    "RELEASED",
    "STARTED",
    "STATUS_FD_ENV",
    "TAKEN",
    "UNHEALTHY",
    "WORKERS_ENV",
    "ReportReader",
    "RestartPolicy",
    "SignalInbox",
    "WorkerPlan",
    "WorkerSupervisor",
    "drain_when_parent_dies",
]
