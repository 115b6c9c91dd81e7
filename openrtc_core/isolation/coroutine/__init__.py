"""Coroutine isolation: every job runs as tasks in the worker's own event loop."""

from .backend import DEFAULT_MAX_SESSIONS, CoroutineBackend, CoroutineLoad
from .gctuning import tune_gc
from .jobpool import CoroutineJobPool

__all__ = [
    "DEFAULT_MAX_SESSIONS",
    "CoroutineBackend",
    "CoroutineJobPool",
    "CoroutineLoad",
    "tune_gc",
]
