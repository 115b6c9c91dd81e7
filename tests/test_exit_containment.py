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


OWN_LOOP_POOL = textwrap.dedent(
    """
    import sys
    from typing import Any

    from livekit.agents import Agent

    from openrtc_core import AgentPool
    from openrtc_testing import ScriptedLLM


    def quit_with(name: str) -> None:
        if name == "SystemExit":
            sys.exit(4)
        raise KeyboardInterrupt


    class QuitsInLLMNode(Agent):
        how = ""

        def __init__(self) -> None:
            super().__init__(instructions="Quits when it answers.")

        async def llm_node(self, chat_ctx: Any, tools: Any, model_settings: Any) -> Any:
            quit_with(self.how)


    class QuitsOnEnter(Agent):
        how = ""

        def __init__(self) -> None:
            super().__init__(instructions="Quits as the call starts.")

        async def on_enter(self) -> None:
            quit_with(self.how)


    class Healthy(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="Helps.")


    pool = AgentPool(llm=ScriptedLLM(default_reply="ok"), vad=None)
    pool.add("healthy", Healthy, default=True)
    for how in ("SystemExit", "KeyboardInterrupt"):
        for where, agent in (("llm-node", QuitsInLLMNode), ("on-enter", QuitsOnEnter)):
            # A class of its own per cause: the pool builds each agent with no arguments.
            pool.add(f"{where}-{how.lower()}", type(how + agent.__name__, (agent,), {"how": how}))
    """
)


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_an_agent_exiting_in_its_own_thread_or_process_fails_its_call_with_the_cause(
    tmp_path: Path, isolation: str
) -> None:
    # Before: under thread isolation the exit killed the job's thread (a traceback, no
    # report); under process isolation the job process hung until livekit killed it as
    # unresponsive. Either way simulate waited for the call's report and said TimeoutError.
    (tmp_path / "pool.py").write_text(OWN_LOOP_POOL)
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "-m", "openrtc_core", "simulate", str(tmp_path / "pool.py"),
         "--isolation", isolation, "--calls", "5", "--concurrency", "5", "--turns", "2",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    calls = {call["agent"]: call for call in json.loads(out.read_text())["calls"]}
    assert calls["healthy"]["outcome"] == "completed", calls["healthy"]
    named = {"SystemExit": "SystemExit(4) raised by agent code",
             "KeyboardInterrupt": "KeyboardInterrupt() raised by agent code"}  # fmt: skip
    for where in ("llm-node", "on-enter"):
        for how, cause in named.items():
            call = calls[f"{where}-{how.lower()}"]
            assert (call["outcome"], call["error"]) == ("failed", cause), call
