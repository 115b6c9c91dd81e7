"""Failure containment: one plugin's failing hook implementation stays that plugin's problem.

What pluggy registers for a plugin is a stand-in holding the plugin's own hook
implementations, each plain one wrapped by the failure policy its hook declares
(:class:`~openrtc_core.hookspecs.HookContract`, beside the spec): an exception, or a return
value of the wrong type, is logged once per plugin and hook (then counted) and then skipped
(``SKIP``), or fails what the hook decides for, naming the plugin (``FAIL_CLOSED``): a
refusal for a hook that answers with a :class:`~openrtc_core.models.Verdict`, a
:class:`~openrtc_core.errors.HookFailedError` for any other. ``RAISE`` hooks, and wrappers
(``wrapper=True``, ``hookwrapper=True``), pass unchanged.

Wrapping before registering keeps to pluggy's public API: each function carries the plugin's
own hookimpl options (re-applied with the marker), and pluggy reads its parameters through
``__wrapped__``.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .errors import HookFailedError, OpenRTCError
from .hookspecs import HookContract, OnFailure
from .models import Verdict

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
        contract = hookspecs.contract_of(hook)  # None for a name no spec has: pluggy names it
        wraps = opts.get("wrapper") or opts.get("hookwrapper")
        if contract is not None and contract.on_failure is not OnFailure.RAISE and not wraps:
            function = hookspecs.hookimpl(_contain(hook, name, function, errors, contract), **opts)
        # Passed unchanged, a function or bound method still carries its own marker.
        setattr(stand_in, attribute, function)
    return stand_in


class StandIn:
    """Holds one plugin's (contained) hook implementations for pluggy."""

    def __init__(self, plugin: object) -> None:
        self.openrtc_plugin = plugin

    def __repr__(self) -> str:
        return f"<hooks of {self.openrtc_plugin!r}>"


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
    hook: str,
    plugin: str,
    exc: BaseException,
    errors: HookErrors,
    contract: HookContract,
    *,
    traceback: bool = True,
) -> Any:
    """What a failed implementation counts as, under its hook's declared policy."""
    first = errors.first(plugin, hook)
    closed = contract.on_failure is OnFailure.FAIL_CLOSED
    if closed and isinstance(exc, OpenRTCError) and contract.result is not Verdict:
        # Raised on purpose, saying what is wrong: whoever catches the HookFailedError reports
        # it (one error line, a refusal, a failed session), so it is not logged twice.
        logger.debug("plugin %s failed in %s: %s", plugin, hook, exc)
        raise HookFailedError(str(exc), plugin=plugin, hook=hook) from exc
    refuses = closed and contract.result is Verdict
    if refuses:
        consequence = "refusing the job so another worker can take it"
    elif closed:
        consequence = "failing what it decides for (fail-closed hook)"
    else:
        consequence = "skipping it"
    log = logger.error if first else logger.debug
    log(
        "plugin %s failed in %s (%s: %s); %s%s",
        plugin,
        hook,
        type(exc).__name__,
        exc,
        consequence,
        "; later failures of this plugin and hook are counted, not logged" if first else "",
        # An OpenRTCError is raised on purpose and says what is wrong: no traceback.
        exc_info=exc if traceback and not isinstance(exc, OpenRTCError) else None,
    )
    if refuses:
        return Verdict.refuse(
            f"admission plugin {plugin} failed: {type(exc).__name__}", source=plugin
        )
    if closed:
        message = f"plugin {plugin} failed in {hook} ({type(exc).__name__}: {exc})"
        raise HookFailedError(message, plugin=plugin, hook=hook) from exc
    return None


def _wrong_type(plugin: str, hook: str, value: object, contract: HookContract) -> TypeError:
    expected = contract.result
    names = (
        " or ".join(t.__name__ for t in expected)
        if isinstance(expected, tuple)
        else getattr(expected, "__name__", str(expected))
    )
    what = "its awaitable resolved to" if contract.awaited else "returned"
    return TypeError(
        f"{plugin} {what} {type(value).__name__!r} from {hook}; expected {names} or None"
    )


def _checked(hook: str, plugin: str, value: Any, errors: HookErrors, contract: HookContract) -> Any:
    """`value` as the hook's result: None, the declared type (a Verdict naming its plugin),
    or a failure under the hook's policy."""
    if value is None:
        return None
    if contract.result is not None and not isinstance(value, contract.result):
        wrong = _wrong_type(plugin, hook, value, contract)
        return _on_failure(hook, plugin, wrong, errors, contract, traceback=False)
    if isinstance(value, Verdict) and not value.source:
        return attrs.evolve(value, source=plugin)
    return value


async def _awaited(
    hook: str, plugin: str, awaitable: Any, errors: HookErrors, contract: HookContract
) -> Any:
    """An awaitable result (``openrtc_claim_job``), awaited under the hook's policy."""
    try:
        if not inspect.isawaitable(awaitable):
            raise TypeError(f"returned {type(awaitable).__name__!r}, not an awaitable")
        value = await awaitable
    except Exception as exc:
        return _on_failure(hook, plugin, exc, errors, contract)
    return _checked(hook, plugin, value, errors, contract)


def _contain(
    hook: str,
    plugin: str,
    function: Callable[..., Any],
    errors: HookErrors,
    contract: HookContract,
) -> Callable[..., Any]:
    @functools.wraps(function)
    def contained(*args: Any) -> Any:
        try:
            result = function(*args)
        except Exception as exc:
            return _on_failure(hook, plugin, exc, errors, contract)
        if contract.awaited:
            return None if result is None else _awaited(hook, plugin, result, errors, contract)
        return _checked(hook, plugin, result, errors, contract)

    return contained
