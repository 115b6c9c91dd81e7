"""The tenants file is this plugin's run option: ``--tenants``, ``pool.run(tenants=...)``,
``AgentPool(tenants=...)``, ``OPENRTC_TENANTS``; each reaches the worker and its job processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tenancy_fixtures import ACME_KEY, GLOBEX_KEY, PROCESS_TENANTS, fingerprint, make_pool

from openrtc_core import RUN_VERBS, AgentPool
from openrtc_tenancy import plugin as tenancy_plugin
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.fleet import started_fleet
from openrtc_testing.worker import simulated_call_metadata

ROOT = Path(__file__).resolve().parents[3]
TESTS = Path(__file__).resolve().parent
RUN_DEV = """
import os
import sys

from openrtc_core import load_pool
from openrtc_testing.simulation import Simulation

if __name__ == "__main__":
    pool = load_pool(sys.argv[1])
    simulation = Simulation(os.environ["LIVEKIT_URL"])
    pool.run(["dev", *sys.argv[2:]], prog_name="openrtc", plugins=[simulation])
"""
"""``openrtc dev TARGET ARGS`` with the simulation plugin, so it runs simulated calls."""


@pytest.fixture(autouse=True)
def fresh_tenancy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no tenancy configured in this process, and no file given."""
    monkeypatch.setattr(tenancy_plugin, "_TENANCIES", {})
    monkeypatch.setattr(tenancy_plugin, "_PATH", [])
    monkeypatch.delenv("OPENRTC_TENANTS", raising=False)
    monkeypatch.delenv("OPENRTC_RUN_OPTIONS", raising=False)


def test_the_tenants_file_is_declared_by_this_plugin_for_every_run_verb() -> None:
    declared = AgentPool().plugins.run_options()["tenants"]
    assert declared.option is tenancy_plugin.TENANTS
    assert declared.distribution == "openrtc-tenancy"
    assert (declared.option.flag, declared.option.env) == ("--tenants", "OPENRTC_TENANTS")
    assert declared.option.verbs == RUN_VERBS
    assert declared.option.pool_keyword


def test_where_the_tenants_file_comes_from_highest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    assert AgentPool().run_options["tenants"] is None
    monkeypatch.setenv("OPENRTC_TENANTS", "env.toml")
    in_code = AgentPool(tenants=Path("code.toml"))
    options = in_code.resolve_run_options("start", flags={"tenants": ("--tenants", "flag.toml")})
    assert (options["tenants"], options.source("tenants")) == ("flag.toml", "--tenants")
    options = in_code.resolve_run_options("start", run_keywords={"tenants": "run.toml"})
    assert (options["tenants"], options.source("tenants")) == ("run.toml", "pool.run(tenants=)")
    assert in_code.run_options["tenants"] == "code.toml"
    assert in_code.run_options.source("tenants") == "AgentPool(tenants=)"
    from_env = AgentPool()
    assert from_env.run_options["tenants"] == "env.toml"
    assert from_env.view().run_options["tenants"] == "env.toml"
    assert tenancy_plugin.tenants_file(from_env.view()) == "env.toml"


def openrtc(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """``openrtc ARGS`` with no tenants file but the one `args` or `extra_env` give, and a
    server URL and keys that let a run verb go as far as connecting."""
    given = ("OPENRTC_TENANTS", "OPENRTC_RUN_OPTIONS")
    env = {k: v for k, v in os.environ.items() if k not in given}
    env.update(LIVEKIT_URL="ws://127.0.0.1:9", LIVEKIT_API_KEY="k", LIVEKIT_API_SECRET="s")
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "openrtc_core", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_run_verbs_list_the_option_in_their_help() -> None:
    done = openrtc("start", "--help")
    assert done.returncode == 0, done.stdout + done.stderr
    text = " ".join(done.stdout.split())
    assert "--tenants FILE" in text
    assert "The tenants file (keys, caps, breakers per tenant)." in text


def start(*args: str, **extra_env: str) -> list[str]:
    """``openrtc start examples/pool.py ARGS``, which fails before connecting: its stderr."""
    done = openrtc("start", "examples/pool.py", *args, **extra_env)
    assert done.returncode == 1, done.stdout + done.stderr
    return done.stderr.strip().splitlines()


def test_the_flag_reaches_the_plugin_and_without_the_plugin_it_is_an_error(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "missing.toml"
    assert start("--tenants", str(missing)) == [f"error: {missing}: no such tenants file"]
    assert start(OPENRTC_TENANTS=str(missing)) == [f"error: {missing}: no such tenants file"]
    disabled = {"OPENRTC_DISABLE_PLUGINS": "tenancy"}
    for args, env, given in [
        (("--tenants", str(missing)), {}, "--tenants"),
        ((), {"OPENRTC_TENANTS": str(missing)}, "OPENRTC_TENANTS"),
    ]:
        lines = start(*args, **disabled, **env)
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"error: {given} is provided by openrtc-tenancy"), lines
        assert "disabled" in lines[0]


def metadata(tenant: str, *, hold: float = 0.0) -> str:
    meta = json.loads(simulated_call_metadata("support", turns=["hello"], hold_s=hold))
    meta["tenant"] = tenant
    return json.dumps(meta)


async def keyed_replies(dispatch: LoopbackDispatchServer) -> dict[str, dict[str, Any]]:
    """One call per tenant of PROCESS_TENANTS: each tenant's report."""
    reports = {}
    for tenant in ("acme", "globex"):
        d = await dispatch.dispatch(f"{tenant}-room", job_metadata=metadata(tenant))
        assert d.accepted, d
        reports[tenant] = await dispatch.wait_for_report(d.job_id, timeout=90)
    return reports


def assert_keyed_in_job_processes(reports: dict[str, dict[str, Any]]) -> None:
    """Each tenant's call ran in a job process of its own, with its own key's provider."""
    acme, globex = reports["acme"], reports["globex"]
    assert os.getpid() not in (acme["pid"], globex["pid"])
    assert acme["turns"][0]["events"][-1]["text"].startswith(f"key {fingerprint(ACME_KEY)}")
    assert globex["turns"][0]["events"][-1]["text"].startswith(f"key {fingerprint(GLOBEX_KEY)}")


async def test_a_server_given_the_tenants_file_in_code_applies_it_in_job_processes(
    openrtc_dispatch: LoopbackDispatchServer, openrtc_worker: Any
) -> None:
    from tenancy_fixtures import PROCESS_POOL_TENANTS_IN_CODE as pool

    assert pool.run_options["tenants"] is None
    async with openrtc_worker(pool, tenants=str(PROCESS_TENANTS)):
        reports = await keyed_replies(openrtc_dispatch)
    assert_keyed_in_job_processes(reports)


async def test_openrtc_tenants_alone_applies_in_the_worker_and_job_processes(
    monkeypatch: pytest.MonkeyPatch,
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
) -> None:
    # Set in the worker only: the forkserver its job processes come from may have started
    # before (another test), with another environment.
    monkeypatch.setenv("OPENRTC_TENANTS", str(PROCESS_TENANTS))
    from tenancy_fixtures import PROCESS_POOL_TENANTS_FROM_ENV as pool

    async with openrtc_worker(pool):
        reports = await keyed_replies(openrtc_dispatch)
        # acme's cap of 1 is counted by the worker: its tenancy is on too.
        held = await openrtc_dispatch.dispatch("acme-held", job_metadata=metadata("acme", hold=3))
        second = await openrtc_dispatch.dispatch("acme-2", job_metadata=metadata("acme"))
        await openrtc_dispatch.wait_for_report(held.job_id, timeout=90)
    assert held.accepted and not second.accepted and not second.terminate
    assert_keyed_in_job_processes(reports)


async def test_without_a_tenants_file_the_plugin_does_nothing(
    openrtc_dispatch: LoopbackDispatchServer, openrtc_worker: Any
) -> None:
    async with openrtc_worker(make_pool(None)):
        d = await openrtc_dispatch.dispatch("room", job_metadata=metadata("nobody-listed"))
        report = await openrtc_dispatch.wait_for_report(d.job_id, timeout=60)
    assert d.accepted
    assert report["turns"][0]["events"][-1]["text"] == "pool default"
    assert tenancy_plugin.current() is None


async def test_the_flag_of_a_run_verb_reaches_the_job_processes(tmp_path: Path) -> None:
    # dev, not start: a start worker with process isolation reports itself full by CPU load.
    (tmp_path / "run_dev.py").write_text(RUN_DEV)
    target = "tenancy_fixtures:PROCESS_POOL_TENANTS_IN_CODE"
    args = [target, "--tenants", str(PROCESS_TENANTS)]
    if "reload" in AgentPool().plugins.run_options():
        args.append("--no-reload")  # no file watching in the worker and its job processes
    async with (
        LoopbackDispatchServer() as lk,
        started_fleet(lk, tmp_path, pythonpath=[TESTS], env={"OPENRTC_TENANTS": None}) as fleet,
    ):
        await fleet.start(sys.executable, str(tmp_path / "run_dev.py"), *args, cwd=tmp_path)
        await fleet.registered(1)
        reports = await keyed_replies(lk)
        worker = fleet.processes[0].pid
    assert worker not in (reports["acme"]["pid"], reports["globex"]["pid"])
    assert_keyed_in_job_processes(reports)
