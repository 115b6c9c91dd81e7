"""Reloading is a plugin's run option: without one, the core never reloads, ``dev`` still
turns livekit's own reload notice off, and asking for ``--reload`` names the package.

With openrtc-reload installed, its tests check the option itself
(plugins/openrtc-reload/tests/test_reload_cli.py)."""

from __future__ import annotations

import pytest
from e2e_pools import SupportAgent

from openrtc_core import AgentPool, PoolConfigError
from openrtc_testing.runs import TakenRuns

CREDENTIALS = ["--url", "ws://127.0.0.1:9", "--api-key", "k", "--api-secret", "s"]


def pool(*plugins: object) -> AgentPool:
    built = AgentPool(load_plugins=False, plugins=list(plugins))
    built.add("support", SupportAgent)
    return built


@pytest.mark.parametrize(
    ("verb", "args", "appended"),
    [
        ("dev", [], ["--no-reload"]),
        ("start", [], []),
        # livekit's console has no reload of ours to take: its own flags pass through.
        ("console", ["--reload"], []),
    ],
)
def test_without_a_reload_plugin_no_run_reloads_and_dev_quiets_livekits_reload(
    verb: str, args: list[str], appended: list[str]
) -> None:
    taker = TakenRuns()
    with pytest.raises(SystemExit) as exited:
        pool(taker).run([verb, *args, *CREDENTIALS])
    assert exited.value.code == 0
    (run,) = taker.runs
    assert "reload" not in run.options
    assert list(run.args) == [verb, *args, *CREDENTIALS, *appended]


@pytest.mark.parametrize("verb", ["dev", "start"])
def test_reload_with_no_reload_plugin_names_the_package_and_runs_nothing(
    verb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    taker = TakenRuns()
    with pytest.raises(SystemExit) as exited:
        pool(taker).run([verb, "--reload", *CREDENTIALS])
    assert exited.value.code == 1
    assert taker.runs == []
    err = capsys.readouterr().err
    assert "--reload is provided by openrtc-reload" in err, err
    assert "Traceback" not in err


def test_asking_for_reload_in_code_with_no_reload_plugin_names_the_package() -> None:
    with pytest.raises(
        PoolConfigError, match=r"create_server\(reload=\) is provided by openrtc-reload"
    ):
        pool().create_server(reload=True)
    with pytest.raises(SystemExit) as exited:
        pool().run(["start", *CREDENTIALS], reload=True)
    assert exited.value.code == 1
