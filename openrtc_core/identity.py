"""Which of a supervisor's workers this process is (set by the core's ``run_worker``), and
the log fields that name it."""

from __future__ import annotations

import logging
import os
from typing import Final

import attrs

WORKER_ENV: Final = "OPENRTC_WORKER"
"""Set in each supervised worker (and inherited by its job processes): ``index/count/pid``."""


@attrs.frozen
class WorkerIdentity:
    """Which of the supervisor's workers this process is (1-based), and its pid."""

    index: int
    count: int
    pid: int

    def __str__(self) -> str:
        return f"worker {self.index}/{self.count} (pid {self.pid})"


def worker_identity() -> WorkerIdentity | None:
    """This process's worker, when a supervisor started it (a job process of a supervised
    worker answers for its worker); None otherwise."""
    parts = os.environ.get(WORKER_ENV, "").split("/")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return None
    index, count, pid = (int(part) for part in parts)
    return WorkerIdentity(index, count, pid)


class WorkerLogFields(logging.Filter):
    """Names the supervised worker on every log record: ``worker`` (``index/count``) and
    ``worker_pid``."""

    def __init__(self, identity: WorkerIdentity) -> None:
        super().__init__()
        self.worker = f"{identity.index}/{identity.count}"
        self.pid = identity.pid

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        record.worker_pid = self.pid
        return True


def install_worker_log_fields() -> None:
    """In a supervised worker, name it on every record its log handlers write."""
    identity = worker_identity()
    if identity is None:
        return
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, WorkerLogFields) for f in handler.filters):
            handler.addFilter(WorkerLogFields(identity))
