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
