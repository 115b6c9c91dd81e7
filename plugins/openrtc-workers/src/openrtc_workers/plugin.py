"""openrtc-workers' hooks: its run options, and ``start`` run by the supervisor."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from openrtc_core import RunContext, RunOption, hookimpl

from .plan import OPTIONS, VERB, WorkerPlan, supervises
from .supervisor import WorkerSupervisor

NAME = "workers"


@hookimpl
def openrtc_add_run_options(add: Callable[[RunOption], None]) -> None:
    for option in OPTIONS:
        add(option)


@hookimpl
def openrtc_take_over_run(run: RunContext) -> int | None:
    plan = WorkerPlan.from_options(run.options)
    if not supervises(run.verb, plan):
        return None
    run.setup_logging()
    return WorkerSupervisor(run, plan).run()


@hookimpl
def openrtc_describe_run(verb: str, options: Mapping[str, Any]) -> str | None:
    if verb != VERB:
        return None
    plan = WorkerPlan.from_options(options)
    given = "" if options.get("workers") not in (None, "auto") else ", one per usable core"
    return (
        f"start runs {plan.count} worker process(es){given}, under the supervisor {NAME!r} "
        "(--workers N to choose)"
    )
