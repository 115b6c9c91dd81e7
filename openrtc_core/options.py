"""Pool settings and session options: checked against AgentSession, merged in one place."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any, Final

from livekit.agents import AgentSession

from .errors import PoolConfigError

# Keywords of AgentSession the pool manages itself.
_MANAGED = frozenset({"self", "loop"})

POOL_SETTINGS: Final = frozenset(
    {
        "agent_name",
        "isolation",
        "max_sessions",
        "greeting",
        "job_memory_limit_mb",
        "job_memory_warn_mb",
        "server_options",
        "code_version",
        "plugins",
        "load_plugins",
    }
)
"""Keyword arguments of ``AgentPool`` that are settings, not session defaults."""

SERVER_KEYWORDS_OWNED: Final = frozenset(
    {
        "setup_fnc",
        "job_executor_type",
        "job_memory_limit_mb",
        "job_memory_warn_mb",
        "load_fnc",
        "load_threshold",
    }
)
"""``AgentServer`` keywords the pool and its isolation backend set; users may not.

``num_idle_processes`` stays the user's for process isolation (warm job processes); the
coroutine backend sets it itself, as its share of livekit's load estimate.
"""


@cache
def session_keywords() -> frozenset[str]:
    """Every keyword argument ``AgentSession.__init__`` accepts, from its signature."""
    params = inspect.signature(AgentSession.__init__).parameters
    return frozenset(
        name
        for name, p in params.items()
        if name not in _MANAGED and p.kind is inspect.Parameter.KEYWORD_ONLY
    )


def _hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def check_session_options(
    options: Mapping[str, Any], *, where: str, pool_settings: bool = False
) -> dict[str, Any]:
    """Return `options` as a dict, or raise naming each keyword AgentSession does not take.

    `pool_settings` says the options were given to ``AgentPool(...)``, where a keyword may
    also be a misspelt pool setting: the message then lists those too.
    """
    known = session_keywords()
    unknown = sorted(set(options) - known)
    if not unknown:
        return dict(options)
    candidates = known | POOL_SETTINGS if pool_settings else known
    hints = ", ".join(_hint(name, candidates) for name in unknown)
    accepted = f"livekit's AgentSession accepts: {', '.join(sorted(known))}."
    if pool_settings:
        accepted = f"pool settings are: {', '.join(sorted(POOL_SETTINGS))}; " + accepted
    kind = "option" if pool_settings else "session option"
    raise PoolConfigError(f"{where}: unknown {kind} {hints}. {accepted[0].upper()}{accepted[1:]}")


def check_pool_settings(*, max_sessions: object, server_options: Mapping[str, Any]) -> None:
    owned = sorted(set(server_options) & SERVER_KEYWORDS_OWNED)
    if owned:
        raise PoolConfigError(
            f"server_options: {', '.join(owned)} are set by the pool; use "
            "AgentPool(isolation=..., job_memory_limit_mb=..., job_memory_warn_mb=...) "
            "and the prewarm hook instead."
        )
    if max_sessions is not None and (
        isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1
    ):
        raise PoolConfigError(
            f"max_sessions={max_sessions!r}: use a whole number of at least 1, or None for "
            "the backend's default (50 for coroutine isolation)."
        )


def merge_options(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """The one merge of session options: later layers replace earlier ones key by key.

    Layers, in the order the session factory applies them: pool defaults, the agent's
    overrides, then plugin contributions.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    return merged
