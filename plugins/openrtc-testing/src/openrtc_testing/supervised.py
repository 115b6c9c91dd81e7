"""``python -m openrtc_testing.supervised TARGET [options] [start options]``: ``openrtc start``
with simulation on, for a supervisor's workers (``--workers N``) against a loopback server.

Each worker gets the simulation plugin, so it runs the simulated calls the loopback server
at ``LIVEKIT_URL`` dispatches, with providers that need keys or a network swapped for
scripted ones as in every simulated call. ``openrtc simulate --workers N``, the benchmarks
and the tests of openrtc-workers start their supervisor this way; a production
``openrtc start`` never simulates.

The pool is loaded as ``openrtc simulate`` loads it: ``--isolation NAME`` and
``--entry-points`` (anywhere after TARGET) are read here; every other option goes to
``start``, whose run options (``--workers``, ``--tenants``, ...) the plugins declare.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import attrs

from openrtc_core import OpenRTCError, drain_when_parent_dies, load_pool

from .simulation import Simulation
from .supervising import PARENT_ENV

URL_ENV = "LIVEKIT_URL"
USAGE = (
    "usage: LIVEKIT_URL=ws://127.0.0.1:PORT python -m openrtc_testing.supervised "
    "TARGET [--isolation NAME] [--entry-points] [openrtc start options]"
)


@attrs.frozen
class Loading:
    """How the pool is loaded (``load_pool``'s options), and what is left for ``start``."""

    isolation: str | None = None
    entry_points: bool = False
    rest: tuple[str, ...] = ()


def split_options(args: Sequence[str]) -> Loading:
    """Take the pool-loading options out of `args` (``--opt VALUE`` or ``--opt=VALUE``).

    :raises SystemExit: an option that needs a value has none.
    """
    values: dict[str, str] = {}
    entry_points = False
    rest: list[str] = []
    items = iter(args)
    for arg in items:
        flag, eq, value = arg.partition("=")
        if arg == "--entry-points":
            entry_points = True
        elif flag == "--isolation":
            if not eq:
                value = next(items, "")
            if not value:
                raise SystemExit(f"error: {flag} needs a value\n{USAGE}")
            values[flag] = value
        else:
            rest.append(arg)
    return Loading(
        isolation=values.get("--isolation"),
        entry_points=entry_points,
        rest=tuple(rest),
    )


def main(argv: Sequence[str] | None = None) -> None:
    # Taken out: what this process starts has a parent of its own.
    parent = os.environ.pop(PARENT_ENV, "")
    if parent.isdecimal():
        drain_when_parent_dies(int(parent))
    args = list(sys.argv[1:] if argv is None else argv)
    url = os.environ.get(URL_ENV, "")
    if not args or not url:
        raise SystemExit(USAGE)
    target, loading = args[0], split_options(args[1:])
    try:
        pool = load_pool(
            target,
            entry_points=loading.entry_points,
            isolation=loading.isolation,
        )
    except OpenRTCError as exc:
        raise SystemExit(f"error: {exc}") from None
    pool.run(["start", *loading.rest], prog_name="openrtc", plugins=[Simulation(url)])


if __name__ == "__main__":
    main()
