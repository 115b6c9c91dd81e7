"""Hiding livekit's notices that point at its ``lk`` tool while an ``openrtc`` verb runs."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from .. import _livekit

OTHER_TOOL: Final = re.compile(r"\blk agent\b")
"""livekit 1.8.9's deprecation notices for its Python CLI point at its Go ``lk`` tool."""


class _OtherToolNotice(logging.Filter):
    """Drops livekit's notices telling the user to run its ``lk`` tool instead of ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not OTHER_TOOL.search(record.getMessage())


@contextmanager
def quiet_livekit_notices(verb: str) -> Iterator[None]:
    """For the duration of a verb, livekit's deprecation notices for its Python CLI (``dev``
    logs two on ``livekit.agents``; ``console`` prints one through its console) are not shown:
    they tell the user to use another tool for what ``openrtc VERB`` does."""
    notice = _OtherToolNotice()
    lk_logger = logging.getLogger("livekit.agents")
    lk_logger.addFilter(notice)
    if verb == "console":
        # livekit prints this one through its console, not logging (cli/_legacy.py
        # _run_console); reaching that console is private API, kept in _livekit.
        hide = getattr(_livekit, "hide_console_deprecation", None)
        if callable(hide):
            hide()
    try:
        yield
    finally:
        lk_logger.removeFilter(notice)
