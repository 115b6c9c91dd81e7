"""sys.exit() or KeyboardInterrupt raised by an agent's code ends its session, not the worker."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

POOL = textwrap.dedent(
    """
    import sys
    from typing import Any

    from livekit.agents import Agent, RunContext, function_tool

    from openrtc_core import AgentPool
    from openrtc_testing import Rule, ScriptedLLM


    class Quitter(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="Quits.")

        @function_tool
        async def quit_now(self, context: RunContext[Any]) -> str:
            \"\"\"Quit.\"\"\"
            RAISE
            return "unreachable"


    class Healthy(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="Helps.")


    pool = AgentPool(llm=ScriptedLLM(default_reply="ok"), vad=None)
    pool.add("healthy", Healthy, default=True)
    pool.add("quitter", Quitter, llm=ScriptedLLM(rules=[Rule(when="help", call="quit_now")]))
    """
)


@pytest.mark.parametrize(
    ("statement", "named"),
    [("sys.exit(3)", "SystemExit(3)"), ("raise KeyboardInterrupt", "KeyboardInterrupt()")],
)
def test_an_agent_exiting_ends_its_session_and_the_worker_goes_on(
    tmp_path: Path, statement: str, named: str
) -> None:
    (tmp_path / "pool.py").write_text(POOL.replace("RAISE", statement))
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "-m", "openrtc_core", "simulate", str(tmp_path / "pool.py"),
         "--calls", "6", "--concurrency", "6", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    # 1: simulate's status when calls failed. The worker itself would have exited with 3
    # (or a KeyboardInterrupt traceback), taking the healthy calls and the figures with it.
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    agents = json.loads(out.read_text())["agents"]
    assert agents["healthy"]["failures"] == 0
    assert agents["quitter"]["failures"] == agents["quitter"]["calls"] == 3
    assert any(named in error for error in agents["quitter"]["errors"]), agents["quitter"]
