"""Contract tests for the livekit-agents private API that openrtc_core/_livekit.py relies on.

When one of these fails after a livekit-agents upgrade, the message says what moved; fix
_livekit.py (and only it) before widening the pinned range.
"""

from __future__ import annotations

import dataclasses
import inspect
from importlib.metadata import version

import pytest
from livekit.agents import AgentServer, JobContext
from livekit.agents.job import JobAcceptArguments, RunningJobInfo

from openrtc_core import _livekit


def _fail(what: str) -> str:
    return (
        f"livekit-agents {version('livekit-agents')} changed {what}; "
        "openrtc_core/_livekit.py must be updated for it"
    )


def test_pinned_range_is_the_one_read() -> None:
    major, minor, *_ = version("livekit-agents").split(".")
    assert (int(major), int(minor)) == (1, 8), _fail("its version outside >=1.8.9,<1.9")


def test_running_job_info_carries_accept_arguments_and_url() -> None:
    fields = {f.name for f in dataclasses.fields(RunningJobInfo)}
    assert {"accept_arguments", "job", "url", "token"} <= fields, _fail("RunningJobInfo fields")
    accept = {f.name for f in dataclasses.fields(JobAcceptArguments)}
    assert "attributes" in accept, _fail("JobAcceptArguments.attributes")


def test_job_context_keeps_running_job_info_as_info() -> None:
    source = inspect.getsource(JobContext.__init__)
    assert "self._info = info" in source, _fail("JobContext._info")


def test_legacy_cli_builder_returns_a_typer_app_with_the_verbs() -> None:
    import typer

    app = _livekit.build_livekit_cli(AgentServer())
    assert isinstance(app, typer.Typer), _fail("cli._legacy._build_cli")
    group = typer.main.get_command(app)
    commands = set(getattr(group, "commands", {}))
    assert {"dev", "start", "console", "connect", "download-files"} <= commands, _fail(
        "the legacy CLI verbs"
    )


@pytest.mark.parametrize("name", ["rtc_session", "drain", "aclose", "run", "update_options"])
def test_agent_server_public_surface(name: str) -> None:
    assert callable(getattr(AgentServer, name, None)), _fail(f"AgentServer.{name}")


def test_accept_attributes_reads_what_the_handler_accepted_with() -> None:
    class FakeCtx:
        _info = RunningJobInfo(
            accept_arguments=JobAcceptArguments(
                name="", identity="a", metadata="", attributes={"openrtc.agent": "x"}
            ),
            job=None,  # type: ignore[arg-type]
            url="ws://127.0.0.1:1",
            token="",
            worker_id="w",
            fake_job=True,
        )

    ctx = FakeCtx()
    assert _livekit.accept_attributes(ctx) == {"openrtc.agent": "x"}  # type: ignore[arg-type]
    assert _livekit.server_url(ctx) == "ws://127.0.0.1:1"  # type: ignore[arg-type]
