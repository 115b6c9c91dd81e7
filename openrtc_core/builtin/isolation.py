"""Registers the built-in isolation backends."""

from __future__ import annotations

from ..hookspecs import RegisterBackend, hookimpl
from ..isolation import CoroutineBackend, ProcessBackend, ThreadBackend


@hookimpl(trylast=True)
def openrtc_register_isolation_backends(register: RegisterBackend) -> None:
    # trylast: the first registration of a name wins, so any plugin's backend of the same
    # name replaces the built-in one.
    register("coroutine", CoroutineBackend)
    register("process", ProcessBackend)
    register("thread", ThreadBackend)
