"""openrtc_core.processes against real processes: a tree of children, its PSS, how each ended."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from openrtc_core import (
    child_pids,
    exit_reason,
    process_tree,
    pss_mib,
    smaps_rollup,
    tree_pss_mib,
)

GRANDCHILD_MIB = 64
"""What the grandchild writes to its own memory: private pages, counted whole in its PSS."""

# The child starts the grandchild from a second thread, which lives on: the kernel lists a
# child under the thread that started it (a thread's children pass to another on its exit).
TREE = f"""
import subprocess, sys, threading, time
def spawn():
    code = (
        "import sys, time; block = b'x' * ({GRANDCHILD_MIB} << 20); "
        "print('up', flush=True); time.sleep(60)"
    )
    grand = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert grand.stdout.readline() == "up\\n"
    print(grand.pid, flush=True)
    time.sleep(60)
thread = threading.Thread(target=spawn)
thread.start()
thread.join()
"""


def spawn(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


@pytest.fixture
def tree() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A child and its grandchild (started from one of the child's threads), both running."""
    child = spawn(TREE)
    assert child.stdout is not None
    grandchild = int(child.stdout.readline())
    try:
        yield child, grandchild
    finally:
        for pid in (grandchild, child.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        child.wait()


def test_the_tree_lists_a_process_then_its_descendants(
    tree: tuple[subprocess.Popen[str], int],
) -> None:
    child, grandchild = tree
    assert child_pids(child.pid) == [grandchild]
    assert child_pids(grandchild) == []
    assert process_tree(child.pid) == [child.pid, grandchild]
    mine = process_tree(os.getpid())
    assert mine[0] == os.getpid()
    assert mine.index(child.pid) < mine.index(grandchild)


def test_the_pss_of_a_tree_is_its_members_pss(tree: tuple[subprocess.Popen[str], int]) -> None:
    child, grandchild = tree
    own, grand = pss_mib(child.pid), pss_mib(grandchild)
    assert own is not None and own > 1  # an interpreter is a few MiB at least
    assert grand is not None and grand > GRANDCHILD_MIB
    total = tree_pss_mib(child.pid)
    assert total is not None
    # Read a moment apart, the figures move by the pages touched meanwhile, never by a process.
    assert total == pytest.approx(own + grand, abs=1.0)
    assert total - own > GRANDCHILD_MIB
    # The memory of the process alone does not count its children.
    assert own < GRANDCHILD_MIB


def test_smaps_rollup_gives_every_size_in_mib(tree: tuple[subprocess.Popen[str], int]) -> None:
    _, grandchild = tree
    rollup = smaps_rollup(grandchild)
    assert rollup is not None
    assert {"Rss", "Pss", "Pss_Anon", "Pss_File"} <= set(rollup)
    # The header line (the address range) is no size.
    assert all(name[:1].isalpha() for name in rollup)
    assert rollup["Rss"] >= rollup["Pss"] >= rollup["Pss_Anon"] > GRANDCHILD_MIB
    assert pss_mib(grandchild) == pytest.approx(rollup["Pss"], abs=1.0)


def test_a_killed_process_has_no_memory_and_no_tree(
    tree: tuple[subprocess.Popen[str], int],
) -> None:
    child, grandchild = tree
    os.kill(grandchild, signal.SIGKILL)
    os.kill(child.pid, signal.SIGKILL)
    # Not yet reaped, the child is a zombie: no memory to read.
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    assert pss_mib(child.pid) is None
    assert smaps_rollup(child.pid) is None
    assert tree_pss_mib(child.pid) is None
    child.wait()
    assert pss_mib(child.pid) is None
    assert tree_pss_mib(child.pid) is None
    assert child_pids(child.pid) == []
    assert process_tree(child.pid) == [child.pid]


def test_a_process_not_ours_to_read_has_no_memory() -> None:
    # In a container, pid 1 belongs to a namespace the tests cannot read; elsewhere it may
    # be readable (as root), and then there is nothing to show.
    try:
        with open("/proc/1/smaps_rollup", encoding="ascii") as rollup:
            rollup.read()
    except PermissionError:
        assert pss_mib(1) is None
        assert smaps_rollup(1) is None
    else:
        pytest.skip("this user may read pid 1's memory")


def ended(code: str, sig: int | None) -> tuple[int, int]:
    """Run `code` twice to its end, signalled with `sig` once it is up: the return code
    ``subprocess`` gives, and the wait status ``os.waitpid`` gives."""
    if sig is not None:
        code = f"import time; print('up', flush=True); {code}"
    process = spawn(code)
    assert process.stdout is not None
    if sig is not None:
        assert process.stdout.readline() == "up\n"
        os.kill(process.pid, sig)
    returncode = process.wait()
    process.stdout.close()
    read, write = os.pipe()
    argv = [sys.executable, "-c", code]
    pid = os.posix_spawn(
        sys.executable, argv, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, write, 1)]
    )
    os.close(write)
    with os.fdopen(read) as out:
        if sig is not None:
            assert out.readline() == "up\n"
            os.kill(pid, sig)
        _, status = os.waitpid(pid, 0)
    return returncode, status


@pytest.mark.parametrize(
    ("code", "sig", "words"),
    [
        ("pass", None, "exit status 0"),
        ("raise SystemExit(3)", None, "exit status 3"),
        ("import os; os._exit(7)", None, "exit status 7"),
        ("time.sleep(60)", signal.SIGTERM, "killed by SIGTERM"),
        ("time.sleep(60)", signal.SIGKILL, "killed by SIGKILL"),
        # A real-time signal has no name in signal.Signals: its number says it.
        ("time.sleep(60)", signal.SIGRTMIN + 1, f"killed by signal {signal.SIGRTMIN + 1}"),
    ],
)
def test_exit_reason_says_how_a_process_ended(code: str, sig: int | None, words: str) -> None:
    returncode, status = ended(code, sig)
    assert exit_reason(returncode) == words
    assert exit_reason(os.waitstatus_to_exitcode(status)) == words
