"""``openrtc simulate`` says which deployment version served each call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from openrtc_core import VERSION_ENV, load_pool, resolve_deploy_version
from openrtc_testing.simulate import CallResult, SimulationResult, render

AGENT_MODULE = """\
from livekit.agents import Agent

import openrtc_core


@openrtc_core.agent(default=True, vad=None, llm="openai/gpt-4.1-mini")
class Support(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Help.")
"""


def test_each_call_in_the_json_names_the_deploy_version_that_served_it(tmp_path: Path) -> None:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "support.py").write_text(AGENT_MODULE, encoding="utf-8")
    out = tmp_path / "figures.json"
    env = {k: v for k, v in os.environ.items() if k != VERSION_ENV}
    # Not inside any git repository: the version is the hash of the agents' files.
    env["GIT_CEILING_DIRECTORIES"] = str(tmp_path)
    command = [sys.executable, "-m", "openrtc_core", "simulate", str(folder)]
    done = subprocess.run(
        [*command, "--calls", "3", "--turns", "1", "--json", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    expected = resolve_deploy_version(load_pool(str(folder)), use_env=False)
    assert expected.source == "content"
    assert [call["deploy"] for call in figures["calls"]] == [expected.value] * 3
    assert figures["deploys"] == {expected.value: 3}
    # One version: the summary does not break the calls down by it.
    assert "per deploy version" not in done.stdout


def served_by(deploy: str) -> CallResult:
    return CallResult("support", "room", ok=True, accepted=True, deploy=deploy)


def figures(calls: list[CallResult]) -> SimulationResult:
    return SimulationResult(
        calls=calls,
        wall_s=1.0,
        baseline_pss_mb=0.0,
        peak_pss_mb=0.0,
        loop_lag_p99_s=None,
        isolation="coroutine",
        swapped={},
    )


def test_calls_served_by_several_versions_are_counted_per_version() -> None:
    result = figures([served_by("v1"), served_by("v2"), served_by("v1"), served_by("")])
    assert result.per_deploy() == {"v1": 2, "v2": 1}
    as_json = result.as_dict()
    assert [c["deploy"] for c in as_json["calls"]] == ["v1", "v2", "v1", ""]
    assert as_json["deploys"] == {"v1": 2, "v2": 1}
    console = Console(record=True, width=80)
    render(result, console)
    assert "calls per deploy version (2 versions): v1 2, v2 1" in console.export_text()
    single = Console(record=True, width=80)
    render(figures([served_by("v1")]), single)
    assert "per deploy version" not in single.export_text()
