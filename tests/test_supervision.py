"""What the core gives a plugin that runs a verb itself: the run options it declares,
parsed once, and ``openrtc_take_over_run`` with prewarm before the fork and one worker in a
forked process (openrtc-workers' own plan and supervisor are tested with the plugin)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest
from e2e_pools import SupportAgent

from openrtc_core import (
    VERSION_ENV,
    AgentPool,
    PoolConfigError,
    PoolView,
    RunContext,
    RunOption,
    hookimpl,
    worker_identity,
)
from openrtc_core.cli.verbs import take_run_options
from openrtc_core.cores import cpu_quota
from openrtc_core.hints import Hint, why_missing
from openrtc_core.identity import WORKER_ENV
from openrtc_core.isolation.base import take_prewarmed
from openrtc_core.supervision import log_level, prewarm_before_fork, worker_port

ROOT = Path(__file__).resolve().parent.parent
CREDENTIALS = ["--url", "ws://127.0.0.1:9", "--api-key", "k", "--api-secret", "s"]


class Replicas:
    """A plugin with a run option of its own that takes ``start`` over; runs no worker."""

    runs: ClassVar[list[RunContext]] = []

    @hookimpl
    def openrtc_add_run_options(self, add: Any) -> None:
        add(
            RunOption(
                name="replicas",
                flag="--replicas",
                help="How many.",
                parse=_positive,
                verbs=("start",),
                env="FAKE_REPLICAS",
                default=1,
            )
        )
        add(RunOption(name="loud", flag="--loud", help="Louder.", switch=True, default=False))

    @hookimpl
    def openrtc_take_over_run(self, run: RunContext) -> int | None:
        if run.verb != "start":
            return None
        self.runs.append(run)
        return 7


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError("give a number, 1 or more")
    return int(text)


def pool(*plugins: object, isolation: str = "coroutine") -> AgentPool:
    built = AgentPool(load_plugins=False, plugins=list(plugins), isolation=isolation)
    built.add("support", SupportAgent)
    return built


@pytest.mark.parametrize(
    ("verb", "args", "keywords", "env", "replicas", "rest"),
    [
        ("start", [], {}, {}, 1, []),
        ("start", ["--replicas", "3", "--url", "x"], {}, {}, 3, ["--url", "x"]),
        ("start", ["--replicas=2", "--replicas", "4"], {}, {}, 4, []),
        ("start", [], {"replicas": 5}, {}, 5, []),
        ("start", ["--replicas", "2"], {"replicas": 5}, {}, 2, []),
        ("start", [], {"replicas": 5}, {"FAKE_REPLICAS": "6"}, 5, []),
        ("start", [], {}, {"FAKE_REPLICAS": "6"}, 6, []),
        ("dev", [], {}, {"FAKE_REPLICAS": "6"}, 1, []),
    ],
)
def test_run_options_come_from_flags_then_code_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    verb: str,
    args: list[str],
    keywords: dict[str, Any],
    env: dict[str, str],
    replicas: int,
    rest: list[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    options, left = take_run_options(pool(Replicas()), verb, args, keywords)
    assert (options["replicas"], left) == (replicas, rest)
    assert options.given("replicas") == bool(args or keywords or (env and verb == "start"))


def test_a_switch_takes_its_no_form_and_the_last_one_wins() -> None:
    built = pool(Replicas())
    assert take_run_options(built, "dev", ["--loud"], {})[0]["loud"] is True
    assert take_run_options(built, "dev", ["--loud", "--no-loud"], {})[0]["loud"] is False


@pytest.mark.parametrize(
    ("verb", "args", "keywords", "says"),
    [
        ("start", ["--replicas", "0"], {}, "--replicas '0': give a number, 1 or more"),
        ("start", [], {"replicas": "two"}, "pool.run(replicas='two'): give a number"),
        ("dev", ["--replicas", "2"], {}, "--replicas is for start, not dev"),
        ("start", ["--replicas"], {}, "--replicas: give VALUE after it"),
        ("start", [], {"replica": 2}, "pool.run(replica=...): no run option is called that"),
        ("dev", ["--loud=yes"], {}, "--loud takes no value"),
    ],
)
def test_bad_run_options_name_the_input(
    verb: str, args: list[str], keywords: dict[str, Any], says: str
) -> None:
    with pytest.raises(PoolConfigError) as raised:
        take_run_options(pool(Replicas()), verb, args, keywords)
    assert says in str(raised.value)


def test_two_plugins_adding_one_flag_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    class Again(Replicas):
        pass

    with pytest.raises(SystemExit) as exited:
        pool(Replicas(), Again()).run(["start", *CREDENTIALS])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "both add the run option" in err and "Replicas" in err


class TakesLivekitsUrl:
    @hookimpl
    def openrtc_add_run_options(self, add: Any) -> None:
        add(RunOption(name="url", flag="--url", help="Mine."))


class TakesTheVerbsHelp:
    @hookimpl
    def openrtc_add_run_options(self, add: Any) -> None:
        add(RunOption(name="helpful", flag="--help", help="Mine."))


@pytest.mark.parametrize(
    ("plugin", "says"),
    [
        (TakesLivekitsUrl(), "adds the run option --url, which livekit's own start takes"),
        (TakesTheVerbsHelp(), "both add the run option --help"),
    ],
)
def test_an_option_may_not_take_a_flag_of_livekit_or_of_the_verb(plugin: object, says: str) -> None:
    with pytest.raises(PoolConfigError) as raised:
        take_run_options(pool(plugin), "start", [], {})
    assert says in str(raised.value)


def test_the_plugin_taking_over_gets_the_options_and_the_core_callables() -> None:
    Replicas.runs.clear()
    with pytest.raises(SystemExit) as exited:
        pool(Replicas()).run(["start", *CREDENTIALS, "--loud"], replicas=3)
    assert exited.value.code == 7
    (run,) = Replicas.runs
    assert (run.verb, run.options["replicas"], run.options["loud"]) == ("start", 3, True)
    assert run.args == ("start", *CREDENTIALS)
    assert callable(run.prewarm) and callable(run.run_worker) and callable(run.setup_logging)
    # Done with: the processes a later run starts inherit neither this run's values nor its
    # deployment version (a stale one would win over what a later run's environment says).
    assert "OPENRTC_RUN_OPTIONS" not in os.environ
    assert VERSION_ENV not in os.environ


def test_a_flag_of_a_plugin_that_is_not_there_names_the_distribution(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        "from livekit.agents import Agent\n"
        "from openrtc_core import AgentPool\n"
        "pool = AgentPool()\n"
        "pool.add('a', Agent)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "openrtc_core", "start", str(app), "--workers", "2", *CREDENTIALS],
        env={**os.environ, "OPENRTC_DISABLE_PLUGINS": "workers,deploy"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert (
        "error: --workers is provided by openrtc-workers (plugin 'workers'), which is disabled"
        in done.stderr
    )


def test_a_hint_for_a_distribution_not_installed_says_what_to_install() -> None:
    hint = Hint(distribution="openrtc-not-here", entry_point="nothere", flags=("--nothere",))
    assert why_missing("--nothere", hint) == (
        "--nothere is provided by openrtc-not-here (pip install openrtc-not-here), which is "
        "not installed"
    )


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
    assert "openrtc_worker_started" in message and "run one worker" in message


def test_worker_ports_follow_the_configured_one() -> None:
    assert [worker_port(9000, n) for n in (0, 1, 2)] == [9000, 9001, 9002]
    assert worker_port(0, 2) == 0
    assert worker_port(None, 1) == 8082  # livekit's production default, 8081, plus one


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
            "start runs one worker process",
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
