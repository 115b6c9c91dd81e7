"""Failure containment: one plugin's failing hook implementation is logged and skipped.

What pluggy registers for a plugin is a stand-in holding the plugin's own hook
implementations, each plain one wrapped so that an exception, or a return value of the wrong
type, stays that plugin's problem: logged once per plugin and hook (then counted) and treated
as ``None``. Admission fails closed: a failing admission plugin refuses the job.

Wrapping before registering keeps to pluggy's public API: each function carries the plugin's
own hookimpl options (re-applied with the marker), and pluggy reads its parameters through
``__wrapped__``. Wrappers (``wrapper=True``, ``hookwrapper=True``) and the uncontained hooks
pass unchanged.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .models import RouteDecision, TenantContext, Verdict

logger = logging.getLogger("openrtc.plugins")


def contained_plugin(
    pm: pluggy.PluginManager, name: str, plugin: object, errors: HookErrors
) -> object:
    """The stand-in to register with `pm` for `plugin` (named `name` in logs)."""
    stand_in = StandIn(plugin)
    for attribute in dir(plugin):
        opts = pm.parse_hookimpl_opts(plugin, attribute)
        if opts is None:
            continue
        function: Callable[..., Any] = getattr(plugin, attribute)
        hook = opts.get("specname") or attribute
        if hook not in _UNCONTAINED and not (opts.get("wrapper") or opts.get("hookwrapper")):
            function = hookspecs.hookimpl(_contain(hook, name, function, errors), **opts)
        # Passed unchanged, a function or bound method still carries its own marker.
        setattr(stand_in, attribute, function)
    return stand_in


class StandIn:
    """Holds one plugin's (contained) hook implementations for pluggy."""

    def __init__(self, plugin: object) -> None:
        self.openrtc_plugin = plugin

    def __repr__(self) -> str:
        return f"<hooks of {self.openrtc_plugin!r}>"


# What each hook's implementations may return (None always means "no opinion"), and what a
# failing implementation counts as. Admission fails closed: it guards caps and breakers.
_RESULT_TYPES: dict[str, type | tuple[type, ...]] = {
    "openrtc_route_job": RouteDecision,
    "openrtc_resolve_tenant": TenantContext,
    "openrtc_admit_job": Verdict,
    "openrtc_session_options": Mapping,
    "openrtc_agent_error": bool,
}
_UNCONTAINED = frozenset({"openrtc_prewarm", "openrtc_start_session"})
ADMISSION_HOOKS = frozenset({"openrtc_admit_job", "openrtc_claim_job"})
"""Hooks that fail closed: a failing implementation refuses the job."""


@attrs.define
class HookErrors:
    """Failures of plugin hook implementations, counted per plugin and hook.

    The first of each kind is logged in full; later ones are counted (and logged at debug),
    so a plugin failing on every call does not flood the log.
    """

    counts: dict[tuple[str, str], int] = attrs.field(factory=dict)

    def first(self, plugin: str, hook: str) -> bool:
        count = self.counts.get((plugin, hook), 0) + 1
        self.counts[(plugin, hook)] = count
        return count == 1


def _on_failure(
    hook: str, plugin: str, exc: BaseException, errors: HookErrors, *, traceback: bool = True
) -> Any:
    first = errors.first(plugin, hook)
    log = logger.error if first else logger.debug
    admission = hook in ADMISSION_HOOKS
    log(
        "plugin %s failed in %s (%s: %s); %s%s",
        plugin,
        hook,
        type(exc).__name__,
        exc,
        "refusing the job so another worker can take it" if admission else "skipping it",
        "; later failures of this plugin and hook are counted, not logged" if first else "",
        exc_info=exc if traceback else None,
    )
    if admission:
        return Verdict.refuse(
            f"admission plugin {plugin} failed: {type(exc).__name__}", source=plugin
        )
    return None


async def _claim(claim: Any, plugin: str, errors: HookErrors) -> Verdict | None:
    """A plugin's claim, awaited: failing closed, and naming the plugin in a refusal."""
    try:
        if not inspect.isawaitable(claim):
            raise TypeError(f"returned {type(claim).__name__!r}, not an awaitable")
        verdict = await claim
        if verdict is not None and not isinstance(verdict, Verdict):
            raise TypeError(f"its claim resolved to {type(verdict).__name__!r}, not a Verdict")
    except Exception as exc:
        failed: Verdict | None = _on_failure("openrtc_claim_job", plugin, exc, errors)
        return failed
    if verdict is not None and not verdict.source:
        return attrs.evolve(verdict, source=plugin)
    return verdict


def _contain(
    hook: str, plugin: str, function: Callable[..., Any], errors: HookErrors
) -> Callable[..., Any]:
    expected = _RESULT_TYPES.get(hook)

    @functools.wraps(function)
    def contained(*args: Any) -> Any:
        try:
            result = function(*args)
        except Exception as exc:
            return _on_failure(hook, plugin, exc, errors)
        if result is not None and expected is not None and not isinstance(result, expected):
            wrong = TypeError(
                f"{plugin} returned {type(result).__name__!r} from {hook}; expected "
                f"{getattr(expected, '__name__', expected)} or None"
            )
            return _on_failure(hook, plugin, wrong, errors, traceback=False)
        if hook == "openrtc_admit_job" and isinstance(result, Verdict) and not result.source:
            return attrs.evolve(result, source=plugin)
        if hook == "openrtc_claim_job" and result is not None:
            return _claim(result, plugin, errors)
        return result

    return contained
