"""openrtc-workers' hook: the ``workers`` supervisor."""

from __future__ import annotations

from collections.abc import Callable

from openrtc_core import Supervisor, SupervisorContext, hookimpl

from .supervisor import WorkerSupervisor

NAME = "workers"


@hookimpl
def openrtc_register_supervisors(
    register: Callable[[str, Callable[[SupervisorContext], Supervisor]], None],
) -> None:
    register(NAME, WorkerSupervisor)
