"""The one place the core names its plugins: to say, for a flag, a variable, a keyword or a
command of a plugin that is not there, which distribution provides it and why it is missing.

Nothing here decides anything: a plugin that is installed declares its own options
(``openrtc_add_run_options``) and commands (``openrtc_register_commands``), and the core
never looks here for them. A test fails when the core names a plugin anywhere else.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Collection, Mapping, Sequence
from typing import Final

import attrs

from .discovery import DISABLE_ENV, disabled_from_env


@attrs.frozen(kw_only=True)
class Hint:
    """What one of our plugins provides, so that its absence can be explained."""

    distribution: str
    entry_point: str
    flags: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    """Keywords of ``AgentPool(...)`` and ``pool.run(...)``."""
    commands: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ("dev", "start", "console", "connect")
    """The verbs its flags and variables are for."""


HINTS: Final = (
    Hint(
        distribution="openrtc-workers",
        entry_point="workers",
        flags=("--workers", "--max-worker-memory", "--max-worker-sessions"),
        env=("OPENRTC_WORKERS",),
        keywords=("workers", "max_worker_memory", "max_worker_sessions"),
        verbs=("start",),
    ),
    Hint(
        distribution="openrtc-deploy",
        entry_point="deploy",
        flags=("--control",),
        keywords=("control",),
        commands=("deploy",),
        verbs=("start",),
    ),
    Hint(
        distribution="openrtc-reload",
        entry_point="reload",
        flags=("--reload",),
        keywords=("reload",),
        verbs=("dev", "start"),
    ),
    Hint(
        distribution="openrtc-tenancy",
        entry_point="tenancy",
        flags=("--tenants",),
        env=("OPENRTC_TENANTS",),
        keywords=("tenants",),
        commands=("tenancy",),
    ),
    Hint(distribution="openrtc-testing", entry_point="testing", commands=("simulate",)),
)


def hint_for_command(command: str) -> Hint | None:
    return next((h for h in HINTS if command in h.commands), None)


def hint_for_keyword(keyword: str) -> Hint | None:
    return next((h for h in HINTS if keyword in h.keywords), None)


def missing_flag(verb: str, args: Sequence[str]) -> tuple[str, Hint] | None:
    """The first flag in `args` (what is left once the declared options are taken) that one
    of our plugins would add for `verb`, with its hint."""
    for arg in args:
        flag = arg.partition("=")[0]
        for hint in HINTS:
            if flag in hint.flags and verb in hint.verbs:
                return flag, hint
    return None


def missing_env(
    verb: str, environ: Mapping[str, str], declared: set[str]
) -> tuple[str, Hint] | None:
    """A variable set in `environ` that one of our plugins would read for `verb`, and that no
    declared option reads (`declared`: the variables they read)."""
    for hint in HINTS:
        if verb not in hint.verbs:
            continue
        for variable in hint.env:
            if environ.get(variable, "").strip() and variable not in declared:
                return variable, hint
    return None


def why_missing(
    what: str,
    hint: Hint,
    failed: Mapping[str, str] | None = None,
    disabled: Collection[str] = (),
) -> str:
    """Why `what` (a flag, a variable, a keyword or a command) is not there: its plugin is
    not installed, disabled (`disabled`, or the environment), broken (`failed`: plugin ->
    error), or did not add it."""
    provided = f"{what} is provided by {hint.distribution}"
    try:
        importlib.metadata.distribution(hint.distribution)
    except importlib.metadata.PackageNotFoundError:
        return f"{provided} (pip install {hint.distribution}), which is not installed"
    if hint.entry_point in disabled_from_env() or hint.entry_point in disabled:
        return (
            f"{provided} (plugin {hint.entry_point!r}), which is disabled by {DISABLE_ENV} "
            "or --disable-plugins"
        )
    error = (failed or {}).get(hint.entry_point)
    if error is not None:
        return f"{provided}, whose plugin {hint.entry_point!r} failed to load: {error}"
    return f"{provided}, whose plugin {hint.entry_point!r} did not add it"
