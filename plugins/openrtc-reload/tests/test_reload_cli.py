"""Reloading from the command line: ``openrtc simulate --reload``, ``dev`` and ``start``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from reload_project import make_project, wait_until

from openrtc_core import PoolConfigError


async def test_simulate_reload_reports_which_code_answered_each_turn(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    project = make_project(tmp_path)
    turns_log = project.turns_log
    out = tmp_path_factory.mktemp("out") / "sim.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openrtc_core",
        "simulate",
        str(project.app),
        "--reload",
        "--calls",
        "2",
        "--concurrency",
        "2",
        "--turns",
        "5",
        "--pause",
        "1",
        "--json",
        str(out),
        env={**os.environ, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        # simulate dispatches round-robin over the agents: one support call, one sales call.
        await wait_until(
            lambda: turns_log.exists() and "v1 1" in turns_log.read_text(),
            timeout=90,
            what="the support call's first turn",
        )
        project.edit("support.py", lambda s: s.replace('TAG = "v1"', 'TAG = "v2"'))
        output = (await asyncio.wait_for(proc.communicate(), 120))[0].decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, output
    assert "reload applied" in output and "support" in output, output
    figures = json.loads(out.read_text())
    calls = {call["agent"]: call for call in figures["calls"]}
    support = calls["support"]
    assert support["outcome"] == "completed" and support["job_id"]
    versions = [turn["version"] for turn in support["turns"]]
    replies = [turn["reply"] for turn in support["turns"]]
    assert len(set(versions)) == 2 and versions[0] != versions[-1], versions
    assert replies[0].startswith("v1 ") and replies[-1].startswith("v2 "), replies
    assert all(turn["user"] for turn in support["turns"])
    # The other agent's call ran one version throughout.
    assert len({turn["version"] for turn in calls["sales"]["turns"]}) == 1


def test_reload_without_a_strategy_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = make_project(tmp_path).load()
    monkeypatch.setenv("OPENRTC_RELOAD", "nonesuch")
    with pytest.raises(PoolConfigError, match=r"no reload strategy 'nonesuch'.*watch"):
        pool.create_server(reload=True)
