"""How a pool is found again in another process.

livekit ships the entrypoint to each job process by pickling it (process isolation). A pool
holds lambdas, loaded plugins and prewarmed models, which must not be copied, so it pickles as
its *origin*: the module that built it (imported again in the job process, which builds the
same pool) or the function that built it (called again). Steps that changed the pool after it
was built (discovering installed agents) are replayed by name.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:
    from .pool import AgentPool

_POOLS: dict[str, AgentPool] = {}
POOL_COUNT: Final = "__openrtc_pool_count__"
"""Kept in the globals of a module that builds pools: how many this run of it built."""


def _canonical_module(name: str) -> str:
    # multiprocessing imports the main script as __mp_main__ in the child.
    return "__main__" if name == "__mp_main__" else name


def _import_from_file(name: str, file: str) -> None:
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import the pool module from {file!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def resolve(reference: str) -> Any:
    """The object a ``"module:qualname"`` reference names."""
    module_name, _, qualname = reference.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


@attrs.frozen
class ModuleOrigin:
    """A pool built at module level; `index` tells apart several pools of one module."""

    module: str
    file: str
    index: int
    replay: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{_canonical_module(self.module)}:{self.index}"

    def rebuild(self) -> AgentPool:
        name = _canonical_module(self.module)
        if name == "__main__":
            main = sys.modules.get("__mp_main__") or sys.modules.get("__main__")
            if main is None or self.key not in _POOLS:
                _import_from_file("__mp_main__", self.file)
        elif name not in sys.modules:
            try:
                importlib.import_module(name)
            except ImportError:
                if not self.file:
                    raise
                _import_from_file(name, self.file)
        pool = _POOLS.get(self.key)
        if pool is None:
            raise RuntimeError(
                f"the pool defined in {self.module} ({self.file}) was not rebuilt in this job "
                "process: create the AgentPool at module level, unconditionally, so importing "
                "the module recreates it."
            )
        return pool


@attrs.frozen
class CallOrigin:
    """A pool built by calling a function (for example from a directory of agent modules)."""

    function: str  # "module:qualname"
    args: tuple[Any, ...] = ()
    replay: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"call:{self.function}:{self.args!r}"

    def rebuild(self) -> AgentPool:
        if self.key in _POOLS:
            return _POOLS[self.key]
        pool: AgentPool = resolve(self.function)(*self.args)
        return pool


Origin = ModuleOrigin | CallOrigin


def module_origin(namespace: dict[str, Any]) -> ModuleOrigin:
    """The origin of the next pool built by the module whose globals are `namespace`.

    Pools are numbered per run of the module (the count lives in its globals), so the same
    file run again (in a job process, by a reload, or twice in one test session) numbers
    its pools the same way.
    """
    index = int(namespace.get(POOL_COUNT, 0))
    namespace[POOL_COUNT] = index + 1
    return ModuleOrigin(
        str(namespace.get("__name__", "")), str(namespace.get("__file__") or ""), index
    )


def remember(origin: Origin, pool: AgentPool) -> None:
    """Record `pool` under `origin` so a rebuild in this process finds it (the latest run
    of a module that is run again)."""
    _POOLS[origin.key] = pool


def with_replay(origin: Origin, step: str) -> Origin:
    """`origin`, also replaying `step` (a ``"module:function"`` taking the pool) on rebuild."""
    if step in origin.replay:
        return origin
    return attrs.evolve(origin, replay=(*origin.replay, step))


def restore_pool(origin: Origin) -> AgentPool:
    """Rebuild the pool `origin` describes, in this process, replaying its steps once."""
    pool = origin.rebuild()
    for step in origin.replay:
        if step not in pool.replayed:
            resolve(step)(pool)
    return pool


@contextlib.contextmanager
def detached() -> Iterator[None]:
    """Pools built inside are not recorded: this process's record of pools is as before."""
    pools = dict(_POOLS)
    _POOLS.clear()
    try:
        yield
    finally:
        _POOLS.clear()
        _POOLS.update(pools)
