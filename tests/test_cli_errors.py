"""What a new user trips over first: a broken target, an empty pool, no LiveKit URL, a plugin
command that is not there. Each is one ``error:`` line and exit status 1, never a traceback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openrtc_core import AgentPool, PoolConfigError, TargetError, load_pool
from openrtc_core import cli as cli_module
from openrtc_core.cli import PLUGIN_COMMANDS, PluginCommand, build_app, main, run_livekit
from openrtc_core.plugins import PluginHost

ROOT = Path(__file__).resolve().parent.parent
NO_LIVEKIT_ENV = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")

BROKEN_TARGETS = {
    "syntax.py": (
        "from openrtc_core import AgentPool\n\ndef broken(:\n    pass\n",
        "syntax.py:3: SyntaxError: invalid syntax",
    ),
    "imports.py": (
        "from openrtc_core import AgentPool\nimport no_such_module_for_openrtc\n",
        "imports.py:2: ModuleNotFoundError: No module named 'no_such_module_for_openrtc'",
    ),
    "raises.py": (
        "from openrtc_core import AgentPool\n\n\ndef setup():\n    return {}['key']\n\n\n"
        "pool = setup()\n",
        "raises.py:5: KeyError: 'key'",
    ),
    "empty.py": (
        "from openrtc_core import AgentPool\npool = AgentPool()\n",
        "empty.py: the pool has no agents: register at least one with pool.add",
    ),
    "typo.py": (
        "from openrtc_core import AgentPool\n\npool = AgentPool(isolaton='thread')\n",
        "typo.py:3: PoolConfigError:",
    ),
}


def write_target(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text(BROKEN_TARGETS[name][0], encoding="utf-8")
    return path


def run_openrtc(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in NO_LIVEKIT_ENV}
    return subprocess.run(
        [sys.executable, "-m", "openrtc_core", *args],
        cwd=cwd,
        env={**base, "COLUMNS": "80", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    return [line for line in output.splitlines() if line.startswith("error: ")]


LIVEKIT = {
    "LIVEKIT_URL": "ws://127.0.0.1:9",
    "LIVEKIT_API_KEY": "key",
    "LIVEKIT_API_SECRET": "secret",
}


@pytest.mark.parametrize("name", sorted(BROKEN_TARGETS))
def test_start_prints_one_error_line_with_file_and_line(tmp_path: Path, name: str) -> None:
    write_target(tmp_path, name)
    done = run_openrtc("start", name, cwd=tmp_path, env=LIVEKIT)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = error_lines(done)
    assert len(lines) == 1, done.stdout + done.stderr
    assert BROKEN_TARGETS[name][1] in lines[0]


@pytest.mark.parametrize("name", ["syntax.py", "empty.py"])
def test_simulate_reports_the_same_error(tmp_path: Path, name: str) -> None:
    path = write_target(tmp_path, name)
    done = run_openrtc("simulate", str(path))
    assert done.returncode == 1, done.stdout + done.stderr
    output = " ".join((done.stdout + done.stderr).split())
    assert "Traceback" not in output, output
    assert "error:" in output
    assert BROKEN_TARGETS[name][1] in output


@pytest.mark.parametrize("name", ["syntax.py", "imports.py", "raises.py", "typo.py"])
def test_load_pool_raises_target_error_naming_file_and_line(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_target(tmp_path, name)
    with pytest.raises(TargetError) as raised:
        load_pool(name)
    assert str(raised.value).startswith(BROKEN_TARGETS[name][1])


def test_module_target_error_points_into_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "brokenpkg_openrtc"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "voice.py").write_text("x = 1\nimport no_such_module_for_openrtc\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TargetError, match=r"voice\.py:2: ModuleNotFoundError"):
        load_pool("brokenpkg_openrtc.voice:pool")


def test_directory_target_error_names_the_agent_file(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    write_target(tmp_path / "agents", "imports.py")
    with pytest.raises(TargetError, match=r"imports\.py:2: ModuleNotFoundError"):
        load_pool(str(tmp_path / "agents"))


def test_an_empty_pool_fails_at_load(tmp_path: Path) -> None:
    path = write_target(tmp_path, "empty.py")
    with pytest.raises(PoolConfigError, match="the pool has no agents"):
        load_pool(str(path))


def test_pool_run_path_prints_one_error_line_for_an_empty_pool(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # pool.run() goes through run_livekit.
    with pytest.raises(SystemExit) as exited:
        run_livekit(
            AgentPool(), ["start", "--url", "ws://x", "--api-key", "k", "--api-secret", "s"]
        )
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the pool has no agents")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("verb", ["start", "dev", "connect"])
def test_connecting_verbs_without_a_url_name_the_env_vars(verb: str) -> None:
    done = run_openrtc(verb, "examples/pool.py")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = error_lines(done)
    assert len(lines) == 1, done.stdout + done.stderr
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "--url"):
        assert name in lines[0]


def test_missing_credentials_counts_flags_env_and_server_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in NO_LIVEKIT_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIVEKIT_API_KEY", "k")
    pool = AgentPool(server_options={"api_secret": "s"})
    assert [c.env for c in cli_module.missing_credentials([], pool)] == ["LIVEKIT_URL"]
    assert cli_module.missing_credentials(["--url=ws://x"], pool) == []
    assert cli_module.missing_credentials(["--url", "ws://x"], pool) == []


def test_unknown_disabled_plugin_names_are_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("openrtc_core.discovery._IMPORTED", {})
    monkeypatch.setenv("OPENRTC_DISABLE_PLUGINS", "nonexistent-plugin,openrtc.prewarm")
    host = PluginHost()
    with caplog.at_level(logging.WARNING, logger="openrtc.plugins"):
        host.load_entry_points()
    warnings = [r.getMessage() for r in caplog.records if "names no plugin" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert "nonexistent-plugin" in warnings[0]
    assert "openrtc.prewarm," not in warnings[0].split("; ")[0]  # a known name is not unknown
    assert "testing" in warnings[0]  # the known names are listed
    # Once per process: another host with the same settings says nothing.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="openrtc.plugins"):
        PluginHost().load_entry_points()
    assert "names no plugin" not in caplog.text


def test_simulate_disabled_says_which_plugin_provides_it() -> None:
    done = run_openrtc("--disable-plugins", "testing", "simulate", "examples/pool.py")
    assert done.returncode == 1
    lines = error_lines(done)
    assert lines == [
        "error: 'simulate' is provided by openrtc-testing (plugin 'testing'), which is "
        "disabled by OPENRTC_DISABLE_PLUGINS or --disable-plugins"
    ]


def test_a_plugin_command_of_a_missing_distribution_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hint = PluginCommand(distribution="openrtc-frob", entry_point="frob", commands=("frobnicate",))
    monkeypatch.setitem(PLUGIN_COMMANDS, "frobnicate", hint)
    assert main(["frobnicate", "x"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: 'frobnicate' is provided by openrtc-frob (pip install openrtc-frob), "
        "which is not installed"
    )


def test_bad_target_in_process_has_no_traceback(tmp_path: Path) -> None:
    path = write_target(tmp_path, "imports.py")
    result = CliRunner().invoke(build_app(), ["start", str(path)], catch_exceptions=False)
    assert result.exit_code == 1
    assert "imports.py:2: ModuleNotFoundError" in result.output
    assert "Traceback" not in result.output
