"""The supervisor's parts on their own: backoff, exit statuses, reports, memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from openrtc_core import PoolConfigError, exit_reason, process_tree, tree_pss_mib
from openrtc_workers.policy import RESTART_DELAY_ENV, RestartPolicy
from openrtc_workers.reports import Reporter, ReportReader


def test_backoff_doubles_per_crash_in_a_row_up_to_its_ceiling() -> None:
    policy = RestartPolicy(first_delay_s=0.5, max_delay_s=4.0)
    assert [policy.delay_s(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_the_first_delay_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RESTART_DELAY_ENV, "0.25")
    assert RestartPolicy.from_env().first_delay_s == 0.25
    for bad in ("0", "-1", "soon", "31"):
        monkeypatch.setenv(RESTART_DELAY_ENV, bad)
        with pytest.raises(PoolConfigError, match=f"{RESTART_DELAY_ENV}='{bad}'"):
            RestartPolicy.from_env()


def test_exit_statuses_in_words() -> None:
    exited = subprocess.run([sys.executable, "-c", "raise SystemExit(3)"], check=False)
    assert exited.returncode == 3
    # The supervisor reads wait statuses (os.waitpid): the exit code in them says it.
    assert exit_reason(os.waitstatus_to_exitcode(3 << 8)) == "exit status 3"
    assert exit_reason(os.waitstatus_to_exitcode(signal.SIGKILL)) == "killed by SIGKILL"
    assert exit_reason(os.waitstatus_to_exitcode(0)) == "exit status 0"


def test_reports_cross_the_pipe_as_whole_events_even_when_split() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    reader = ReportReader(read_end)
    reporter = Reporter(write_end)
    reporter.writer.say("taken", job="AJ_1", agent="desk")
    line = json.dumps({"event": "released", "job": "AJ_1"}).encode() + b"\n"
    os.write(write_end, line[:7])
    assert reader.read() == [{"event": "taken", "job": "AJ_1", "agent": "desk"}]
    os.write(write_end, line[7:] + b"not json\n")
    assert reader.read() == [{"event": "released", "job": "AJ_1"}]
    assert not reader.ended
    os.close(write_end)
    assert reader.read() == []
    assert reader.ended
    os.close(read_end)


def test_a_full_pipe_drops_reports_instead_of_blocking_the_worker() -> None:
    read_end, write_end = os.pipe()
    reporter = Reporter(write_end)
    while reporter.writer.dropped == 0:
        reporter.writer.say("taken", job="AJ_" + "x" * 200, agent="desk")
    assert reporter.writer.dropped == 1
    os.close(read_end)
    os.close(write_end)


def test_memory_is_the_pss_of_a_process_and_its_descendants() -> None:
    code = "import sys, time; print('up', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "up\n"
        own = tree_pss_mib(child.pid)
        assert own is not None and own > 1  # an interpreter is a few MiB at least
        assert child.pid in process_tree(os.getpid())[1:]
        assert (tree_pss_mib(os.getpid()) or 0) > own
    finally:
        child.kill()
        child.wait()
    assert tree_pss_mib(child.pid) is None


def test_openrtc_plugins_says_start_runs_one_worker_per_core() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "openrtc_core", "plugins"],
        # openrtc-deploy's controller, where installed, would be the default.
        env={**os.environ, "COLUMNS": "200", "OPENRTC_DISABLE_PLUGINS": "deploy"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cores = len(os.sched_getaffinity(0))
    assert f"start runs {cores} worker process(es), one per usable core" in out
    assert "under the supervisor 'workers'" in out
