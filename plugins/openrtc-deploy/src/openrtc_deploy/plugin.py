"""openrtc-deploy's hooks: every ``start`` runs as generations under the controller (ahead
of openrtc-workers' supervisor, which runs each generation), ``--control``, the
``generation`` log field, and the ``openrtc deploy`` command."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import typer

from openrtc_core import RunContext, RunOption, hookimpl

from . import commands
from .client import CONTROL_ENV
from .controller import DeployController
from .generation import generation

VERB: Final = "start"
CONTROL: Final = RunOption(
    name="control",
    flag="--control",
    help=(
        f"Where the deploy controller listens for `openrtc deploy` (default {CONTROL_ENV}, "
        "else a private runtime folder)."
    ),
    verbs=(VERB,),
    metavar="PATH",
)


@hookimpl
def openrtc_add_run_options(add: Callable[[RunOption], None]) -> None:
    add(CONTROL)


@hookimpl(tryfirst=True)
def openrtc_take_over_run(run: RunContext) -> int | None:
    if run.verb != VERB or generation() is not None:
        return None  # a generation is openrtc-workers' supervisor's to run
    run.setup_logging()
    return DeployController(run).run()


@hookimpl(tryfirst=True)
def openrtc_describe_run(verb: str, options: Mapping[str, Any]) -> str | None:
    if verb != VERB or generation() is not None:
        return None
    return "start runs generations of workers under the deploy controller (openrtc deploy)"


@hookimpl
def openrtc_log_fields() -> Mapping[str, Any] | None:
    number = generation()
    return None if number is None else {"generation": number}


@hookimpl
def openrtc_register_commands(app: typer.Typer) -> None:
    commands.register(app)
