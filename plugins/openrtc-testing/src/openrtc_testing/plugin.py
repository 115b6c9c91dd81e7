"""openrtc-testing as an OpenRTC plugin: the ``simulate`` command and offline providers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import typer

from openrtc_core import AgentPool, JobView, hookimpl

from . import offline


@hookimpl
def openrtc_session_options(agent: str, job: JobView, pool: AgentPool) -> Mapping[str, Any] | None:
    if not job.simulated:
        return None
    spec = pool.agents.get(agent)
    configured = {**pool.session_defaults, **(spec.overrides if spec else {})}
    return offline.replacements(configured) or None


@hookimpl
def openrtc_register_commands(app: typer.Typer) -> None:
    from .simulate import simulate_command

    app.command("simulate")(simulate_command)
