"""The controller's parts on their own: the control socket, the probe, reading a failed
generation's reason from its log, the status text."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from openrtc_core import PoolConfigError
from openrtc_deploy import probe
from openrtc_deploy.client import ControlError, control_path, default_control_path, request
from openrtc_deploy.commands import format_status
from openrtc_deploy.control import listen, remove
from openrtc_deploy.generation import LogTee
from openrtc_deploy.restarts import RestartBackoff


def tee_of(lines: list[str]) -> LogTee:
    read_end, write_end = os.pipe()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.write(write_end, ("\n".join(lines) + "\n").encode())
    os.close(write_end)
    tee = LogTee(read_end, devnull)
    tee.read()
    tee.close()
    os.close(devnull)
    return tee


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (["loading", "error: could not import app.py: boom"], "could not import app.py: boom"),
        (
            ["Traceback (most recent call last):", '  File "x.py"', "RuntimeError: prewarm"],
            "RuntimeError: prewarm",
        ),
        (
            ['{"level": "ERROR", "message": "failed to connect: 401"}', "{}"],
            "failed to connect: 401",
        ),
        (['{"level": "INFO", "message": "fine"}'], ""),
    ],
)
def test_a_failed_generation_s_reason_is_read_from_its_last_lines(
    lines: list[str], reason: str
) -> None:
    assert tee_of(lines).reason() == reason


def test_the_control_socket_is_private_and_not_taken_twice(tmp_path: Path) -> None:
    path = tmp_path / "run" / "control.sock"
    server = listen(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with pytest.raises(PoolConfigError, match="another openrtc controller is running there"):
        listen(path)
    remove(path, server)
    assert not path.exists()


def test_a_socket_left_by_a_dead_controller_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nothing answers
    server = listen(path)
    remove(path, server)


def test_a_file_that_is_not_a_socket_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    path.write_text("mine")
    with pytest.raises(PoolConfigError, match="not a socket"):
        listen(path)
    assert path.read_text() == "mine"


def test_the_default_path_is_private_to_the_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENRTC_CONTROL", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert f"openrtc-{os.getuid()}" in str(default_control_path())
    monkeypatch.setenv("OPENRTC_CONTROL", "/run/x.sock")
    assert control_path(None) == Path("/run/x.sock")
    assert control_path("/elsewhere.sock") == Path("/elsewhere.sock")


def test_no_controller_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ControlError, match="no control socket at"):
        list(request(tmp_path / "none.sock", {"op": "status"}))
    assert probe.main(["ready", "--control", str(tmp_path / "none.sock")]) == 1
    assert "no control socket" in capsys.readouterr().err
    assert probe.main(["bogus"]) == 2
    assert probe.main(["ready", "--control"]) == 2


def test_the_status_in_words() -> None:
    text = format_status(
        {
            "controller_pid": 10,
            "control": "/run/c.sock",
            "state": "deploying",
            "ready": True,
            "workers_per_generation": 2,
            "generations": [
                {
                    "generation": 1,
                    "version": "abc",
                    "version_source": "git",
                    "state": "draining",
                    "pid": 11,
                    "workers": [{"registered": True}, {"registered": True}],
                    "live_calls": 3,
                    "calls_taken": 40,
                    "drain": {"for_s": 12.0, "calls_left": 3, "calls_at_start": 9},
                    "cut": [],
                    "failure": "",
                    "exit": "",
                }
            ],
        }
    )
    assert "deploying (ready), 2 worker(s) per generation" in text
    assert "generation 1 abc (git): draining, pid 11, 2/2 worker(s) registered" in text
    assert "3 of 9 call(s) left" in text


def test_restart_delays_double_to_a_cap_and_start_over_after_a_healthy_run() -> None:
    backoff = RestartBackoff(first_delay_s=0.5, max_delay_s=4.0, healthy_s=60.0)
    delays = [backoff.delay(float(t), served_s=1.0) for t in range(7)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.crash_looping(6.0) and backoff.recent(6.0) == 7
    assert backoff.delay(100.0, served_s=None) == 4.0  # a start that failed: no reset
    assert backoff.delay(500.0, served_s=60.0) == 0.0  # it served a while: at once again
    assert not backoff.crash_looping(500.0)
