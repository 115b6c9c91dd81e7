"""openrtc-workers' run options as ``start`` resolves them: the plan, and the errors that
name a flag. The options go through the core's one parser, declared by the plugin."""

from __future__ import annotations

from typing import Any

import pytest
from livekit.agents import Agent

from openrtc_core import AgentPool, RunOptions, usable_cores
from openrtc_testing.runs import TakenRuns
from openrtc_workers import WorkerPlan
from openrtc_workers import plugin as workers_plugin
from openrtc_workers.plan import supervises

CREDENTIALS = ("--url", "ws://127.0.0.1:9", "--api-key", "k", "--api-secret", "s")


def run(
    verb: str, args: list[str], keywords: dict[str, Any] | None = None
) -> tuple[RunOptions, tuple[str, ...]]:
    """The options the real command-line path resolves for `verb` with the plugin loaded,
    and what it leaves for livekit (a run taken over before any worker starts)."""
    taken = TakenRuns()
    built = AgentPool(load_plugins=False, plugins=[taken, workers_plugin])
    built.add("support", lambda ctx: Agent(instructions="Help."))
    with pytest.raises(SystemExit) as exited:
        built.run([verb, *args, *CREDENTIALS], **(keywords or {}))
    assert exited.value.code == 0
    (resolved,) = taken.runs
    return resolved.options, resolved.args[1 : -len(CREDENTIALS)]


def plan(verb: str, args: list[str], keywords: dict[str, Any] | None = None) -> WorkerPlan:
    return WorkerPlan.from_options(run(verb, args, keywords)[0])


def refused(verb: str, args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    built = AgentPool(load_plugins=False, plugins=[TakenRuns(), workers_plugin])
    built.add("support", lambda ctx: Agent(instructions="Help."))
    with pytest.raises(SystemExit) as exited:
        built.run([verb, *args, *CREDENTIALS])
    assert exited.value.code == 1
    return capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    ("verb", "args", "keywords", "expected"),
    [
        ("start", [], {}, WorkerPlan(count=usable_cores())),
        ("start", ["--workers", "3", "--log-level", "debug"], {}, WorkerPlan(count=3)),
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
def test_bad_worker_flags_name_the_flag(
    verb: str, args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert says in refused(verb, args, capsys)


def test_a_bad_environment_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENRTC_WORKERS", "lots")
    assert refused("start", [], capsys).startswith("error: OPENRTC_WORKERS='lots': give a number")


def test_livekits_own_flags_are_left_for_it() -> None:
    assert run("start", ["--workers", "2", "--log-level", "debug"])[1] == ("--log-level", "debug")


def test_other_verbs_ignore_the_workers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENRTC_WORKERS", "4")
    options, _ = run("dev", [])
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
