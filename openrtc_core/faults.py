"""Fault containment: an exception in one agent's own code ends that session, and only it.

livekit catches exceptions raised by agent code running inside a session (``on_enter``, a
``*_node`` override, a tool) and logs them with their traceback; the call then goes on in an
undefined state. A worker hosting many calls should instead end the one whose code failed,
with a failed status and one line naming the job, the agent and the error.

Errors inside livekit or a provider plugin (a network error after retries, say) are livekit's
to handle and are left alone: only a traceback that passes through the agent's own code
counts, that is, code outside the installed libraries and the standard library, or in the
module that defines the agent.
"""

from __future__ import annotations

import logging
import site
import sysconfig
import weakref
from pathlib import Path
from types import TracebackType
from typing import Protocol

_PATHS = sysconfig.get_paths()
LIBRARY_ROOTS = tuple(
    str(Path(p).resolve())
    for p in {
        _PATHS["stdlib"],
        _PATHS["purelib"],
        _PATHS["platlib"],
        site.getusersitepackages(),
        *site.getsitepackages(),
    }
)
_FRAMEWORK = ("livekit.", "openrtc_core.", "openrtc_testing.", "asyncio.", "opentelemetry.")


def _user_frames(tb: TracebackType | None, user_modules: frozenset[str]) -> bool:
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        filename = str(Path(tb.tb_frame.f_code.co_filename).resolve())
        if module in user_modules:
            return True
        if not module.startswith(_FRAMEWORK) and not filename.startswith(LIBRARY_ROOTS):
            return True
        tb = tb.tb_next
    return False


class WatchedSession(Protocol):
    """What the fault watcher needs of a running session (``entrypoint.SessionRun``)."""

    @property
    def job_id(self) -> str: ...

    @property
    def user_modules(self) -> frozenset[str]: ...

    def fail(self, error: str) -> None: ...

    def fault(self, exc: BaseException, error: str) -> None: ...


class SessionFaults(logging.Handler):
    """Watches livekit's error logs for exceptions from agent code, per running session."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self._runs: weakref.WeakValueDictionary[str, WatchedSession] = weakref.WeakValueDictionary()
        self._installed = False

    def watch(self, run: WatchedSession) -> None:
        if not self._installed:
            logging.getLogger("livekit.agents").addHandler(self)
            self._installed = True
        self._runs[run.job_id] = run

    def fail(self, job_id: str, error: str) -> None:
        """Fail the running session of `job_id`, if this process runs it."""
        run = self._runs.get(job_id)
        if run is not None:
            run.fail(error)

    def emit(self, record: logging.LogRecord) -> None:
        if not record.exc_info or record.exc_info[1] is None:
            return
        from livekit.agents import get_job_context

        ctx = get_job_context(required=False)
        run = self._runs.get(ctx.job.id) if ctx is not None else None
        if run is None:
            return
        _, exc, tb = record.exc_info
        if _user_frames(tb, run.user_modules):
            run.fault(exc, f"{type(exc).__name__}: {exc} ({record.getMessage()})")


FAULTS = SessionFaults()
