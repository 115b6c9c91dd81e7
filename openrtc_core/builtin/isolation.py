"""Registers the built-in isolation backends."""

from __future__ import annotations

from ..hookspecs import RegisterBackend, hookimpl
from ..isolation import ProcessBackend, ThreadBackend


@hookimpl(tryfirst=True)
def openrtc_register_isolation_backends(register: RegisterBackend) -> None:
    # tryfirst: registered first, so a plugin registering the same name replaces it.
    register("process", ProcessBackend)
    register("thread", ThreadBackend)
