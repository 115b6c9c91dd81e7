"""Session options: pool defaults, per-agent overrides, checked against AgentSession."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from functools import cache
from typing import Any

from livekit.agents import AgentSession

from .errors import PoolConfigError

# Keywords of AgentSession the pool manages itself.
_MANAGED = frozenset({"self", "loop"})


@cache
def session_keywords() -> frozenset[str]:
    """Every keyword argument ``AgentSession.__init__`` accepts, from its signature."""
    params = inspect.signature(AgentSession.__init__).parameters
    return frozenset(
        name
        for name, p in params.items()
        if name not in _MANAGED and p.kind is inspect.Parameter.KEYWORD_ONLY
    )


def check_session_options(options: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """Return `options` as a dict, or raise naming each keyword AgentSession does not take."""
    known = session_keywords()
    unknown = sorted(set(options) - known)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise PoolConfigError(
            f"{where}: unknown session option {', '.join(hints)}. "
            "Options are passed to livekit's AgentSession, which accepts: "
            f"{', '.join(sorted(known))}."
        )
    return dict(options)


def merge_options(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers replace earlier ones key by key."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    return merged
