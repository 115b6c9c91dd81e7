"""``openrtc simulate --workers N``: the calls a worker held when it died are reported lost,
with their job ids and the worker, as soon as it is gone; not as calls never accepted."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
HAS_SUPERVISOR = importlib.util.find_spec("openrtc_workers") is not None

POOL = textwrap.dedent(
    """
    import os
    import signal
    from typing import Any

    from livekit.agents import Agent

    from openrtc_core import AgentPool
    from openrtc_testing import ScriptedLLM

    MARK = MARK_PATH


    class TakesItsWorkerDown(Agent):
        \"\"\"The first of its calls to reach the LLM, across the fleet, ends its worker.\"\"\"

        def __init__(self) -> None:
            super().__init__(instructions="Dies once.")

        async def llm_node(self, chat_ctx: Any, tools: Any, model_settings: Any) -> Any:
            try:
                os.close(os.open(MARK, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return Agent.default.llm_node(self, chat_ctx, tools, model_settings)
            DIE


    class Healthy(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="Helps.")


    pool = AgentPool(llm=ScriptedLLM(default_reply="ok"), vad=None)
    pool.add("healthy", Healthy, default=True)
    pool.add("dies", TakesItsWorkerDown)
    """
)


@pytest.mark.skipif(not HAS_SUPERVISOR, reason="needs openrtc-workers (the supervisor)")
@pytest.mark.parametrize(
    "die", ["os._exit(3)", "os.kill(os.getpid(), signal.SIGKILL)"], ids=["os._exit", "SIGKILL"]
)
def test_the_calls_of_a_worker_that_dies_are_reported_lost_with_job_and_worker(
    tmp_path: Path, die: str
) -> None:
    # Before: each such call waited out the call timeout, then counted as "never accepted"
    # with an empty job id and no worker ("TimeoutError: no report").
    pool = POOL.replace("MARK_PATH", repr(str(tmp_path / "died"))).replace("DIE", die)
    (tmp_path / "pool.py").write_text(pool)
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "-m", "openrtc_core", "simulate", str(tmp_path / "pool.py"),
         "--workers", "2", "--calls", "6", "--concurrency", "6", "--turns", "2",
         "--pause", "0.5", "--json", str(out)],
        cwd=ROOT, env={**os.environ, "COLUMNS": "100"}, capture_output=True, text=True,
        timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    calls = figures["calls"]
    lost = [call for call in calls if call["outcome"] == "lost"]
    assert lost, calls
    assert {call["outcome"] for call in calls} == {"lost", "completed"}, calls
    died = {(call["worker"], call["worker_pid"]) for call in lost}
    assert len(died) == 1, lost  # one worker died, and every lost call names it
    ((index, pid),) = died
    assert index in (1, 2) and isinstance(pid, int), lost
    for call in lost:
        assert call["job_id"].startswith("AJ_"), call
        assert call["error"].startswith("lost with its worker"), call
        assert f"index {index}, pid {pid}" in call["error"], call
        assert call["job_id"] in done.stdout, done.stdout
    admission = figures["admission"]
    assert (admission["lost"], admission["never_accepted"]) == (len(lost), 0), admission
    assert figures["workers"][str(index)]["lost"] == len(lost), figures["workers"]
    assert "TimeoutError" not in done.stdout
