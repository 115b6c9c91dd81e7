"""A plugin that takes over every run verb instead of livekit, keeping what the run resolved:
for tests of run options (``openrtc_add_run_options``) through the real command-line path."""

from __future__ import annotations

from openrtc_core import RunContext, hookimpl


class TakenRuns:
    """Takes over each run (``openrtc_take_over_run``, ahead of any other plugin): records its
    :class:`~openrtc_core.RunContext` (verb, resolved options, livekit's arguments) and exits
    with `status`; no worker starts."""

    def __init__(self, status: int = 0) -> None:
        self.status = status
        self.runs: list[RunContext] = []

    @hookimpl(tryfirst=True)
    def openrtc_take_over_run(self, run: RunContext) -> int:
        self.runs.append(run)
        return self.status
