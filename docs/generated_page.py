"""Write a generated docs page, or check that the committed one is up to date.

Used by the page generators beside it (``gen_hooks.py``, ``gen_cli.py``); each renders its
page and hands it here.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path


def _diff(current: str, wanted: str, page: Path) -> Iterator[str]:
    lines = difflib.unified_diff(
        current.splitlines(keepends=True),
        wanted.splitlines(keepends=True),
        fromfile=f"{page} (committed)",
        tofile=f"{page} (generated)",
    )
    for count, line in enumerate(lines):
        if count == 40:
            yield "...\n"
            return
        yield line


def write_or_check(
    argv: Sequence[str] | None,
    *,
    description: str,
    page: Path,
    render: Callable[[], str],
    command: str,
) -> int:
    """The generator's command line: write `page` from `render()`, or ``--check`` it (exit 1
    with a short diff when it is stale)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the page differs, without writing it"
    )
    parser.add_argument("--page", type=Path, default=page, help=f"the page ({page.name})")
    args = parser.parse_args(argv)
    target: Path = args.page
    wanted = render()
    current = target.read_text(encoding="utf-8") if target.is_file() else ""
    if args.check:
        if current == wanted:
            return 0
        sys.stderr.writelines(_diff(current, wanted, target))
        print(f"{target} is stale: run {command}", file=sys.stderr)
        return 1
    if current != wanted:
        target.write_text(wanted, encoding="utf-8")
        print(f"wrote {target}")
    return 0
