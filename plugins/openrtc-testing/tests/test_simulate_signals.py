"""``openrtc simulate`` stopped by SIGTERM, SIGINT or SIGHUP mid-run: every process it started
is gone, the JSON holds the calls that finished and names the calls cut, and the terminal
says so, without a traceback. Run both ways: one worker in simulate's own process (with
process isolation, so its job processes form a tree) and ``--workers 2`` (a deploy
controller, its generation and the workers). A SIGKILL of simulate ends the tree too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import pytest
from test_simulate_workers import HAS_SUPERVISOR, ROOT, simulate_command, simulate_env

CALLS: Final = 100
CONCURRENCY: Final = 4
HOLD_S: Final = 5
"""Each call stays up this long after its last turn: calls are in flight when the signal
comes, however slow the machine."""
TREE_ENV: Final = "OPENRTC_TEST_TREE"
"""Set for simulate only; every process it starts inherits it, however re-parented."""
STARTED: Final = "session started"
"""What a worker logs (--verbose) as each call's session starts."""
UP_S: Final = 180.0
GONE_S: Final = 60.0
"""Bounds on waits for a condition (not figures measured): simulate up, its tree gone."""

needs_supervisor = pytest.mark.skipif(
    not HAS_SUPERVISOR, reason="needs openrtc-workers (the supervisor)"
)
STOPS: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
IN_PROCESS: Final[tuple[str, ...]] = ()
JOB_PROCESSES: Final = ("--isolation", "process")
"""In simulate's process, each call in a job process of livekit's: a tree to end. Tried with
SIGTERM only: livekit ignores SIGINT for the instant it starts a job process (so that the
child starts with Ctrl-C ignored), and a SIGINT landing then is lost."""
WORKERS: Final = ("--workers", "2")
CASES: Final = [
    *(pytest.param(IN_PROCESS, sig, id=f"in-process-{sig.name}") for sig in STOPS),
    pytest.param(JOB_PROCESSES, signal.SIGTERM, id="job-processes-SIGTERM"),
    *(
        pytest.param(WORKERS, sig, id=f"workers-{sig.name}", marks=needs_supervisor)
        for sig in STOPS
    ),
]


def wait_until(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what()}")
        time.sleep(0.1)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting to be reaped has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, read from /proc."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found |= {child} | descendants(child)
    return found


def marked(marker: str) -> set[int]:
    """Every live process whose environment carries the test's marker."""
    needle = f"{TREE_ENV}={marker}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdecimal():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and alive(int(entry.name)):
            found.add(int(entry.name))
    return found


class Simulate:
    """``openrtc simulate`` running in a session of its own, output to files."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.marker = uuid.uuid4().hex
        self.json = tmp_path / "figures.json"
        self.out = tmp_path / "stdout.txt"
        self.err = tmp_path / "stderr.txt"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                simulate_command(
                    *args,
                    "--calls",
                    str(CALLS),
                    "--concurrency",
                    str(CONCURRENCY),
                    "--turns",
                    "2",
                    "--hold",
                    str(HOLD_S),
                    "--verbose",
                    "--json",
                    str(self.json),
                ),
                cwd=ROOT,
                env=simulate_env({TREE_ENV: self.marker}),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def wait_for_sessions(self, count: int) -> None:
        """Until `count` calls' sessions started (--verbose logs each), simulate running."""

        def started() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"simulate exited early:\n{self.output()[-3000:]}")
            return self.output().count(STARTED) >= count

        wait_until(started, UP_S, lambda: f"{count} sessions started:\n{self.output()[-3000:]}")

    def wait_tree_gone(self, tree: set[int]) -> None:
        def left() -> set[int]:
            return {pid for pid in tree if alive(pid)} | marked(self.marker)

        wait_until(lambda: not left(), GONE_S, lambda: f"still running: {sorted(left())}")

    def stop_everything(self) -> None:
        """After the test: nothing it started may outlive it, whatever the test found."""
        for pid in marked(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[..., Simulate]]:
    """A factory of running simulations, each cleaned up after the test."""
    runs: list[Simulate] = []

    def start(*args: str) -> Simulate:
        run = Simulate(tmp_path, *args)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()
        run.stop_everything()


@pytest.mark.parametrize(("mode", "sig"), CASES)
def test_a_stop_signal_ends_the_tree_and_reports_what_finished_and_what_was_cut(
    started: Callable[..., Simulate], mode: tuple[str, ...], sig: signal.Signals
) -> None:
    run = started(*mode)
    # One call more than run at once has started: at least one finished; others are live
    # (each holds for HOLD_S after its turns).
    run.wait_for_sessions(CONCURRENCY + 1)
    tree = descendants(run.pid)
    if mode == WORKERS:
        assert len(tree) >= 4, tree  # the controller, its generation and the two workers
    elif mode == JOB_PROCESSES:
        assert tree, "no job process to watch"

    os.kill(run.pid, sig)
    status = run.process.wait(timeout=UP_S)
    run.wait_tree_gone(tree)

    output = run.output()
    said = f"simulate said:\n{output[-3000:]}"
    assert status == 128 + sig, said
    assert "exception was never retrieved" not in output, said
    assert "Traceback" not in output, said
    assert run.json.exists(), said
    figures = json.loads(run.json.read_text())
    interrupted = figures["interrupted"]
    assert interrupted["signal"] == sig.name
    finished = figures["calls"]
    assert finished, said
    assert figures["call_count"] == len(finished)
    assert {call["outcome"] for call in finished} == {"completed"}, finished
    cut = interrupted["cut"]
    assert cut, said
    # Named by job id: the job a worker took, or the one still being offered.
    assert all(call["job_id"].startswith("AJ_") for call in cut), cut
    assert any(call["accepted"] for call in cut), cut
    assert not {c["job_id"] for c in cut} & {c["job_id"] for c in finished}
    assert len(finished) + len(cut) + interrupted["not_placed"] == CALLS
    # The terminal says it, naming each cut call.
    summary = run.out.read_text()
    assert f"interrupted by {sig.name}: {len(finished)} call(s) finished" in summary
    for call in cut:
        assert call["job_id"] in summary


@needs_supervisor
def test_a_killed_simulate_takes_its_supervisor_and_workers_with_it(
    started: Callable[..., Simulate],
) -> None:
    run = started("--workers", "2")
    run.wait_for_sessions(1)
    tree = descendants(run.pid)
    assert len(tree) >= 4, tree
    os.kill(run.pid, signal.SIGKILL)
    run.process.wait(timeout=UP_S)
    # No signal handler runs: the kernel's parent-death signal drains each level.
    run.wait_tree_gone(tree)
