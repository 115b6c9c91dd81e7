"""A worker's memory as the kernel accounts it: PSS of the worker and its job processes."""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def pss_mib(pid: int) -> float | None:
    """The proportional set size of `pid` and its descendants, in MiB; None once it is gone.

    PSS splits each shared page among the processes mapping it, so pages the workers share
    with the supervisor (the prewarmed heap) count a fraction in each, not whole as RSS does.
    """
    own = _pss_kib(pid)
    if own is None:
        return None
    total = own + sum(_pss_kib(child) or 0 for child in descendants(pid))
    return total / 1024


def own_pss_mib(pid: int) -> float | None:
    """The proportional set size of `pid` alone, in MiB; None once it is gone."""
    own = _pss_kib(pid)
    return None if own is None else own / 1024


def _pss_kib(pid: int) -> int | None:
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return None


def descendants(pid: int) -> list[int]:
    """The live descendants of `pid` (livekit's forkserver and job processes)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for child in children(parent):
            found.append(child)
            pending.append(child)
    return found


def children(pid: int) -> list[int]:
    """The live children of `pid`."""
    children: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return children
    for task in tasks:
        try:
            children += [int(part) for part in (task / "children").read_text().split()]
        except OSError:
            continue
    return children
