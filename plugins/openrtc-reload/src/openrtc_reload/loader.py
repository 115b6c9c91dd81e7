"""Loading a pool's code again into fresh module objects, beside the running ones.

The project's modules are taken out of ``sys.modules`` for the time of one import of the
pool (so it and everything of the project it imports run from the files on disk, as new
module objects) and put back right after, whatever happened: running sessions keep the
modules they were built from, and nothing else in the process sees a half-loaded state
(the loop does not run meanwhile). Only a load that passes its checks is swapped in.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import attrs

from openrtc_core import AgentContext, AgentPool, OpenRTCError, build_agent, load_pool_again

from .code import MAIN_MODULES, CodeMap, code_map, is_project


class CheckFailed(Exception):
    """New code that must not replace the running code; the message names file and line."""


@attrs.frozen
class Load:
    """A pool's code, loaded: the pool it builds, its project modules and their map."""

    pool: AgentPool
    modules: Mapping[str, ModuleType]
    code: CodeMap


def project_modules() -> dict[str, ModuleType]:
    """The project's modules as this process has them now (``__main__`` aside)."""
    return {
        name: module
        for name, module in list(sys.modules.items())
        if name != "__main__" and module is not None and is_project(name, module)
    }


def current(pool: AgentPool) -> Load:
    """The code `pool` runs now, as a :class:`Load` (what a first reload is compared to)."""
    modules = project_modules()
    main = sys.modules.get("__main__")
    mapped = {**modules, "__main__": main} if main is not None else modules
    return Load(pool=pool, modules=modules, code=code_map(pool, mapped))


def load_fresh(pool: AgentPool) -> Load:
    """`pool`'s code as the files on disk have it, in new modules; raises
    :class:`CheckFailed` when it does not load or an agent cannot be built."""
    saved = project_modules()
    for name in saved:
        del sys.modules[name]
    try:
        try:
            fresh_pool = load_pool_again(pool)
        except OpenRTCError as exc:
            raise CheckFailed(str(exc)) from exc
        fresh = {
            name: module
            for name, module in project_modules().items()
            if saved.get(name) is not module
        }
    finally:
        for name, module in project_modules().items():
            if saved.get(name) is not module:
                del sys.modules[name]
        sys.modules.update(saved)
    load = Load(pool=fresh_pool, modules=fresh, code=code_map(fresh_pool, fresh))
    check(load)
    return load


def install(load: Load) -> None:
    """Make `load`'s modules the ones later imports find (a lazy import inside an agent)."""
    sys.modules.update(load.modules)


def check_context(name: str) -> AgentContext:
    return AgentContext(job_id="openrtc-reload-check", room_name="", agent=name)


def check(load: Load) -> None:
    """Every agent of `load` can be built (constructor or factory), or CheckFailed."""
    for name, spec in load.pool.agents.items():
        try:
            build_agent(spec, check_context(name))
        except Exception as exc:
            raise CheckFailed(error_line(exc, f"agent {name!r}")) from exc


def error_line(exc: BaseException, where: str) -> str:
    """``file:line: Type: message`` at the innermost frame in project code, else `where`."""
    frame = None
    tb = exc.__traceback__
    while tb is not None:
        name = str(tb.tb_frame.f_globals.get("__name__", ""))
        module = sys.modules.get(name)
        ours = module is None or is_project(name, module) or name in MAIN_MODULES
        if ours and not tb.tb_frame.f_code.co_filename.startswith("<"):
            frame = tb
        tb = tb.tb_next
    text = f"{type(exc).__name__}: {exc}"
    if frame is None:
        return f"{where}: {text}"
    return f"{_shown(frame.tb_frame.f_code.co_filename)}:{frame.tb_lineno}: {text}"


def _shown(filename: str) -> str:
    try:
        return str(Path(filename).resolve().relative_to(Path.cwd()))
    except (OSError, ValueError):
        return filename
