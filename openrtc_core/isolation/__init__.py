"""Isolation backends: how the worker runs each job (see :mod:`.base` for the contract)."""

from .base import BackendTraits, IsolationBackend, JobPoolFactory, WorkerSpec
from .coroutine import CoroutineBackend
from .executors import ProcessBackend, ThreadBackend

__all__ = [
    "BackendTraits",
    "CoroutineBackend",
    "IsolationBackend",
    "JobPoolFactory",
    "ProcessBackend",
    "ThreadBackend",
    "WorkerSpec",
]
