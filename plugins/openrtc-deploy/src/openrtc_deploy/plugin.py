"""openrtc-deploy's hooks: the ``deploy`` supervisor (ahead of openrtc-workers' ``workers``,
so ``openrtc start`` runs generations) and the ``openrtc deploy`` command."""

from __future__ import annotations

from collections.abc import Callable

import typer

from openrtc_core import Supervisor, SupervisorContext, hookimpl

from . import commands
from .controller import DeployController

NAME = "deploy"


@hookimpl(tryfirst=True)
def openrtc_register_supervisors(
    register: Callable[[str, Callable[[SupervisorContext], Supervisor]], None],
) -> None:
    register(NAME, DeployController)


@hookimpl
def openrtc_register_commands(app: typer.Typer) -> None:
    commands.register(app)
