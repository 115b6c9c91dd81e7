"""Hook markers and the contract each hook declares with its spec: what its implementations
may return, and what a failing one does. :mod:`.hookspecs` declares every hook with
:func:`spec`; :mod:`.containment` and the hook reference page read the contracts.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import pluggy

PROJECT = "openrtc"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

F = TypeVar("F", bound=Callable[..., Any])


class OnFailure(enum.Enum):
    """What a failing implementation of a hook does (declared with the hook's spec)."""

    SKIP = "skip"
    """Logged once per plugin and hook (then counted) and treated as None; the other
    implementations still run."""
    FAIL_CLOSED = "fail-closed"
    """What the hook decides for fails, naming the plugin: a job being admitted is refused
    with ``terminate=False`` (another worker may take it), a session being built fails, a
    worker being checked does not start. Never a fallback to the result without the plugin."""
    RAISE = "raise"
    """Not contained: the implementation's exception reaches the caller unchanged."""


@attrs.frozen(kw_only=True)
class HookContract:
    """A hook's declared result and failure policy (see :func:`spec`)."""

    result: type | tuple[type, ...] | None = None
    """What an implementation may return besides None; None: anything (nothing is checked)."""
    awaited: bool = False
    """Implementations return an awaitable that resolves to `result`."""
    on_failure: OnFailure = OnFailure.SKIP

    def describe(self) -> str:
        """One sentence for the hook reference page."""
        meanings = {
            OnFailure.SKIP: (
                "an implementation that raises, or returns the wrong type, is logged (once "
                "per plugin and hook, then counted) and counts as None; the others still run"
            ),
            OnFailure.FAIL_CLOSED: (
                "an implementation that raises, or returns the wrong type, "
                "fails what the hook decides for, naming the plugin (a job being admitted is "
                "refused with terminate=False, a session being built fails, a worker being "
                "checked does not start); it never falls back to the result without it"
            ),
            OnFailure.RAISE: "not contained: the exception reaches the caller unchanged",
        }
        return meanings[self.on_failure]


CONTRACT_ATTRIBUTE = f"{PROJECT}_contract"


def spec(
    *,
    result: type | tuple[type, ...] | None = None,
    awaited: bool = False,
    on_failure: OnFailure = OnFailure.SKIP,
    firstresult: bool = False,
    historic: bool = False,
) -> Callable[[F], F]:
    """Declare a hook: pluggy's spec options, plus its :class:`HookContract`."""

    def declare(function: F) -> F:
        contract = HookContract(result=result, awaited=awaited, on_failure=on_failure)
        setattr(function, CONTRACT_ATTRIBUTE, contract)
        marked: F = hookspec(firstresult=firstresult, historic=historic)(function)
        return marked

    return declare
