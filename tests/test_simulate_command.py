"""``openrtc simulate``: the README's main command, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from openrtc_testing.simulate import parse_pause

ROOT = Path(__file__).resolve().parent.parent


def simulate(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openrtc_core", "simulate", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_paced_calls_complete_and_report_figures(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    done = simulate(
        "examples/pool.py",
        "--calls",
        "6",
        "--concurrency",
        "6",
        "--turns",
        "2",
        "--pause",
        "0.1,0.3",
        "--json",
        str(out),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert figures["call_count"] == len(figures["calls"]) == 6
    assert figures["failures"] == 0
    assert sum(agent["turns"] for agent in figures["agents"].values()) == 12
    # Each call waits at least 0.1 s before each of its two lines.
    assert figures["wall_s"] >= 0.2


ONLY_TESTING = {"OPENRTC_DISABLE_PLUGINS": "reload,tenancy,workers,deploy"}
"""What the README's main command installs: the core and openrtc-testing, no other plugin."""


def test_the_main_command_runs_with_only_the_testing_plugin(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    done = simulate("examples/pool.py", "--calls", "2", "--json", str(out), env=ONLY_TESTING)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(out.read_text())["failures"] == 0
    # Asking for what a missing plugin provides names it, in one line.
    done = simulate("examples/pool.py", "--calls", "1", "--reload", env=ONLY_TESTING)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "create_server(reload=) is provided by openrtc-reload" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2", 2.0), ("0", 0.0), ("1,4", (1.0, 4.0)), (" 1.5 , 2 ", (1.5, 2.0))],
)
def test_parse_pause(text: str, expected: float | tuple[float, float]) -> None:
    assert parse_pause(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("soon", "not a number of seconds"),
        ("-1", "give 0 to 3600 seconds"),
        ("1,2,3", "give 0 to 3600 seconds"),
        ("4,1", "low end is above its high end"),
    ],
)
def test_parse_pause_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_pause(text)


def test_bad_pause_is_a_usage_error_naming_the_option() -> None:
    done = simulate("examples/pool.py", "--pause", "4,1")
    assert done.returncode == 2
    assert "--pause" in done.stderr
    assert "Traceback" not in done.stderr
