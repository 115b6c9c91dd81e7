"""The help a new user reads at 80 columns: livekit's options with their env vars, types,
defaults and choices; a usage line that says TARGET; --version; shell completion; tables
that do not cut plugin names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from openrtc_core import __version__
from openrtc_core.cli import LIVEKIT_VERBS, build_app, livekit_options
from openrtc_core.plugins import PluginHost

ROOT = Path(__file__).resolve().parent.parent
VERBS_WITH_TARGET = [verb for verb in LIVEKIT_VERBS if verb != "download-files"]


def help_at_80(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "openrtc_core", *args],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    return done.stdout


def words(text: str) -> str:
    """The help's text with the box drawing and line breaks taken out."""
    for ch in "│╭╮╰╯─":
        text = text.replace(ch, " ")
    return " ".join(text.split())


@pytest.mark.parametrize("verb", ["start", "dev", "connect"])
def test_connecting_verbs_show_livekit_env_vars_and_defaults(verb: str) -> None:
    text = words(help_at_80(verb, "--help"))
    assert "livekit options (passed through)" in text
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "--api-secret"):
        assert name in text, text
    # --log-level's choices, shown as livekit shows them.
    assert "--log-level" in text
    assert "critical" in text


def test_start_shows_its_log_level_default_and_drain_timeout() -> None:
    text = words(help_at_80("start", "--help"))
    assert "[default: INFO]" in text
    assert "--drain-timeout" in text
    assert "LIVEKIT_LOG_LEVEL" in text


def test_dev_and_start_offer_reload_naming_the_plugin() -> None:
    for verb in ("dev", "start"):
        text = words(help_at_80(verb, "--help"))
        assert "--reload" in text and "--no-reload" in text
        assert "openrtc-reload" in text
    assert "--reload" not in words(help_at_80("console", "--help"))


@pytest.mark.parametrize("verb", VERBS_WITH_TARGET)
def test_usage_line_says_target(verb: str) -> None:
    result = CliRunner().invoke(build_app(), [verb, "--help"], terminal_width=80)
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert f"openrtc {verb} [OPTIONS] TARGET" in usage
    assert "{" not in usage


def test_livekit_options_are_help_only() -> None:
    # Shown in the help, never parsed by our command: livekit parses them.
    group: Any = typer.main.get_command(build_app())
    start = group.commands["start"]
    ctx = start.make_context("start", ["app.py", "--url", "ws://x"])
    assert "url" not in {param.name for param in start.get_params(ctx)}
    assert ctx.args == ["--url", "ws://x"]
    assert "url" in {param.name for param in livekit_options("start")}
    assert "reload" not in {param.name for param in livekit_options("dev")}


def test_version_flag() -> None:
    result = CliRunner().invoke(build_app(), ["--version"])
    assert result.exit_code == 0
    assert f"openrtc-core {__version__}, livekit-agents 1.8" in result.output


def test_completion_options_are_offered() -> None:
    text = help_at_80("--help")
    assert "--install-completion" in text
    assert "--show-completion" in text
    assert "--version" in text


def test_plugin_names_are_not_cut_at_80_columns() -> None:
    host = PluginHost()
    host.load_entry_points()
    text = help_at_80("plugins")
    assert "…" not in text
    for record in host.records:
        assert record.name in text
        for hook in record.hooks:
            assert hook in text


def test_top_level_help_fits_80_columns() -> None:
    text = words(help_at_80("--help"))
    for verb in LIVEKIT_VERBS:
        assert verb in text
