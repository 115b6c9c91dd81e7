"""A simulation stopped by a signal (SIGTERM, SIGINT, SIGHUP): what finished is kept, the
calls in flight are cut and named.

The signal does not end the process where it happens to be: :class:`StopSignals` turns it
into a cancellation of the calls (the way :func:`asyncio.timeout` cancels its block), so
the run shuts its worker or supervisor down as after the last call, and its result says
which calls were cut, by job id.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterable, Iterator
from typing import Any, Final

import attrs

from .dispatch import LoopbackDispatchServer

STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def exit_status(sig: signal.Signals) -> int:
    """The shell's convention for a process ended by `sig`: 128 + its number (130 for
    SIGINT, 143 for SIGTERM, 129 for SIGHUP)."""
    return 128 + int(sig)


class SimulationInterrupted(Exception):
    """A stop signal came before the calls were placed: no call finished, none was cut."""

    def __init__(self, sig: signal.Signals) -> None:
        super().__init__(f"interrupted by {sig.name} before the calls were placed")
        self.signal = sig


class StopSignals:
    """Stop signals, while :meth:`installed`: the first one cancels the block run under
    :meth:`cutting` (if one runs), which then ends early without an error; any later one is
    only noted. Outside such a block a signal is noted too, and the run goes on to its end."""

    def __init__(self, signals: Iterable[signal.Signals]) -> None:
        self.signals = tuple(signals)
        self.received: signal.Signals | None = None
        """The first stop signal that came; None while none has."""
        self._cutting: asyncio.Task[Any] | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Handle the signals in the running loop; afterwards they are as they were."""
        loop = asyncio.get_running_loop()
        for sig in self.signals:
            loop.add_signal_handler(sig, self._received, sig)
        try:
            yield self
        finally:
            for sig in self.signals:
                loop.remove_signal_handler(sig)

    def _received(self, sig: signal.Signals) -> None:
        if self.received is not None:
            return
        self.received = sig
        if self._cutting is not None:
            self._cutting.cancel(f"interrupted by {sig.name}")

    @contextlib.contextmanager
    def cutting(self) -> Iterator[None]:
        """Run the block so that a stop signal cancels it and it ends early; a cancellation
        from anywhere else goes on as it came."""
        task = asyncio.current_task()
        assert task is not None, "cutting() runs in a task"
        self._cutting = task
        try:
            yield
        except asyncio.CancelledError:
            if self.received is None or task.uncancel() > 0:
                raise
        finally:
            self._cutting = None


@attrs.frozen(kw_only=True)
class CutCall:
    """A call in flight when the signal came: placed, but no report of its end."""

    agent: str
    room: str
    tenant: str | None = None
    job_id: str = ""
    """The job of its last offer ("" when it was not offered yet)."""
    accepted: bool = False
    """Whether a worker had accepted that job (else it was still being offered)."""
    worker_id: str = ""
    """The LiveKit id of the worker that accepted it ("" if none did)."""

    def as_dict(self) -> dict[str, Any]:
        call: dict[str, Any] = {
            "job_id": self.job_id,
            "agent": self.agent,
            "room": self.room,
            "accepted": self.accepted,
            "worker_id": self.worker_id,
        }
        if self.tenant is not None:
            call["tenant"] = self.tenant
        return call

    def describe(self) -> str:
        """One line: ``AJ_x (support, room sim-3, on worker AW_y)``."""
        where = f"on worker {self.worker_id}" if self.accepted else "not accepted yet"
        tenant = f", tenant {self.tenant}" if self.tenant is not None else ""
        return f"{self.job_id or 'no job yet'} ({self.agent}{tenant}, room {self.room}, {where})"

    @classmethod
    def found(
        cls, lk: LoopbackDispatchServer, agent: str, room: str, tenant: str | None
    ) -> CutCall:
        """The call placed in `room`, as `lk` last offered it."""
        offers = [d for d in lk.dispatches.values() if d.room == room]
        if not offers:
            return cls(agent=agent, room=room, tenant=tenant)
        last = offers[-1]
        return cls(
            agent=agent,
            room=room,
            tenant=tenant,
            job_id=last.job_id,
            accepted=last.accepted,
            worker_id=last.worker_id,
        )
