"""openrtc-testing as an installed OpenRTC plugin: only the ``openrtc simulate`` command.

Nothing here touches a worker. Simulated calls run only on a worker given the
:class:`~openrtc_testing.simulation.Simulation` plugin explicitly.
"""

from __future__ import annotations

import typer

from openrtc_core import hookimpl


@hookimpl
def openrtc_register_commands(app: typer.Typer) -> None:
    from .simulate import simulate_command

    app.command("simulate")(simulate_command)
