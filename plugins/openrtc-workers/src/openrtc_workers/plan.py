"""openrtc-workers' run options, and the plan ``start`` runs from them.

``--workers N`` (``pool.run(workers=N)``, ``OPENRTC_WORKERS``; ``auto`` is one per usable
core, the default for ``start``), ``--max-worker-memory MiB`` and ``--max-worker-sessions N``.
They are for ``start`` only: ``dev``, ``console`` and ``connect`` run one process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from openrtc_core import RunOption, usable_cores

from .reports import STATUS_FD_ENV

WORKERS_ENV: Final = "OPENRTC_WORKERS"
AUTO: Final = "auto"
VERB: Final = "start"


@attrs.frozen(kw_only=True)
class WorkerPlan:
    """How many workers to run, and when to replace one that has served long enough."""

    count: int
    max_memory_mb: float | None = None
    """A worker whose PSS (with its job processes) goes above this many MiB stops taking
    calls, finishes those it has, and is replaced."""
    max_sessions: int | None = None
    """A worker that has taken this many calls is replaced the same way."""

    @property
    def recycles(self) -> bool:
        return self.max_memory_mb is not None or self.max_sessions is not None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> WorkerPlan:
        raw = options.get("workers")
        count = usable_cores() if raw in (None, AUTO) else int(raw)
        return cls(
            count=count,
            max_memory_mb=options.get("max_worker_memory"),
            max_sessions=options.get("max_worker_sessions"),
        )


def supervises(verb: str, plan: WorkerPlan) -> bool:
    """Whether the supervisor runs `verb`: ``start`` with several workers or recycling, or
    with a controller reading its reports (one generation of openrtc-deploy's)."""
    reported = bool(os.environ.get(STATUS_FD_ENV, "").strip())
    return verb == VERB and (plan.count > 1 or plan.recycles or reported)


def _count(text: str) -> str | int:
    if text.strip().lower() == AUTO:
        return AUTO
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError("give a number of workers, 1 or more, or 'auto' for one per usable core")
    return int(text)


def _more_than_zero(kind: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value <= 0:
            raise ValueError(f"give {what}, more than 0")
        return value

    return parse


OPTIONS: Final = (
    RunOption(
        name="workers",
        flag="--workers",
        help=(
            "Worker processes to run, each registered with LiveKit: a number, or auto (one "
            "per usable core, the default)."
        ),
        parse=_count,
        verbs=(VERB,),
        env=WORKERS_ENV,
        default=AUTO,
        metavar="N",
    ),
    RunOption(
        name="max_worker_memory",
        flag="--max-worker-memory",
        help="Replace a worker whose memory (PSS, MiB) goes above this, once its calls end.",
        parse=_more_than_zero(float, "a size in MiB, e.g. 1024"),
        verbs=(VERB,),
        metavar="MIB",
    ),
    RunOption(
        name="max_worker_sessions",
        flag="--max-worker-sessions",
        help="Replace a worker once it has taken this many calls, once they end.",
        parse=_more_than_zero(int, "a number of calls, e.g. 1000"),
        verbs=(VERB,),
        metavar="N",
    ),
)
