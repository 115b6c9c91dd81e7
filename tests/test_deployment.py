"""The deployment version: how it is resolved, the ``--deploy-version`` flag, and where a worker
names it (the ``openrtc.deploy`` attribute, ``SessionInfo.deploy``, every log line)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from e2e_pools import make_coroutine_pool
from typer.testing import CliRunner

from openrtc_core import (
    DEPLOY_ATTRIBUTE,
    VERSION_ATTRIBUTE,
    VERSION_ENV,
    AgentPool,
    DeployVersion,
    PoolConfigError,
    SessionInfo,
    SessionOutcome,
    deploy_version,
    hookimpl,
    load_pool,
    pool_source_dir,
    resolve_deploy_version,
)
from openrtc_core.cli import build_app, run_livekit
from openrtc_core.plugins import PluginHost
from openrtc_deploy.generation import GENERATION_ENV, generation
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.worker import simulate_call

ROOT = Path(__file__).resolve().parent.parent
CREDENTIALS = ["--url", "ws://127.0.0.1:9", "--api-key", "key", "--api-secret", "secret"]

AGENT_MODULE = """\
from livekit.agents import Agent

import openrtc_core
from openrtc_testing import ScriptedLLM


@openrtc_core.agent(
    default=True, vad=None, llm=ScriptedLLM(name="deploy-test", default_reply="ok: {user}")
)
class Support(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Help.")
"""

APP_MODULE = """\
from livekit.agents import Agent

from openrtc_core import AgentPool
from openrtc_testing import ScriptedLLM


class Support(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Help.")


pool = AgentPool(llm=ScriptedLLM(name="deploy-app"), vad=None)
pool.add("support", Support)
"""


@pytest.fixture(autouse=True)
def _no_deploy_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No version from the environment, and git never looks above the test's folder (which
    might sit inside some other repository)."""
    monkeypatch.delenv(VERSION_ENV, raising=False)
    monkeypatch.delenv(GENERATION_ENV, raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))


def git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        [
            "git",
            "-c",
            "user.name=OpenRTC Tests",
            "-c",
            "user.email=tests@openrtc.invalid",
            "-c",
            "commit.gpgsign=false",
            "-C",
            str(folder),
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


def agents_folder(tmp_path: Path) -> Path:
    """A directory target with one agent module."""
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "support.py").write_text(AGENT_MODULE, encoding="utf-8")
    return folder


def committed(folder: Path) -> str:
    """`folder` as a git repository with everything committed; its short HEAD."""
    if not (folder / ".git").exists():
        git(folder, "init", "-q")
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "-m", "agents")
    return git(folder, "rev-parse", "--short=12", "HEAD")


# -- resolution ------------------------------------------------------------------------------


def test_the_flag_wins_then_the_environment_then_git_then_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = agents_folder(tmp_path)
    head = committed(folder)
    pool = load_pool(str(folder))
    monkeypatch.setenv(VERSION_ENV, "v2.0")
    assert resolve_deploy_version(pool, "v3.0") == DeployVersion("v3.0", "flag")
    assert resolve_deploy_version(pool) == DeployVersion("v2.0", "env")
    # A deploy controller resolving the code on disk skips the inherited environment.
    assert resolve_deploy_version(pool, use_env=False) == DeployVersion(head, "git")
    monkeypatch.delenv(VERSION_ENV)
    assert resolve_deploy_version(pool) == DeployVersion(head, "git")
    assert str(resolve_deploy_version(pool)) == head
    shutil.rmtree(folder / ".git")
    fallback = resolve_deploy_version(pool)
    assert fallback.source == "content"
    assert re.fullmatch(r"sha-[0-9a-f]{12}", fallback.value)


def test_an_edited_tracked_file_makes_the_version_dirty(tmp_path: Path) -> None:
    folder = agents_folder(tmp_path)
    first = committed(folder)
    pool = load_pool(str(folder))
    # Importing the code wrote a bytecode cache; running the code changes nothing.
    (folder / "__pycache__").mkdir(exist_ok=True)
    (folder / "__pycache__" / "stale.cpython-311.pyc").write_bytes(b"cache")
    assert resolve_deploy_version(pool).value == first
    support = folder / "support.py"
    support.write_text(AGENT_MODULE + "# edited\n", encoding="utf-8")
    assert resolve_deploy_version(pool) == DeployVersion(f"{first}-dirty", "git")
    second = committed(folder)
    assert second != first
    assert resolve_deploy_version(pool).value == second
    # A new agent module not committed yet is a change too.
    (folder / "billing.py").write_text("X = 1\n", encoding="utf-8")
    assert resolve_deploy_version(pool).value == f"{second}-dirty"


def test_the_content_hash_follows_the_python_files_and_nothing_else(tmp_path: Path) -> None:
    folder = agents_folder(tmp_path)
    pool = load_pool(str(folder))
    first = resolve_deploy_version(pool)
    assert first.source == "content"
    assert resolve_deploy_version(pool) == first
    (folder / "README.md").write_text("notes\n", encoding="utf-8")
    for skipped in (".venv", "__pycache__", "node_modules", "lib/site-packages"):
        (folder / skipped).mkdir(parents=True, exist_ok=True)
        (folder / skipped / "vendored.py").write_text("X = 1\n", encoding="utf-8")
    assert resolve_deploy_version(pool) == first
    support = folder / "support.py"
    support.write_text(AGENT_MODULE + "# edited\n", encoding="utf-8")
    edited = resolve_deploy_version(pool)
    assert edited.source == "content" and edited != first
    (folder / "helpers").mkdir()
    (folder / "helpers" / "tools.py").write_text("Y = 2\n", encoding="utf-8")
    assert resolve_deploy_version(pool) not in (first, edited)
    # Content-addressed: the same files give the same version again.
    shutil.rmtree(folder / "helpers")
    support.write_text(AGENT_MODULE, encoding="utf-8")
    assert resolve_deploy_version(pool) == first


def test_without_git_the_content_hash_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = agents_folder(tmp_path)
    committed(folder)
    pool = load_pool(str(folder))
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    assert resolve_deploy_version(pool).source == "content"


@pytest.mark.parametrize("value", ["a b", "", "x" * 129, "v1;rm -rf", "été", "v1\n"])
def test_a_bad_flag_value_names_the_flag(tmp_path: Path, value: str) -> None:
    pool = load_pool(str(agents_folder(tmp_path)))
    with pytest.raises(PoolConfigError) as raised:
        resolve_deploy_version(pool, value)
    assert str(raised.value).startswith(f"--deploy-version {value!r}: ")
    assert "1 to 128" in str(raised.value)


@pytest.mark.parametrize("value", ["a b", "x" * 129, "v1;rm"])
def test_a_bad_environment_value_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    pool = load_pool(str(agents_folder(tmp_path)))
    monkeypatch.setenv(VERSION_ENV, value)
    with pytest.raises(PoolConfigError, match=rf"^{VERSION_ENV}="):
        resolve_deploy_version(pool)
    with pytest.raises(PoolConfigError, match=rf"^{VERSION_ENV}="):
        deploy_version(pool)
    # A controller resolving the code on disk does not read it at all.
    assert resolve_deploy_version(pool, use_env=False).source == "content"


@pytest.mark.parametrize(
    "value", ["v1.4.2", "release/2024-06+build.7", "app@sha:abc_DEF-1", "7", "x" * 128]
)
def test_release_tags_build_numbers_and_commits_are_versions(tmp_path: Path, value: str) -> None:
    pool = load_pool(str(agents_folder(tmp_path)))
    assert resolve_deploy_version(pool, value) == DeployVersion(value, "flag")


def test_the_source_folder_of_each_target_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = agents_folder(tmp_path)
    assert pool_source_dir(load_pool(str(folder))) == folder.resolve()
    app = tmp_path / "app_dir" / "app.py"
    app.parent.mkdir()
    app.write_text(APP_MODULE, encoding="utf-8")
    assert pool_source_dir(load_pool(str(app))) == app.parent.resolve()
    package = tmp_path / "deploy_target_pkg" / "voice"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("", encoding="utf-8")
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "app.py").write_text(APP_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert pool_source_dir(load_pool("deploy_target_pkg.voice.app:pool")) == package.resolve()
    # A pool built by code in this file lives in this file's folder.
    assert pool_source_dir(AgentPool()) == Path(__file__).resolve().parent


def test_this_process_keeps_the_version_it_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = agents_folder(tmp_path)
    head = committed(folder)
    pool = load_pool(str(folder))
    assert deploy_version() == ""  # nothing exported it, and no pool to resolve it from
    assert deploy_version(pool) == head
    (folder / "support.py").write_text(AGENT_MODULE + "# edited\n", encoding="utf-8")
    # A running worker's version does not change under it; the code on disk's does.
    assert deploy_version(pool) == head
    assert resolve_deploy_version(pool).value == f"{head}-dirty"
    monkeypatch.setenv(VERSION_ENV, "exported-1")
    assert deploy_version(pool) == deploy_version() == "exported-1"


@pytest.mark.parametrize(
    ("raw", "expected"), [("3", 3), (" 12 ", 12), ("0", None), ("-1", None), ("two", None)]
)
def test_generation(monkeypatch: pytest.MonkeyPatch, raw: str, expected: int | None) -> None:
    assert generation() is None
    monkeypatch.setenv(GENERATION_ENV, raw)
    assert generation() == expected


# -- the command line ------------------------------------------------------------------------


def run_openrtc(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openrtc_core", *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    return [line for line in output.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize(
    ("verb", "flag"),
    [("start", "--deploy-version"), ("console", "--deploy-version"), ("start", "--version")],
)
def test_a_bad_version_flag_is_one_error_line(tmp_path: Path, verb: str, flag: str) -> None:
    folder = agents_folder(tmp_path)
    done = run_openrtc(verb, str(folder), flag, "bad value", *CREDENTIALS)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = error_lines(done)
    assert len(lines) == 1, done.stdout + done.stderr
    assert lines[0].startswith(f"error: {flag} 'bad value': a deployment version is")
    # The former spelling still works, and says what it is now.
    renamed = "--version is now --deploy-version" in done.stdout + done.stderr
    assert renamed == (flag == "--version")


@pytest.mark.parametrize("name", [VERSION_ENV, "OPENRTC_VERSION"])
def test_a_bad_environment_version_is_one_error_line_naming_it(tmp_path: Path, name: str) -> None:
    folder = agents_folder(tmp_path)
    done = run_openrtc("start", str(folder), *CREDENTIALS, env={name: "bad value"})
    assert done.returncode == 1, done.stdout + done.stderr
    lines = error_lines(done)
    assert len(lines) == 1, done.stdout + done.stderr
    assert lines[0].startswith(f"error: {name}='bad value': a deployment version is")


def test_the_top_level_version_option_still_prints_the_package_versions() -> None:
    app = build_app(PluginHost())
    top = CliRunner().invoke(app, ["--version"])
    assert top.exit_code == 0, top.output
    assert "openrtc-core" in top.output and "livekit-agents" in top.output
    for verb in ("start", "dev", "console", "connect"):
        shown = CliRunner().invoke(app, [verb, "--help"], terminal_width=200)
        assert shown.exit_code == 0, shown.output
        assert "--deploy-version" in shown.output and "deployment version" in shown.output


@pytest.mark.parametrize("keyword", ["deploy_version", "version"])
def test_pool_run_takes_the_version_and_a_bad_one_is_one_line(
    capsys: pytest.CaptureFixture[str], keyword: str
) -> None:
    pool = make_coroutine_pool()
    with pytest.raises(SystemExit) as exited:
        pool.run(["start", *CREDENTIALS], **{keyword: "bad value"})
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: pool.run({keyword}='bad value'):")
    # The command line's own flag wins over the keyword.
    with pytest.raises(SystemExit):
        pool.run(["start", "--deploy-version", "also bad", *CREDENTIALS], **{keyword: "v1"})
    assert capsys.readouterr().err.startswith("error: --deploy-version 'also bad':")


def test_a_worker_that_did_not_start_leaves_no_version_behind(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        run_livekit(AgentPool(), ["start", "--version", "v1", *CREDENTIALS])
    assert exited.value.code == 1
    assert capsys.readouterr().err.startswith("error: the pool has no agents")
    assert VERSION_ENV not in os.environ


async def test_start_names_the_version_once_on_every_job_and_on_every_log_line(
    tmp_path: Path,
) -> None:
    folder = agents_folder(tmp_path)
    async with LoopbackDispatchServer() as lk:
        # One worker in this process: no supervisor, whose workers are forked and stay quiet.
        env = {**os.environ, "OPENRTC_HTTP_PORT": "0", "OPENRTC_DISABLE_PLUGINS": "deploy,workers"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "openrtc_core",
            "start",
            str(folder),
            "--version",
            "v9.1",
            *lk.worker_args(),
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            worker = await lk.wait_for_worker(timeout=90)
            d = await lk.dispatch("deploy-room", job_metadata=json.dumps({"agent": "support"}))
            proc.send_signal(signal.SIGTERM)
            await worker.wait_closed(timeout=60)
            await asyncio.wait_for(proc.wait(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            output = (await proc.stdout.read()).decode() if proc.stdout else ""
    assert d.accepted, d
    assert d.participant_attributes[DEPLOY_ATTRIBUTE] == "v9.1"
    records = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    said = [r for r in records if r.get("message", "").startswith("deploy version")]
    assert [r["message"] for r in said] == ["deploy version v9.1 (from flag)"], output
    accepted = [r for r in records if r.get("message", "").startswith("accepting job")]
    assert accepted and all(r["deploy"] == "v9.1" for r in accepted), output
    assert "generation" not in accepted[0]


# -- through a real worker -------------------------------------------------------------------


class SessionRecorder:
    """Keeps the SessionInfo every lifecycle hook receives."""

    def __init__(self) -> None:
        self.started: list[SessionInfo] = []
        self.ended: list[SessionInfo] = []

    @hookimpl
    def openrtc_session_started(self, info: SessionInfo) -> None:
        self.started.append(info)

    @hookimpl
    def openrtc_session_ended(self, info: SessionInfo, outcome: SessionOutcome) -> None:
        self.ended.append(info)


async def test_a_call_carries_the_deploy_version_apart_from_the_code_version(
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(VERSION_ENV, "v-e2e.1")
    monkeypatch.setenv(GENERATION_ENV, "2")
    caplog.set_level(logging.INFO, logger="openrtc")
    recorder = SessionRecorder()
    pool = make_coroutine_pool(max_sessions=20, code_version="code-1")
    pool.plugins.register(recorder)
    async with openrtc_worker(pool):
        d, report = await simulate_call(openrtc_dispatch, "deploy-1", agent="support", turns=["hi"])
        await asyncio.sleep(0.2)  # the session-ended hook
    assert report["outcome"] == "completed"
    assert d.participant_attributes[DEPLOY_ATTRIBUTE] == "v-e2e.1"
    assert d.participant_attributes[VERSION_ATTRIBUTE] == "code-1"
    assert report["deploy"] == "v-e2e.1" and report["version"] == "code-1"
    assert [(i.deploy, i.version) for i in recorder.started] == [("v-e2e.1", "code-1")]
    assert [i.deploy for i in recorder.ended] == ["v-e2e.1"]
    started = [r for r in caplog.records if r.getMessage() == "session started"]
    assert [(getattr(r, "deploy", None), getattr(r, "version", None)) for r in started] == [
        ("v-e2e.1", "code-1")
    ]
    # Every line of the worker, ours and livekit's, names the deployment and the generation
    # (a field openrtc-deploy adds through openrtc_log_fields).
    worker_lines = [r for r in caplog.records if r.name.startswith(("openrtc", "livekit"))]
    assert worker_lines
    assert {getattr(r, "deploy", None) for r in worker_lines} == {"v-e2e.1"}
    assert {getattr(r, "generation", None) for r in worker_lines} == {2}


async def test_a_worker_built_in_code_resolves_the_version_of_its_pools_folder(
    tmp_path: Path,
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
) -> None:
    folder = agents_folder(tmp_path)
    head = committed(folder)
    pool = load_pool(str(folder))
    async with openrtc_worker(pool):
        d, report = await simulate_call(openrtc_dispatch, "deploy-git", turns=["hi"])
    assert report["outcome"] == "completed"
    assert d.participant_attributes[DEPLOY_ATTRIBUTE] == head == report["deploy"]
    assert VERSION_ENV not in os.environ  # resolved for this worker, not exported
