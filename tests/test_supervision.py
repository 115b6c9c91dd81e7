"""The workers contract in the core: ``--workers`` and friends, prewarm before the fork, and
the run of one worker in a forked process (the supervisor itself is openrtc-workers')."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from e2e_pools import SupportAgent

from openrtc_core import (
    AgentPool,
    PoolConfigError,
    PoolView,
    SupervisorContext,
    WorkerPlan,
    hookimpl,
    worker_identity,
)
from openrtc_core.cores import cpu_quota, usable_cores
from openrtc_core.identity import WORKER_ENV
from openrtc_core.isolation.base import take_prewarmed
from openrtc_core.supervision import (
    log_level,
    prewarm_before_fork,
    take_worker_flags,
    worker_port,
)

ROOT = Path(__file__).resolve().parent.parent


class FakeSupervisor:
    """Records the context it was given; runs no worker."""

    contexts: ClassVar[list[SupervisorContext]] = []

    @hookimpl
    def openrtc_register_supervisors(
        self, register: Callable[[str, Callable[[SupervisorContext], Any]], None]
    ) -> None:
        register("workers", self.build)

    def build(self, context: SupervisorContext) -> Any:
        self.contexts.append(context)
        return self


def pool(*plugins: object, isolation: str = "coroutine") -> AgentPool:
    built = AgentPool(load_plugins=False, plugins=list(plugins), isolation=isolation)
    built.add("support", SupportAgent)
    return built


@pytest.mark.parametrize(
    ("verb", "args", "installed", "plan", "rest"),
    [
        ("start", [], True, WorkerPlan(count=usable_cores()), []),
        ("start", [], False, WorkerPlan(count=1), []),
        ("start", ["--workers", "3", "--url", "x"], True, WorkerPlan(count=3), ["--url", "x"]),
        ("start", ["--workers=1"], True, WorkerPlan(count=1), []),
        ("start", ["--workers", "auto"], False, WorkerPlan(count=usable_cores()), []),
        (
            "start",
            ["--workers", "2", "--max-worker-memory", "512.5", "--max-worker-sessions=100"],
            True,
            WorkerPlan(count=2, max_memory_mb=512.5, max_sessions=100),
            [],
        ),
        ("dev", [], True, WorkerPlan(count=1), []),
        ("console", ["--workers", "1"], True, WorkerPlan(count=1), []),
    ],
)
def test_worker_flags(
    verb: str, args: list[str], installed: bool, plan: WorkerPlan, rest: list[str]
) -> None:
    built = pool(*([FakeSupervisor()] if installed else []))
    assert take_worker_flags(built, verb, args) == (plan, rest)


def test_workers_come_from_the_environment_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENRTC_WORKERS", "4")
    assert take_worker_flags(pool(), "start", [])[0].count == 4
    assert take_worker_flags(pool(), "start", ["--workers", "2"])[0].count == 2


@pytest.mark.parametrize(
    ("verb", "args", "says"),
    [
        ("start", ["--workers", "0"], "--workers '0' (or OPENRTC_WORKERS): give a number"),
        ("start", ["--workers", "two"], "--workers 'two'"),
        ("start", ["--max-worker-memory", "-5"], "--max-worker-memory '-5': give a size in MiB"),
        ("start", ["--max-worker-sessions", "x"], "--max-worker-sessions 'x': give a number"),
        ("dev", ["--workers", "2"], "are for `start`; dev runs one worker process"),
        ("connect", ["--max-worker-sessions", "5"], "connect runs one worker process"),
    ],
)
def test_bad_worker_flags_name_the_flag(verb: str, args: list[str], says: str) -> None:
    with pytest.raises(PoolConfigError) as raised:
        take_worker_flags(pool(FakeSupervisor()), verb, args)
    assert says in str(raised.value)


def test_start_with_workers_and_no_supervisor_names_the_package(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        pool().run(
            ["start", "--url", "ws://127.0.0.1:9", "--api-key", "k", "--api-secret", "s"], workers=2
        )
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "no supervisor 'workers' is installed" in err
    assert "pip install openrtc-workers" in err


def test_the_installed_supervisor_gets_the_plan_and_the_core_callables() -> None:
    fake = FakeSupervisor()
    fake.run = lambda: 7  # type: ignore[attr-defined]
    FakeSupervisor.contexts.clear()
    with pytest.raises(SystemExit) as exited:
        pool(fake).run(
            [
                "start",
                "--url",
                "ws://127.0.0.1:9",
                "--api-key",
                "k",
                "--api-secret",
                "s",
                "--max-worker-sessions",
                "9",
            ],
            workers=3,
        )
    assert exited.value.code == 7
    (context,) = FakeSupervisor.contexts
    assert context.plan == WorkerPlan(count=3, max_sessions=9)
    assert callable(context.prewarm) and callable(context.run_worker)


class LoadsModel:
    @hookimpl
    def openrtc_prewarm(self, proc: Any, pool: PoolView) -> None:
        proc.userdata["model"] = "weights"


class StartsThread:
    @hookimpl
    def openrtc_prewarm(self, proc: Any, pool: PoolView) -> None:
        threading.Thread(target=threading.Event().wait, args=(2,), name="poller").start()


class OpensSocket:
    @hookimpl
    def openrtc_prewarm(self, proc: Any, pool: PoolView) -> None:
        import socket

        proc.userdata["socket"] = socket.socket()


def test_prewarm_before_fork_hands_the_prewarmed_process_to_the_first_server() -> None:
    said = prewarm_before_fork(pool(LoadsModel()))
    assert "prewarm ran once here" in said
    proc = take_prewarmed()
    assert proc is not None and proc.userdata["model"] == "weights"
    assert take_prewarmed() is None  # once: a second server in the process prewarms itself


def test_prewarm_before_fork_is_skipped_where_each_job_process_prewarms() -> None:
    said = prewarm_before_fork(pool(LoadsModel(), isolation="process"))
    assert "prewarm runs in each job process (isolation='process')" in said
    assert take_prewarmed() is None


@pytest.mark.parametrize(
    ("plugin", "says"), [(StartsThread(), "1 thread(s) (poller#"), (OpensSocket(), "1 open socket")]
)
def test_a_prewarm_that_leaves_what_a_fork_breaks_is_refused(plugin: Any, says: str) -> None:
    try:
        with pytest.raises(PoolConfigError) as raised:
            prewarm_before_fork(pool(plugin))
    finally:
        take_prewarmed()
    message = str(raised.value)
    assert says in message
    assert "openrtc_worker_started" in message and "--workers 1" in message


def test_worker_ports_follow_the_configured_one() -> None:
    assert [worker_port(9000, n) for n in (0, 1, 2)] == [9000, 9001, 9002]
    assert worker_port(0, 2) == 0
    assert worker_port(None, 1) == 8082  # livekit's production default, 8081, plus one


def test_other_verbs_ignore_the_workers_environment_and_pool_run_workers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENRTC_WORKERS", "4")
    assert take_worker_flags(pool(FakeSupervisor()), "dev", []) == (WorkerPlan(count=1), [])
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit):
        # dev goes past the worker flags to the next check: the missing server settings.
        pool(FakeSupervisor()).run(["dev"], workers=4)
    err = capsys.readouterr().err
    assert "LIVEKIT_URL" in err and "--workers" not in err


def test_log_level_reads_livekits_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVEKIT_LOG_LEVEL", raising=False)
    assert log_level(["start"]) == "INFO"
    assert log_level(["start", "--log-level", "warn"]) == "WARNING"
    assert log_level(["start", "--log-level=debug"]) == "DEBUG"
    monkeypatch.setenv("LIVEKIT_LOG_LEVEL", "error")
    assert log_level([]) == "ERROR"


def test_a_forked_worker_knows_its_identity() -> None:
    code = (
        "import os, signal\n"
        "from openrtc_core import worker_identity\n"
        "from openrtc_core.supervision import become_worker\n"
        "assert worker_identity() is None\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "become_worker(2, 3)\n"
        "print(worker_identity(), signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != WORKER_ENV}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[:2] == ["worker", "2/3"] and out[-1] == "True"


def test_identity_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKER_ENV, "1/2/4242")
    identity = worker_identity()
    assert identity is not None and str(identity) == "worker 1/2 (pid 4242)"
    monkeypatch.setenv(WORKER_ENV, "garbage")
    assert worker_identity() is None


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"OPENRTC_DISABLE_PLUGINS": "workers,deploy"},
            "start runs one worker process (pip install",
        ),
        ({WORKER_ENV: "2/4/123"}, "this process is worker 2/4 (pid 123) of a supervisor"),
    ],
)
def test_openrtc_plugins_says_how_start_runs_its_workers(env: dict[str, str], says: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "openrtc_core", "plugins"],
        env={**os.environ, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert says in out


@pytest.mark.parametrize(
    ("v2", "v1", "quota"),
    [
        ("max 100000\n", None, None),
        ("150000 100000\n", None, 1.5),
        (None, ("200000\n", "100000\n"), 2.0),
        (None, ("-1\n", "100000\n"), None),
        (None, None, None),
    ],
)
def test_a_containers_cpu_quota_caps_the_default_worker_count(
    tmp_path: Path, v2: str | None, v1: tuple[str, str] | None, quota: float | None
) -> None:
    v2_file, quota_file, period_file = (tmp_path / n for n in ("cpu.max", "quota", "period"))
    if v2 is not None:
        v2_file.write_text(v2)
    if v1 is not None:
        quota_file.write_text(v1[0])
        period_file.write_text(v1[1])
    assert cpu_quota(v2_file, (quota_file, period_file)) == quota
