"""Finding installed plugins: which entry points to import, which to skip, and who ships them.

stevedore imports the plugins under :data:`ENTRY_POINT_GROUP` once per process; every pool's
:class:`~openrtc_core.plugins.PluginHost` registers the result. The switches users set
(``OPENRTC_STRICT_PLUGINS``, ``OPENRTC_DISABLE_PLUGINS``) are read here.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Sequence
from typing import Any

from stevedore import ExtensionManager, NamedExtensionManager
from stevedore.extension import Extension

ENTRY_POINT_GROUP = "openrtc.plugins"
STRICT_ENV = "OPENRTC_STRICT_PLUGINS"
DISABLE_ENV = "OPENRTC_DISABLE_PLUGINS"
TRACE_ENV = "OPENRTC_TRACE_HOOKS"


def env_flag(name: str) -> bool:
    """Whether the environment variable `name` is set to a yes (1, true, yes, on)."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def disabled_from_env() -> frozenset[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def strict_message(failed: Sequence[tuple[str, str, str]]) -> str:
    """The error for plugins that failed under strict loading: (name, module, reason) each."""
    lines = [f"  {name} ({where}): {reason}" for name, where, reason in failed]
    names = ",".join(name for name, _, _ in failed)
    return (
        f"{len(failed)} plugin(s) failed to load and strict loading is on:\n"
        + "\n".join(lines)
        + f"\nFix or uninstall them, or block them with {DISABLE_ENV}={names}."
    )


Failures = list[tuple[importlib.metadata.EntryPoint, BaseException]]
_IMPORTED: dict[tuple[str, tuple[str, ...]], tuple[list[Extension[Any]], Failures]] = {}


def import_entry_points(
    group: str, names: tuple[str, ...]
) -> tuple[list[Extension[Any]], Failures, bool]:
    """Import the named plugins of `group` once per process (every pool shares the result).

    Returns the loaded extensions, the failures, and whether this call did the importing
    (so each failure is warned about once, however many pools there are).
    """
    key = (group, names)
    if key in _IMPORTED:
        cached, cached_failures = _IMPORTED[key]
        return cached, cached_failures, False
    failures: Failures = []

    def on_failure(
        _manager: ExtensionManager[Any],
        entry_point: importlib.metadata.EntryPoint,
        exc: BaseException,
    ) -> None:
        failures.append((entry_point, exc))

    manager: NamedExtensionManager[Any] = NamedExtensionManager(
        namespace=group,
        names=list(names),
        name_order=True,
        invoke_on_load=False,
        on_load_failure_callback=on_failure,
        on_missing_entrypoints_callback=lambda missing: None,
    )
    _IMPORTED[key] = (list(manager.extensions), failures)
    return list(manager.extensions), failures, True


def entry_point_distributions() -> dict[tuple[str, str], dict[str, str]]:
    """Who declares each plugin entry point: (name, value) -> distribution and version.

    stevedore's cached entry points carry no distribution, so a host looks its plugins up
    here, by each entry point's name and value.
    """
    found: dict[tuple[str, str], dict[str, str]] = {}
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                found[(ep.name, ep.value)] = {
                    "distribution": str(dist.metadata["Name"]),
                    "version": str(dist.version),
                }
    return found
