"""``openrtc simulate --tenants/--tenant``, run as a user runs it, with this plugin enforcing.

openrtc-testing spreads the calls over tenants and reports per tenant; the tenants file is
checked, and each call admitted or refused, by openrtc-tenancy in the worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[3]
SECRET = "sk-simulate-acme-0123456789-SECRET"
PROVIDER_MODULE = '''
from openrtc_testing import ScriptedLLM


class AcmeLLM(ScriptedLLM):
    """A tenant's provider class, built with the tenant's key (which it never shows)."""

    def __init__(self, *, api_key: str, model: str = "acme") -> None:
        super().__init__(name=model, default_reply="acme here")
        self._key = api_key
'''
# acme: at most 2 sessions at once, a provider keyed from the environment; globex: no cap.
TENANTS = """
[tenants.acme]
max_sessions = 2
[tenants.acme.providers.llm]
class = "simulate_acme_llm:AcmeLLM"
api_key_env = "SIMULATE_ACME_KEY"

[tenants.globex]
"""


def tenants_file(tmp_path: Path, text: str = TENANTS) -> Path:
    path = tmp_path / "tenants.toml"
    path.write_text(textwrap.dedent(text))
    return path


def simulate(
    tmp_path: Path, *args: str, target: str = "examples/pool.py"
) -> tuple[subprocess.CompletedProcess[str], str]:
    """``openrtc simulate TARGET ARGS --json OUT``: the run, and OUT's text ("" when it was
    not written). The tenants file comes only from the arguments, never this process's
    environment; modules in `tmp_path` are importable."""
    out = tmp_path / "figures.json"
    out.unlink(missing_ok=True)
    (tmp_path / "simulate_acme_llm.py").write_text(PROVIDER_MODULE)
    env = {key: value for key, value in os.environ.items() if key != "OPENRTC_TENANTS"}
    env["SIMULATE_ACME_KEY"] = SECRET
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "openrtc_core", "simulate", target, *args]
    done = subprocess.run(
        [*command, "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return done, out.read_text() if out.exists() else ""


def test_calls_are_spread_over_the_files_tenants_and_a_capped_one_queues(
    tmp_path: Path,
) -> None:
    path = tenants_file(tmp_path)
    done, text = simulate(
        tmp_path,
        *("--tenants", str(path), "--calls", "12", "--concurrency", "12"),
        *("--turns", "1", "--hold", "2"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures: dict[str, Any] = json.loads(text)
    tenants = figures["tenants"]
    assert list(tenants) == ["acme", "globex"]
    acme, globex = tenants["acme"], tenants["globex"]
    assert acme["calls"] == globex["calls"] == 6
    # acme's calls beyond its cap of 2 were refused with terminate=False and offered again
    # until a slot was free: every one was admitted in the end, never more than 2 at once.
    assert acme["admitted"] == 6
    assert acme["rejected"] == {}
    assert acme["failed"] == 0
    assert 1 <= acme["max_live"] <= 2
    assert (globex["admitted"], globex["rejected"], globex["failed"]) == (6, {}, 0)
    assert 1 <= globex["max_live"] <= 6
    # The queueing shows where re-offers always did.
    assert figures["admission"]["re_offers"] > 0
    assert figures["admission"]["never_accepted"] == 0
    # Call i names tenant i % 2, as it names agent i % 3.
    for call in figures["calls"]:
        index = int(call["room"].removeprefix("sim-"))
        assert call["tenant"] == ["acme", "globex"][index % 2]
        assert call["agent"] == ["support", "sales", "booking"][index % 3]
        assert call["outcome"] == "completed"
    assert "per tenant" in done.stdout
    assert "acme, globex" in done.stdout
    for output in (done.stdout, done.stderr, text):
        assert SECRET not in output


def test_a_tenant_name_the_worker_refuses_is_counted_as_rejected(tmp_path: Path) -> None:
    path = tenants_file(tmp_path)
    done, text = simulate(
        tmp_path,
        *("--tenants", str(path), "--tenant", "acme", "--tenant", "../bad"),
        *("--calls", "6", "--concurrency", "6", "--turns", "1"),
    )
    # Calls that were never accepted failed: exit status 1, figures still written.
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    figures: dict[str, Any] = json.loads(text)
    assert list(figures["tenants"]) == ["acme", "../bad"]
    acme, bad = figures["tenants"]["acme"], figures["tenants"]["../bad"]
    assert (acme["calls"], acme["admitted"], acme["rejected"], acme["failed"]) == (3, 3, {}, 0)
    assert (bad["calls"], bad["admitted"], bad["failed"], bad["max_live"]) == (3, 0, 0, 0)
    # One reason, in the worker's own words, for a refusal with terminate=True.
    ((reason, count),) = bad["rejected"].items()
    assert count == 3
    assert "'../bad'" in reason
    assert "not allowed" in reason
    refused = [c for c in figures["calls"] if c["tenant"] == "../bad"]
    assert len(refused) == 3
    assert all("terminate=True" in c["error"] for c in refused)
    assert all(c["outcome"] == "failed" for c in refused)
    assert "not allowed" in done.stdout
    assert SECRET not in done.stdout + done.stderr + text


def test_a_tenants_file_the_plugin_refuses_is_one_error_line(tmp_path: Path) -> None:
    path = tenants_file(
        tmp_path,
        """
        [tenants.acme]
        max_sesions = 2
        """,
    )
    done, text = simulate(tmp_path, "--tenants", str(path), "--calls", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert str(path) in lines[0]
    assert "tenants.acme.max_sesions" in lines[0]
    assert "max_sessions" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert text == ""


def test_a_secret_written_in_the_file_is_refused_without_being_shown(tmp_path: Path) -> None:
    path = tenants_file(
        tmp_path,
        f"""
        [tenants.acme.providers.llm]
        model = "openai/gpt-4.1-mini"
        api_key = "{SECRET}"
        """,
    )
    done, _ = simulate(tmp_path, "--tenants", str(path), "--calls", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert "api_key_env" in lines[0]
    assert SECRET not in done.stdout + done.stderr


# A pool whose own LLM is already scripted, so simulate swaps nothing and acme's provider serves.
SCRIPTED_POOL = """
from livekit.agents import Agent

from openrtc_core import AgentPool
from openrtc_testing import ScriptedLLM


class Support(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Support.")


pool = AgentPool(llm=ScriptedLLM(default_reply="pool reply"), isolation="coroutine")
pool.add("support", Support, default=True)
"""
REVOKED_PROVIDER = """
from typing import ClassVar

from openrtc_testing import ScriptedLLM


class RevokedLLM(ScriptedLLM):
    \"\"\"Builds when the worker checks the tenants file at start, then never again: the
    tenant's key was revoked after start, and each of its calls fails.\"\"\"

    built: ClassVar[int] = 0

    def __init__(self, *, api_key: str, model: str = "acme") -> None:
        RevokedLLM.built += 1
        if RevokedLLM.built > 1:
            raise ValueError("the provider refused the key")
        super().__init__(name=model)
"""


def test_a_failing_tenants_breaker_ends_its_calls_across_the_fleet(
    tmp_path: Path, redis_url: str, redis_client: aioredis.Redis
) -> None:
    """Two workers share one Redis: acme's breaker, opened by one worker's failures, refuses
    its calls on both with terminate=True, so none is offered from worker to worker, and the
    summary names the breaker."""
    (tmp_path / "scripted_pool.py").write_text(SCRIPTED_POOL)
    (tmp_path / "revoked_llm.py").write_text(REVOKED_PROVIDER)
    path = tenants_file(
        tmp_path,
        f"""
        redis_url = "{redis_url}"
        [tenants.acme.providers.llm]
        class = "revoked_llm:RevokedLLM"
        api_key_env = "SIMULATE_ACME_KEY"
        [tenants.acme.breaker]
        window_s = 60
        min_calls = 4
        failure_ratio = 0.5
        cooldown_s = 300
        [tenants.globex]
        """,
    )
    done, text = simulate(
        tmp_path,
        *("--workers", "2", "--tenants", str(path), "--calls", "40", "--turns", "1"),
        target=str(tmp_path / "scripted_pool.py"),
    )
    assert done.returncode == 1, done.stdout + done.stderr  # acme's calls failed
    figures: dict[str, Any] = json.loads(text)
    acme, globex = figures["tenants"]["acme"], figures["tenants"]["globex"]
    assert (globex["admitted"], globex["failed"]) == (20, 0)
    refused = [c for c in figures["calls"] if c["tenant"] == "acme" and "rejected" in c["error"]]
    assert refused and acme["failed"] >= 4, acme  # min_calls failures open the breaker
    assert all("breaker" in reason for reason in acme["rejected"]), acme
    # Ended by the first worker asked: no worker was offered a call another had refused.
    assert all("terminate=True" in c["error"] for c in refused), refused
    summary = " ".join(done.stdout.split())
    assert f"calls refused by their tenant's breaker: acme {len(refused)}" in summary
    assert "run more workers" not in summary


def test_the_tenants_file_reaches_the_job_processes(tmp_path: Path) -> None:
    """Process isolation: each call runs in a job process, which builds acme's provider with
    acme's key from the tenants file simulate gave the worker. (Under a supervisor, ``start``
    workers with process isolation report themselves full by CPU load, which a busy machine
    reaches; test_tenants_option.py runs the flag into job processes with ``dev``.)"""
    (tmp_path / "process_pool.py").write_text(
        SCRIPTED_POOL.replace('isolation="coroutine"', 'isolation="process"')
    )
    path = tenants_file(tmp_path)
    done, text = simulate(
        tmp_path,
        *("--tenants", str(path), "--calls", "4", "--concurrency", "2", "--turns", "1"),
        target=str(tmp_path / "process_pool.py"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "AgentPool[process]" in done.stdout
    figures: dict[str, Any] = json.loads(text)
    replies = {(c["tenant"], c["turns"][0]["reply"]) for c in figures["calls"]}
    assert replies == {("acme", "acme here"), ("globex", "pool reply")}
    assert SECRET not in done.stdout + done.stderr + text
