"""Reloading from the command line: ``openrtc simulate --reload``, ``dev`` and ``start``, and
``--reload``/``--no-reload`` as openrtc-reload's run option."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sys
from pathlib import Path

import pytest
from livekit.agents import Agent
from reload_project import make_project, wait_until

from openrtc_core import AgentPool, OpenRTCError, RunContext
from openrtc_reload import plugin as reload_plugin
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.runs import TakenRuns

CREDENTIALS = ["--url", "ws://127.0.0.1:9", "--api-key", "k", "--api-secret", "s"]


class Quiet(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Say nothing.")


def pool(*plugins: object) -> AgentPool:
    built = AgentPool(load_plugins=False, plugins=[reload_plugin, *plugins])
    built.add("support", Quiet)
    return built


def run(argv: list[str], reload: bool | None = None) -> RunContext:
    """The run `argv` (and ``pool.run(reload=...)`` when given) would start."""
    taker = TakenRuns()
    built = pool(taker)
    start = functools.partial(built.run, [*argv, *CREDENTIALS])
    if reload is not None:
        start = functools.partial(start, reload=reload)
    with pytest.raises(SystemExit) as exited:
        start()
    assert exited.value.code == 0
    (taken,) = taker.runs
    return taken


@pytest.mark.parametrize(
    ("verb", "args", "reloads", "appended"),
    [
        ("dev", [], True, ["--no-reload"]),
        ("dev", ["--reload"], True, ["--no-reload"]),
        ("dev", ["--no-reload"], False, ["--no-reload"]),
        ("start", [], False, []),
        ("start", ["--reload"], True, []),
        ("start", ["--reload", "--no-reload"], False, []),
        ("start", ["--no-reload", "--reload"], True, []),
    ],
)
def test_reload_is_on_for_dev_and_when_asked_for_and_livekit_never_sees_the_flag(
    verb: str, args: list[str], reloads: bool, appended: list[str]
) -> None:
    taken = run([verb, *args])
    assert taken.options["reload"] is reloads
    # livekit's own dev reload (a notice since livekit removed it) is always off.
    assert list(taken.args) == [verb, *CREDENTIALS, *appended]


def test_code_asks_for_reload_below_the_command_line() -> None:
    taken = run(["start"], reload=True)
    assert taken.options["reload"] is True
    assert taken.options.source("reload") == "pool.run(reload=)"
    assert run(["dev", "--no-reload"], reload=True).options["reload"] is False


def test_a_server_built_in_code_reloads_only_when_asked() -> None:
    assert pool().run_options["reload"] is False
    asked = pool()
    asked.create_server(reload=True)
    assert asked.run_options["reload"] is True
    assert asked.view().run_options["reload"] is True


def test_reload_is_not_for_console(capsys: pytest.CaptureFixture[str]) -> None:
    taker = TakenRuns()
    with pytest.raises(SystemExit) as exited:
        pool(taker).run(["console", "--reload"])
    assert exited.value.code == 1
    assert taker.runs == []
    err = capsys.readouterr().err
    assert "--reload is for dev and start, not console" in err, err


@pytest.mark.parametrize("argv", [["dev"], ["start", "--reload"]])
def test_a_reloading_run_with_an_unknown_strategy_stops_before_any_worker(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENRTC_RELOAD", "nonesuch")
    taker = TakenRuns()
    with pytest.raises(SystemExit) as exited:
        pool(taker).run([*argv, *CREDENTIALS])
    assert exited.value.code == 1
    assert taker.runs == []
    err = capsys.readouterr().err
    assert "no reload strategy 'nonesuch'" in err and "watch" in err, err
    assert "Traceback" not in err


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
    with pytest.raises(OpenRTCError, match=r"no reload strategy 'nonesuch'.*watch"):
        pool.create_server(reload=True)
    # Reloading off, the strategy is never looked for.
    pool.create_server(reload=False)


async def _collect(proc: asyncio.subprocess.Process, lines: list[str]) -> None:
    assert proc.stdout is not None
    async for raw in proc.stdout:
        lines.append(raw.decode(errors="replace").rstrip())


def _bump_tag(source: str, *, version: int) -> str:
    return source.replace(f'TAG = "v{version - 1}"', f'TAG = "v{version}"')


@pytest.mark.parametrize("argv", [["dev"], ["start", "--reload"]])
async def test_the_openrtc_command_reloads_for_dev_and_for_start_reload(
    argv: list[str], tmp_path: Path
) -> None:
    project = make_project(tmp_path)
    lines: list[str] = []

    def applied() -> bool:
        return any("reload applied" in line for line in lines)

    async with LoopbackDispatchServer() as dispatch:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "openrtc_core",
            argv[0],
            str(project.app),
            *argv[1:],
            *dispatch.worker_args(),
            # One worker, in the process the command started (with openrtc-deploy and
            # openrtc-workers installed, start runs a generation of supervised forked workers;
            # forked workers reload too, see
            # test_a_worker_forked_from_code_older_than_its_files_loads_them_first).
            env={
                **os.environ,
                "COLUMNS": "300",
                "OPENRTC_HTTP_PORT": "0",
                "OPENRTC_DISABLE_PLUGINS": "deploy,workers",
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        reader = asyncio.create_task(_collect(proc, lines))
        try:
            await dispatch.wait_for_worker(timeout=60)
            # One save, whenever it lands: before the watcher watches, the files are stale
            # and the worker's catch-up reload loads them; after, the watcher sees it.
            project.edit("support.py", functools.partial(_bump_tag, version=2))
            await wait_until(applied, timeout=30, what="a reload")
        finally:
            with contextlib.suppress(ProcessLookupError):  # it ended by itself: said below
                proc.terminate()
            await asyncio.wait_for(proc.wait(), 60)
            await reader
    assert applied(), "\n".join(lines)
