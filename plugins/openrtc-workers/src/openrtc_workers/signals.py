"""Signals for a one-thread selector loop (the workers' supervisor, a deploy controller)."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
from collections.abc import Iterator
from typing import Any


class SignalInbox:
    """Signals as wake-ups of a selector: the handler only notes the signal; the loop wakes
    on a pipe (``signal.set_wakeup_fd``), then takes what came with :meth:`take`."""

    def __init__(self, *signals: int) -> None:
        self.signals = signals
        self.read_fd, self.write_fd = os.pipe()
        self._pending: list[int] = []

    @contextlib.contextmanager
    def installed(self, selector: selectors.BaseSelector) -> Iterator[None]:
        """Handle the signals while the loop runs on `selector`; afterwards the previous
        handlers are back, and the selector and the pipe are closed."""
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        selector.register(self.read_fd, selectors.EVENT_READ)
        previous = {sig: signal.signal(sig, self._note) for sig in self.signals}
        old_wakeup = signal.set_wakeup_fd(self.write_fd)
        try:
            yield
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            selector.close()
            os.close(self.read_fd)
            os.close(self.write_fd)

    def _note(self, sig: int, frame: Any) -> None:
        self._pending.append(sig)

    def woke(self) -> None:
        """Empty the wake-up pipe (the selector said it is readable)."""
        with contextlib.suppress(BlockingIOError):
            os.read(self.read_fd, 4096)

    def take(self) -> list[int]:
        """The signals that came since the last call, in order."""
        pending, self._pending = self._pending, []
        return pending
