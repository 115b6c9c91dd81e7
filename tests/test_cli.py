"""The openrtc command line: help for every verb, and each TARGET form registering a worker."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openrtc_core.cli import LIVEKIT_VERBS, build_app
from openrtc_testing import LoopbackDispatchServer

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.mark.parametrize("verb", [*LIVEKIT_VERBS, "plugins", "version", None])
def test_help_for_every_verb(verb: str | None) -> None:
    args = [verb, "--help"] if verb else ["--help"]
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.parametrize("verb", ["start", "dev", "connect"])
def test_verb_help_lists_the_livekit_flags_passed_through(verb: str) -> None:
    result = runner.invoke(build_app(), [verb, "--help"], terminal_width=200)
    assert "--url" in result.output
    assert "--api-key" in result.output


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("nope/missing.py", "no such file"),
        ("tests/e2e_pools.py:NOPE", "'NOPE' is missing, not an AgentPool"),
        ("tests/e2e_pools.py", "defines several pools"),
        ("openrtc_core.models", "defines no AgentPool"),
        ("no_such_module_xyz:pool", "cannot import module"),
        ("not a target!", "not a module path"),
    ],
)
def test_bad_targets_say_what_to_fix(target: str, problem: str) -> None:
    result = runner.invoke(build_app(), ["start", target], catch_exceptions=False)
    assert result.exit_code == 1
    assert problem in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_version() -> None:
    result = runner.invoke(build_app(), ["version"])
    assert "openrtc-core" in result.output
    assert "livekit-agents 1.8" in result.output


async def _start_and_register(target: str, agent_name: str = "") -> None:
    async with LoopbackDispatchServer() as lk:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "OPENRTC_HTTP_PORT": "0"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "openrtc_core",
            "start",
            target,
            *lk.worker_args(),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            worker = await lk.wait_for_worker(agent_name=agent_name, timeout=90)
            assert worker.agent_name == agent_name
            # SIGTERM (what an orchestrator sends) drains the worker: it leaves the server...
            proc.send_signal(signal.SIGTERM)
            await worker.wait_closed(timeout=60)
            # ...and the process exits on its own, successfully (no force-exit, no crash).
            await asyncio.wait_for(proc.wait(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            output = (await proc.stdout.read()).decode() if proc.stdout else ""
        assert worker not in lk.workers
        assert proc.returncode == 0, output
        assert "Traceback" not in output, output


@pytest.mark.parametrize(
    ("target", "agent_name"),
    [
        ("examples/pool.py", ""),
        ("examples/pool.py:pool", ""),
        ("e2e_pools:STRICT_POOL", "strict"),
        ("examples/agents", ""),
    ],
)
async def test_start_registers_each_target_form(target: str, agent_name: str) -> None:
    await _start_and_register(target, agent_name)
