"""openrtc-workers' run options as ``start`` resolves them: the plan, and the errors that
name a flag. The options go through the core's one parser, declared by the plugin."""

from __future__ import annotations

from typing import Any

import pytest
from livekit.agents import Agent

from openrtc_core import AgentPool, PoolConfigError, usable_cores
from openrtc_core.cli.verbs import take_run_options
from openrtc_workers import WorkerPlan
from openrtc_workers import plugin as workers_plugin
from openrtc_workers.plan import supervises


def pool() -> AgentPool:
    built = AgentPool(load_plugins=False, plugins=[workers_plugin])
    built.add("support", lambda ctx: Agent(instructions="Help."))
    return built


def plan(verb: str, args: list[str], keywords: dict[str, Any] | None = None) -> WorkerPlan:
    options, _ = take_run_options(pool(), verb, args, keywords or {})
    return WorkerPlan.from_options(options)


@pytest.mark.parametrize(
    ("verb", "args", "keywords", "expected"),
    [
        ("start", [], {}, WorkerPlan(count=usable_cores())),
        ("start", ["--workers", "3", "--url", "x"], {}, WorkerPlan(count=3)),
        ("start", ["--workers=1"], {}, WorkerPlan(count=1)),
        ("start", ["--workers", "auto"], {}, WorkerPlan(count=usable_cores())),
        ("start", [], {"workers": 4}, WorkerPlan(count=4)),
        ("start", ["--workers", "2"], {"workers": 4}, WorkerPlan(count=2)),
        (
            "start",
            ["--workers", "2", "--max-worker-memory", "512.5", "--max-worker-sessions=100"],
            {},
            WorkerPlan(count=2, max_memory_mb=512.5, max_sessions=100),
        ),
    ],
)
def test_the_plan_comes_from_flags_then_code(
    verb: str, args: list[str], keywords: dict[str, Any], expected: WorkerPlan
) -> None:
    assert plan(verb, args, keywords) == expected


def test_workers_come_from_the_environment_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENRTC_WORKERS", "4")
    assert plan("start", []).count == 4
    assert plan("start", ["--workers", "2"]).count == 2


@pytest.mark.parametrize(
    ("verb", "args", "says"),
    [
        ("start", ["--workers", "0"], "--workers '0': give a number of workers, 1 or more"),
        ("start", ["--workers", "two"], "--workers 'two'"),
        ("start", ["--max-worker-memory", "-5"], "--max-worker-memory '-5': give a size in MiB"),
        ("start", ["--max-worker-sessions", "x"], "--max-worker-sessions 'x': give a number"),
        ("dev", ["--workers", "2"], "--workers is for start, not dev"),
        (
            "connect",
            ["--max-worker-sessions", "5"],
            "--max-worker-sessions is for start, not connect",
        ),
    ],
)
def test_bad_worker_flags_name_the_flag(verb: str, args: list[str], says: str) -> None:
    with pytest.raises(PoolConfigError) as raised:
        take_run_options(pool(), verb, args, {})
    assert says in str(raised.value)


def test_a_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENRTC_WORKERS", "lots")
    with pytest.raises(PoolConfigError, match=r"^OPENRTC_WORKERS='lots': give a number"):
        take_run_options(pool(), "start", [], {})


def test_other_verbs_ignore_the_workers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENRTC_WORKERS", "4")
    options, _ = take_run_options(pool(), "dev", [], {})
    assert not options.given("workers")


@pytest.mark.parametrize(
    ("verb", "count", "memory", "reported", "supervised"),
    [
        ("start", 2, None, False, True),
        ("start", 1, None, False, False),
        ("start", 1, 512.0, False, True),
        ("start", 1, None, True, True),
        ("dev", 4, None, False, False),
    ],
)
def test_the_supervisor_runs_start_with_several_workers_recycling_or_a_controller(
    monkeypatch: pytest.MonkeyPatch,
    verb: str,
    count: int,
    memory: float | None,
    reported: bool,
    supervised: bool,
) -> None:
    monkeypatch.delenv("OPENRTC_STATUS_FD", raising=False)
    if reported:
        monkeypatch.setenv("OPENRTC_STATUS_FD", "9")
    assert supervises(verb, WorkerPlan(count=count, max_memory_mb=memory)) is supervised
