"""Plugin discovery and ordering, with distributions built on the fly in a temporary folder."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from openrtc_core import AgentPool, PluginLoadError, RouteDecision, discover_agents, hookimpl
from openrtc_core.models import JobView, PoolView
from openrtc_core.plugins import PluginHost

GOOD = """
from openrtc_core import RouteDecision, hookimpl

@hookimpl(tryfirst=True)
def openrtc_route_job(job, pool):
    if job.room_name.startswith("vip"):
        return RouteDecision(agent="sales", strategy="vip", reason="vip room")
    return None
"""

BROKEN = 'raise ImportError("boom: missing native library")\n'

TYPO = """
from openrtc_core import hookimpl

@hookimpl
def openrtc_route_jobs(job, pool):
    return None
"""

AGENTS = """
from livekit.agents import Agent
import openrtc_core

@openrtc_core.agent("concierge", greeting=None)
class ConciergeAgent(Agent):
    def __init__(self):
        super().__init__(instructions="Welcome guests.")

def register(pool):
    pool.add("valet", ConciergeAgent)
"""


def _dist(site: Path, dist: str, version: str, module: str, source: str, entry_points: str) -> None:
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    _dist(site, "openrtc-good", "1.2.3", "goodplug", GOOD, "[openrtc.plugins]\ngood = goodplug\n")
    _dist(
        site,
        "openrtc-broken",
        "0.1",
        "brokenplug",
        BROKEN,
        "[openrtc.plugins]\nbroken = brokenplug\n",
    )
    _dist(site, "openrtc-typo", "0.1", "typoplug", TYPO, "[openrtc.plugins]\ntypo = typoplug\n")
    _dist(
        site,
        "openrtc-concierge",
        "2.0",
        "conciergepkg",
        AGENTS,
        "[openrtc.agents]\n"
        "concierge = conciergepkg:ConciergeAgent\n"
        "valet = conciergepkg:register\n",
    )
    return site


def openrtc(
    site: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "XDG_CACHE_HOME": str(site.parent / "cache"),
        **(env or {}),
    }
    full_env.pop("OPENRTC_STRICT_PLUGINS", None) if "OPENRTC_STRICT_PLUGINS" not in (
        env or {}
    ) else None
    return subprocess.run(
        [sys.executable, "-m", "openrtc_core", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


def by_name(out: str) -> dict[str, dict[str, object]]:
    return {r["name"]: r for r in json.loads(out)}


def test_plugins_json_lists_loaded_failed_and_builtin(site: Path) -> None:
    result = openrtc(site, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    records = by_name(result.stdout)
    good = records["good"]
    assert good["status"] == "loaded"
    assert good["distribution"] == "openrtc-good" and good["version"] == "1.2.3"
    assert good["hooks"] == ["openrtc_route_job"]
    assert records["broken"]["status"] == "failed"
    assert "boom: missing native library" in str(records["broken"]["error"])
    assert records["typo"]["status"] == "failed"
    assert "openrtc_route_jobs" in str(records["typo"]["error"])
    assert records["openrtc.routing.job-metadata"]["distribution"] == "openrtc-core"
    # One warning per skipped plugin, naming it and the error.
    warnings = [line for line in result.stderr.splitlines() if "skipping plugin" in line]
    assert len(warnings) == 2, result.stderr
    assert any("broken" in w and "boom" in w for w in warnings)


def test_strict_mode_makes_a_broken_plugin_fatal(site: Path) -> None:
    for args, env in [
        (("--strict-plugins", "plugins"), {}),
        (("plugins",), {"OPENRTC_STRICT_PLUGINS": "1"}),
    ]:
        result = openrtc(site, *args, env=env)
        assert result.returncode == 1
        assert "2 plugin(s) failed to load and strict loading is on" in result.stderr
        assert "broken (brokenplug): ImportError: boom" in result.stderr
        assert "OPENRTC_DISABLE_PLUGINS=typo,broken" in result.stderr
        assert "Traceback" not in result.stderr


def test_disabled_plugins_are_not_loaded(site: Path) -> None:
    result = openrtc(
        site, "--disable-plugins", "broken,typo", "--strict-plugins", "plugins", "--json"
    )
    assert result.returncode == 0, result.stderr
    records = by_name(result.stdout)
    assert records["broken"]["status"] == "disabled"
    assert records["typo"]["status"] == "disabled"
    assert records["good"]["status"] == "loaded"
    env_result = openrtc(
        site,
        "plugins",
        "--json",
        env={"OPENRTC_DISABLE_PLUGINS": "good,openrtc.routing.room-prefix"},
    )
    records = by_name(env_result.stdout)
    assert records["good"]["status"] == "disabled"
    assert records["openrtc.routing.room-prefix"]["status"] == "disabled"


def test_plugins_table_for_people(site: Path) -> None:
    result = openrtc(site, "plugins")
    assert result.returncode == 0
    assert "good" in result.stdout and "failed" in result.stdout


def test_agent_entry_points_register_classes_and_functions(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(site))
    pool = AgentPool(load_plugins=False)
    assert discover_agents(pool) == ["concierge", "valet"]
    assert pool.get("concierge").greeting is None


class RouteEverythingTo:
    def __init__(self, agent: str) -> None:
        self.agent = agent

    @hookimpl(trylast=True)
    def openrtc_route_job(self, job: JobView) -> RouteDecision:
        return RouteDecision(agent=self.agent, strategy="catch-all")


class Exploding:
    @hookimpl
    def openrtc_route_job(self, job: JobView) -> RouteDecision:
        raise RuntimeError("strategy bug")


def _job(room: str, meta: str = "") -> JobView:
    from openrtc_core.metadata import parse_metadata

    return JobView(
        job_id="AJ_1", room_name=room, job_metadata=parse_metadata(meta, source="job metadata")
    )


def test_third_party_strategies_order_with_trylast_and_failures_are_contained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = PluginHost(strict=False, disabled=frozenset())
    host.register(RouteEverythingTo("booking"), name="catch-all")
    host.register(Exploding(), name="exploding")
    pool = PoolView(agents=frozenset({"sales", "booking", "support"}), default_agent="support")
    # Built-in prefix rule runs before a trylast strategy ...
    assert host.route_job(_job("sales-1"), pool).agent == "sales"  # type: ignore[union-attr]
    # ... and a trylast strategy registered after the built-ins runs before the default.
    assert host.route_job(_job("lobby"), pool).agent == "booking"  # type: ignore[union-attr]
    assert any("exploding failed in openrtc_route_job" in r.getMessage() for r in caplog.records)


def test_strict_host_raises_on_a_bad_explicit_plugin() -> None:
    class Typo:
        @hookimpl
        def openrtc_route_jobz(self) -> None: ...

    with pytest.raises(PluginLoadError, match="openrtc_route_jobz"):
        PluginHost(strict=True, disabled=frozenset()).register(Typo(), name="typo")


class Timing:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl(wrapper=True)
    def openrtc_route_job(self, job: JobView) -> object:
        self.seen.append(f"before {job.room_name}")
        result = yield
        self.seen.append(f"after {getattr(result, 'agent', None)}")
        return result


class WrongType:
    @hookimpl(tryfirst=True)
    def openrtc_route_job(self) -> str:
        return "sales"


class BrokenAdmission:
    @hookimpl
    def openrtc_admit_job(self) -> None:
        raise RuntimeError("cap store unreachable")


POOL_VIEW = PoolView(agents=frozenset({"sales", "support"}), default_agent="support")


def test_wrappers_see_every_routing_call() -> None:
    host = PluginHost(strict=False, disabled=frozenset())
    timing = Timing()
    host.register(timing, name="timing")
    assert host.route_job(_job("sales-1"), POOL_VIEW).agent == "sales"  # type: ignore[union-attr]
    assert timing.seen == ["before sales-1", "after sales"]


def test_wrong_return_type_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    host = PluginHost(strict=False, disabled=frozenset())
    host.register(WrongType(), name="wrong-type")
    decision = host.route_job(_job("lobby"), POOL_VIEW)
    assert decision is not None
    assert decision.agent == "support"
    assert any("wrong-type returned 'str'" in r.getMessage() for r in caplog.records)


def test_a_failing_admission_plugin_refuses_the_job() -> None:
    host = PluginHost(strict=False, disabled=frozenset())
    host.register(BrokenAdmission(), name="caps")
    decision = RouteDecision(agent="sales", strategy="test")
    verdict = host.admit_job(_job("sales-1"), decision, None)
    assert not verdict.admitted
    assert verdict.source == "caps"
    assert not verdict.terminate


def test_trace_switch_logs_hook_calls(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OPENRTC_TRACE_HOOKS", "1")
    host = PluginHost(strict=False, disabled=frozenset())
    with caplog.at_level(logging.INFO, logger="openrtc.plugins"):
        host.route_job(_job("sales-1"), POOL_VIEW)
    assert any("openrtc_route_job" in r.getMessage() for r in caplog.records)


def test_a_plugin_backend_replaces_the_built_in_of_the_same_name() -> None:
    class MyProcess:
        @hookimpl(tryfirst=True)
        def openrtc_register_isolation_backends(self, register: Any) -> None:
            register("process", lambda: "mine")

    host = PluginHost(strict=False, disabled=frozenset())
    host.register(MyProcess(), name="my-process")
    backends: dict[str, Any] = dict(host.isolation_backends())
    assert backends["process"]() == "mine"
    assert set(backends) == {"coroutine", "process", "thread"}


def test_a_plugin_failing_on_every_call_is_logged_once_then_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = PluginHost(strict=False, disabled=frozenset())
    host.register(WrongType(), name="wrong-type")
    host.register(BrokenAdmission(), name="caps")
    decision = RouteDecision(agent="sales", strategy="test")
    with caplog.at_level(logging.ERROR, logger="openrtc.plugins"):
        for _ in range(5):
            assert host.route_job(_job("lobby"), POOL_VIEW).agent == "support"  # type: ignore[union-attr]
            assert not host.admit_job(_job("lobby"), decision, None).admitted
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, errors  # one per plugin and hook
    assert host.errors.counts == {
        ("wrong-type", "openrtc_route_job"): 5,
        ("caps", "openrtc_admit_job"): 5,
    }


class WrongAdmission:
    @hookimpl
    def openrtc_admit_job(self) -> str:
        return "yes"


def test_an_admission_plugin_returning_the_wrong_type_refuses_like_a_failing_one() -> None:
    host = PluginHost(strict=False, disabled=frozenset())
    host.register(WrongAdmission(), name="sloppy")
    verdict = host.admit_job(_job("sales-1"), RouteDecision(agent="sales", strategy="t"), None)
    assert not verdict.admitted
    assert verdict.source == "sloppy"
