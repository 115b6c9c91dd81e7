"""Processes as Linux shows them in /proc: a process tree, its memory (PSS), why one ended.

A supervisor's memory limit, the simulated calls and the benchmarks all read these; one
reader keeps their figures comparable. Every figure is in MiB (the kernel's ``kB`` is KiB),
never rounded here.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Final

PROC: Final = Path("/proc")


def child_pids(pid: int) -> list[int]:
    """The live direct children of `pid`, of all its threads; none once it is gone."""
    found: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            # A thread that ended since the listing has no file any more: it has no children.
            found.extend(int(part) for part in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """`pid` first (even once it is gone), then its live descendants, each after its parent."""
    tree: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(child_pids(current))
    return tree


def smaps_rollup(pid: int) -> dict[str, float] | None:
    """Every size in ``/proc/PID/smaps_rollup`` (``Rss``, ``Pss``, ``Pss_Anon``, ...), in MiB.

    None when it cannot be read: the process is gone or a zombie, or it is not ours to read
    (another user's, or outside this container's namespace).
    """
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return None
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        size = rest.split()
        # The first line names the address range, not a size.
        if len(size) == 2 and size[1] == "kB" and size[0].isdigit():
            found[name] = int(size[0]) / 1024
    return found


def pss_mib(pid: int) -> float | None:
    """The proportional set size of `pid` alone, in MiB; None when unreadable (see
    :func:`smaps_rollup`).

    PSS splits each shared page among the processes mapping it, so pages a worker shares with
    its supervisor (the prewarmed heap) count a fraction in each, not whole as RSS does.
    """
    rollup = smaps_rollup(pid)
    return None if rollup is None else rollup.get("Pss")


def tree_pss_mib(pid: int) -> float | None:
    """The PSS of `pid` and its descendants, in MiB; None when `pid`'s own is unreadable.

    A descendant that ends between the listing and the reading counts nothing.
    """
    tree = process_tree(pid)
    own = pss_mib(tree[0])
    if own is None:
        return None
    return own + sum(pss_mib(member) or 0.0 for member in tree[1:])


def exit_reason(code: int) -> str:
    """How a process ended, in words: ``exit status 3``, ``killed by SIGKILL``.

    `code` is an exit code as ``subprocess`` and ``multiprocessing`` give it: negative for the
    signal that killed it. For a status from ``os.wait*``, pass
    ``os.waitstatus_to_exitcode(status)``.
    """
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"
