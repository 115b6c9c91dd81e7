"""Turning what the user points the CLI at into a pool, and finding installed agents.

TARGET is one of:
- ``package.module:pool`` (or ``package.module``, when it defines exactly one pool);
- ``path/to/app.py`` (or ``path/to/app.py:pool``), a file that defines a pool;
- ``path/to/agents/``, a directory with one agent module per file: each module's Agent
  subclass is registered under the file name, unless ``@openrtc_core.agent(...)`` says
  otherwise.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import re
import sys
import sysconfig
import traceback
from collections.abc import Callable, Collection
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import attrs
from livekit.agents import Agent

from . import origins
from .errors import PoolConfigError, TargetError
from .origins import CallOrigin, ModuleOrigin, with_replay
from .pool import UNSET, AgentPool, Unset
from .server import isolation_backend

logger = logging.getLogger("openrtc.targets")

AGENT_MARK = "__openrtc_agent__"
AGENTS_ENTRY_POINT_GROUP = "openrtc.agents"
DISCOVER_STEP = "openrtc_core.targets:discover_agents"

A = TypeVar("A", bound=type[Agent])


def agent(
    name: str | None = None,
    *,
    default: bool = False,
    greeting: str | Unset | None = UNSET,
    **overrides: Any,
) -> Callable[[A], A]:
    """Mark an Agent class for directory and entry-point discovery. Only sets an attribute.

    ``@agent("billing", llm="openai/gpt-4.1-mini")`` registers the class as ``billing``
    with that override; with no name the file (or entry point) name is used.
    """

    def mark(cls: A) -> A:
        if not (isinstance(cls, type) and issubclass(cls, Agent)):
            raise PoolConfigError(
                f"@openrtc_core.agent decorates livekit Agent subclasses, not {cls!r}"
            )
        setattr(
            cls,
            AGENT_MARK,
            {"name": name, "default": default, "greeting": greeting, "overrides": overrides},
        )
        return cls

    return mark


def register_agent_object(pool: AgentPool, obj: object, *, default_name: str) -> None:
    """Register an Agent subclass (honouring its mark) or call a ``register(pool)`` function."""
    if isinstance(obj, type) and issubclass(obj, Agent):
        mark: dict[str, Any] = dict(obj.__dict__.get(AGENT_MARK) or {})
        pool.add(
            mark.get("name") or default_name,
            obj,
            default=bool(mark.get("default", False)),
            greeting=mark.get("greeting", UNSET),
            **dict(mark.get("overrides") or {}),
        )
        return
    if callable(obj):
        obj(pool)
        return
    raise PoolConfigError(
        f"{default_name!r} exposes {obj!r}: expected an Agent subclass or a function register(pool)"
    )


def _module_name_for(path: Path, prefix: str) -> str:
    stem = re.sub(r"\W", "_", path.stem)
    return f"{prefix}{stem}"


def _shown(filename: str) -> str:
    """A file name as the user would type it: relative to the working directory when inside it."""
    try:
        path = Path(filename).resolve()
        return str(path.relative_to(Path.cwd()))
    except (OSError, ValueError):
        return filename


def _code_dirs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Where code that is not the user's lives: (the standard library and OpenRTC itself,
    installed packages)."""
    paths = sysconfig.get_paths()

    def dirs(*keys: str) -> tuple[str, ...]:
        found = {os.path.realpath(paths[key]) for key in keys if key in paths}
        return tuple(os.path.join(d, "") for d in sorted(found))

    ours = os.path.join(os.path.dirname(os.path.realpath(__file__)), "")
    return (*dirs("stdlib", "platstdlib"), ours), dirs("purelib", "platlib")


def _user_frame(exc: BaseException, user_files: Collection[Path]) -> tuple[str, int] | None:
    """Where in the user's code `exc` was raised: the innermost frame of its traceback in a
    file of theirs (not the standard library, an installed package or OpenRTC), else in one
    of `user_files`, else in an installed package (a target that is installed itself)."""
    frames = [
        (os.path.realpath(f.filename), f.filename, f.lineno)
        for f in reversed(traceback.extract_tb(exc.__traceback__))
        if f.lineno is not None and not f.filename.startswith("<")
    ]
    core, installed = _code_dirs()
    wanted = {os.path.realpath(f) for f in user_files}

    def users(real: str) -> bool:
        return not real.startswith(core) and not real.startswith(installed)

    def targeted(real: str) -> bool:
        return real in wanted

    def not_ours(real: str) -> bool:
        return not real.startswith(core)

    for accept in (users, targeted, not_ours):
        for real, filename, lineno in frames:
            if lineno is not None and accept(real):
                return filename, lineno
    return None


def target_error(exc: Exception, where: str, user_files: Collection[Path] = ()) -> TargetError:
    """`exc`, raised while running the user's module, as one line: ``file:line: Type: message``.

    The location is the SyntaxError's own, or the innermost frame in the user's code; `where`
    (the target) stands in when there is none.
    """
    if isinstance(exc, SyntaxError):
        message = exc.msg
        location = (exc.filename, exc.lineno) if exc.filename and exc.lineno else None
    else:
        message = str(exc)
        location = _user_frame(exc, user_files)
    prefix = f"{_shown(location[0])}:{location[1]}" if location else where
    text = f"{prefix}: {type(exc).__name__}"
    return TargetError(f"{text}: {message}" if message else text)


def import_file(path: Path, module_name: str) -> ModuleType:
    """Import a Python file as `module_name`, with its folder on sys.path like ``python file``.

    Anything the file raises while it runs (a SyntaxError, an ImportError, an OpenRTC
    configuration error, ...) becomes a :class:`TargetError` naming the file and line.
    """
    folder = str(path.parent.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot import {path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise target_error(exc, _shown(str(path)), (path,)) from exc
    return module


def _pick_pool(module: ModuleType, attr: str | None, target: str) -> AgentPool:
    if attr:
        value = getattr(module, attr, None)
        if not isinstance(value, AgentPool):
            raise TargetError(
                f"{target}: {attr!r} is {'missing' if value is None else type(value).__name__}, "
                "not an AgentPool"
            )
        return value
    pools = {k: v for k, v in vars(module).items() if isinstance(v, AgentPool)}
    if len(pools) == 1:
        return next(iter(pools.values()))
    if not pools:
        raise TargetError(
            f"{target} defines no AgentPool at module level; create one "
            "(pool = AgentPool(...)) or point at a directory of agent modules"
        )
    raise TargetError(
        f"{target} defines several pools ({', '.join(sorted(pools))}); "
        f"choose one with {target}:NAME"
    )


def load_target(target: str) -> AgentPool:
    """Resolve a CLI TARGET to a pool; raise :class:`TargetError` saying what to fix."""
    path_part, attr = target, ""
    if ":" in target and not Path(target).exists():
        path_part, _, attr = target.rpartition(":")
    path = Path(path_part)
    if path.is_dir():
        if attr:
            raise TargetError(f"{target}: a directory target takes no ':NAME'")
        return pool_from_directory(str(path.resolve()))
    if path_part.endswith(".py") or path.is_file():
        if not path.is_file():
            raise TargetError(f"{target}: no such file {path_part!r}")
        module = import_file(path.resolve(), _module_name_for(path, "openrtc_app_"))
        return _pick_pool(module, attr or None, target)
    if not re.fullmatch(r"[A-Za-z_][\w.]*", path_part):
        raise TargetError(
            f"{target!r} is not a module path, a .py file or a directory; "
            "use package.module:pool, app.py or agents/"
        )
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(path_part)
    except ModuleNotFoundError as exc:
        if exc.name and (path_part == exc.name or path_part.startswith(f"{exc.name}.")):
            # The target itself (or its package) is missing, not something it imports.
            raise TargetError(f"{target}: cannot import module {path_part!r} ({exc})") from None
        raise target_error(exc, target) from exc
    except Exception as exc:
        raise target_error(exc, target) from exc
    return _pick_pool(module, attr or None, target)


def load_pool_again(pool: AgentPool) -> AgentPool:
    """A new copy of `pool`, built the way a job process builds it (from its origin: the
    module that created it, or the function), without touching this process's pools.

    Modules are imported as ``sys.modules`` has them: one that is missing there is imported
    again from its file, one that is present is reused. A reload strategy removes the
    project's modules first, so the copy runs the code on disk. Whatever the code raises
    becomes a :class:`TargetError` naming file and line.
    """
    origin = pool.origin
    where = origin.file if isinstance(origin, ModuleOrigin) else origin.function
    files = (Path(origin.file),) if isinstance(origin, ModuleOrigin) and origin.file else ()
    try:
        with origins.detached():
            return origins.restore_pool(origin)
    except TargetError:
        raise
    except Exception as exc:
        raise target_error(exc, _shown(where), files) from exc


def load_pool(
    target: str,
    *,
    entry_points: bool = False,
    isolation: str | None = None,
) -> AgentPool:
    """The pool TARGET names, checked as far as possible before a worker starts.

    `entry_points` also registers the agents installed packages expose (``openrtc.agents``);
    `isolation` replaces the pool's backend. What would otherwise fail later raises here, as
    an :class:`~openrtc_core.errors.OpenRTCError`: anything the target's code raises while it
    is imported (a :class:`TargetError` naming file and line), a pool with no agents, plugin
    problems (strict loading, an unknown backend).
    """
    pool = load_target(target)
    if entry_points:
        discover_agents(pool)
    if not pool.agents:
        raise PoolConfigError(
            f"{target}: the pool has no agents: register at least one with "
            "pool.add(name, AgentClass)"
        )
    if isolation:
        pool.settings = attrs.evolve(pool.settings, isolation=isolation)
    isolation_backend(pool)
    return pool


def _agent_classes(module: ModuleType) -> list[type[Agent]]:
    return [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Agent) and obj is not Agent and obj.__module__ == module.__name__
    ]


def pool_from_directory(directory: str) -> AgentPool:
    """A pool with one agent per module file in `directory` (files starting with _ skipped)."""
    folder = Path(directory)
    files = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
    if not files:
        raise TargetError(f"{directory}: no agent modules (*.py) found")
    pool = AgentPool()
    pool.origin = CallOrigin("openrtc_core.targets:pool_from_directory", (directory,))
    for file in files:
        module = import_file(file, _module_name_for(file, "openrtc_agents_"))
        classes = _agent_classes(module)
        marked = [c for c in classes if AGENT_MARK in c.__dict__]
        chosen = marked or classes
        if not chosen:
            raise TargetError(f"{file}: defines no livekit Agent subclass")
        if len(chosen) > 1 and not marked:
            names = ", ".join(c.__qualname__ for c in chosen)
            raise TargetError(
                f"{file}: defines several Agent subclasses ({names}); mark the ones to serve "
                "with @openrtc_core.agent(...) or keep one per file"
            )
        for cls in chosen:
            try:
                register_agent_object(pool, cls, default_name=file.stem)
            except PoolConfigError as exc:
                raise TargetError(f"{file}: {exc}") from None
    return pool


def discover_agents(pool: AgentPool, group: str = AGENTS_ENTRY_POINT_GROUP) -> list[str]:
    """Register the agents that installed packages expose under `group`; return their names.

    An entry point may name an ``Agent`` subclass (registered under the entry point's name,
    or the name its ``@openrtc_core.agent(...)`` decorator sets) or a function
    ``register(pool)`` that adds agents itself. A job process rebuilding the pool does the
    same (the step is recorded on the pool's origin).
    """
    before = set(pool.agents)
    for entry_point in sorted(importlib.metadata.entry_points(group=group), key=_ep_name):
        try:
            obj = entry_point.load()
        except Exception as exc:
            logger.warning(
                "skipping agent entry point %s (%s): %s: %s",
                entry_point.name,
                entry_point.value,
                type(exc).__name__,
                exc,
            )
            continue
        register_agent_object(pool, obj, default_name=entry_point.name)
    pool.replayed.add(DISCOVER_STEP)
    pool.origin = with_replay(pool.origin, DISCOVER_STEP)
    return sorted(set(pool.agents) - before)


def _ep_name(entry_point: importlib.metadata.EntryPoint) -> str:
    return entry_point.name
