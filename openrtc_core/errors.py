"""Errors OpenRTC raises at the user. Each message names the input and what to do instead."""

from __future__ import annotations


class OpenRTCError(Exception):
    """Base class for every error OpenRTC raises on purpose."""


class PoolConfigError(OpenRTCError, ValueError):
    """The pool was configured with something it cannot use (bad name, option, agent)."""


class PluginLoadError(OpenRTCError):
    """A plugin failed to load while strict plugin loading was asked for."""


class TargetError(OpenRTCError):
    """A CLI target (module:pool, file, directory) could not be turned into a pool."""


class HookFailedError(OpenRTCError):
    """A plugin's implementation of a fail-closed hook failed: what the hook decided for fails
    with it (the job is refused, the session fails, the worker does not start)."""

    def __init__(self, message: str, *, plugin: str, hook: str) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.hook = hook
