"""Every use of livekit-agents' private API, in one place.

The pinned range (``livekit-agents>=1.8.9,<1.9``) is what these were read against; the
contract tests in ``tests/test_livekit_contract.py`` fail with a clear message when an upgrade
moves any of them. Nothing outside this module reaches into livekit's underscored names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer
    from livekit.agents import AgentServer, JobContext
    from livekit.agents.job import RunningJobInfo


def running_job_info(ctx: JobContext) -> RunningJobInfo:
    """The job as the worker accepted it (``JobContext._info``, job.py)."""
    return ctx._info


def accept_attributes(ctx: JobContext) -> dict[str, str]:
    """The participant attributes the request handler accepted the job with."""
    attributes = running_job_info(ctx).accept_arguments.attributes
    return dict(attributes or {})


def server_url(ctx: JobContext) -> str:
    """The LiveKit URL the job was assigned from (``RunningJobInfo.url``)."""
    return running_job_info(ctx).url


def build_livekit_cli(server: AgentServer) -> typer.Typer:
    """livekit's own ``dev|start|console|connect|download-files`` app bound to `server`.

    ``cli.run_app`` builds this app and invokes it on ``sys.argv`` at once; we need the app
    itself to pass an explicit argv and a program name (``cli/_legacy.py`` ``_build_cli``).
    """
    from livekit.agents.cli import _legacy

    return _legacy._build_cli(server)
