"""Which code is the project's, which files an agent's code is made of, and its version.

An agent's code is the module that defines it (the class, or the factory), the project
modules it imports, directly or not, and the data files beside them that their source
names (a prompt, a config file read through the package). Its version is a short hash of
those files' contents: equal contents, equal version, whatever the clock says.

Project modules are the ones to load again on a change: not the standard library, not
installed packages (site-packages), not OpenRTC and its plugins, even when installed in
editable mode from a source tree.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import os
import site
import sys
import sysconfig
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from types import ModuleType

import attrs

from openrtc_core import AgentPool

VERSION_CHARS = 8
MAX_DATA_FILES = 200
"""Data files hashed per folder at most (a folder of thousands is not an agent's prompts)."""
IGNORED_NAMES = ("__pycache__", "node_modules")
IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp", ".swx", ".tmp", "~")
MAIN_MODULES = ("__main__", "__mp_main__")


def ignored(path: Path) -> bool:
    """Editor droppings, caches and hidden files: never a reason to reload."""
    name = path.name
    return (
        name.startswith((".", "#"))
        or name.endswith(IGNORED_SUFFIXES)
        or any(part in IGNORED_NAMES or part.startswith(".") for part in path.parts[:-1])
    )


@cache
def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    dirs.update(site.getsitepackages())
    dirs.add(site.getusersitepackages())
    dirs.update({sys.prefix, sys.base_prefix, sys.exec_prefix})
    return tuple(os.path.join(os.path.realpath(d), "") for d in sorted(dirs) if d)


@cache
def library_packages() -> frozenset[str]:
    """Top-level names that belong to installed distributions or to OpenRTC's plugins (which
    may be installed in editable mode, their files outside site-packages)."""
    names = set(importlib.metadata.packages_distributions())
    names.add("openrtc_core")
    for entry_point in importlib.metadata.entry_points(group="openrtc.plugins"):
        names.add(entry_point.value.split(":")[0].split(".")[0])
    return frozenset(names)


def module_file(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    if not file or not file.endswith(".py"):
        return None
    return Path(os.path.realpath(file))


def is_project(name: str, module: ModuleType) -> bool:
    """Whether `module` is the project's code (to load again on a change)."""
    file = getattr(module, "__file__", None)
    if not isinstance(file, str) or not file.endswith(".py"):
        return False
    return _is_project_file(name, file)


@functools.lru_cache(maxsize=16384)
def _is_project_file(name: str, file: str) -> bool:
    # Cached: a worker holds thousands of modules and asks after every save.
    if os.path.realpath(file).startswith(_library_dirs()):
        return False
    return name in MAIN_MODULES or name.split(".")[0] not in library_packages()


def _imported_names(tree: ast.Module, package: str) -> Iterator[str]:
    """Every module name an import statement in `tree` may refer to (relative ones resolved
    against `package`); names that are not modules are filtered out by the caller."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                if node.level > 1:
                    parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, node.module] if node.module else parts)
            else:
                base = node.module or ""
            if base:
                yield base
            for alias in node.names:
                yield f"{base}.{alias.name}" if base else alias.name


def _with_parents(name: str) -> Iterator[str]:
    parts = name.split(".")
    for end in range(1, len(parts) + 1):
        yield ".".join(parts[:end])


def closure(roots: Iterable[str], modules: Mapping[str, ModuleType]) -> dict[str, Path]:
    """The project modules `roots` are made of: themselves and what they import, directly
    or not, among `modules` (by name, with their files)."""
    found: dict[str, Path] = {}
    todo = [name for name in roots if name in modules]
    while todo:
        name = todo.pop()
        module = modules[name]
        file = module_file(module)
        if name in found or file is None or not is_project(name, module):
            continue
        found[name] = file
        try:
            tree = ast.parse(file.read_bytes(), filename=str(file))
        except (OSError, SyntaxError, ValueError):
            continue
        package = module.__package__ or ""
        for imported in _imported_names(tree, package):
            for candidate in _with_parents(imported):
                if candidate in modules and candidate not in found:
                    todo.append(candidate)
    return found


def data_files(folder: Path) -> list[Path]:
    """The files beside a module that are not Python: prompts, configuration. Folders
    below it count when they are not packages of their own (a ``prompts/`` folder)."""
    files: list[Path] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return files
    for entry in entries:
        if ignored(entry):
            continue
        if entry.is_file() and entry.suffix != ".py":
            files.append(entry)
        elif entry.is_dir() and not (entry / "__init__.py").exists():
            files.extend(
                p
                for p in sorted(entry.rglob("*"))
                if p.is_file() and p.suffix != ".py" and not ignored(p.relative_to(folder))
            )
        if len(files) >= MAX_DATA_FILES:
            break
    return files[:MAX_DATA_FILES]


def code_files(modules: Mapping[str, Path]) -> list[Path]:
    """The files of `modules`, and the data files beside them that their source names
    (``"prompt.txt"``, or the ``prompts`` folder of ``prompts/support.txt``), sorted."""
    files = set(modules.values())
    source = "\n".join(_text(path) for path in files)
    for folder in {path.parent for path in modules.values()}:
        for data in data_files(folder):
            named = (data.name, *data.relative_to(folder).parts[:-1])
            if any(name in source for name in named):
                files.add(data)
    return sorted(files)


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def digest(files: Iterable[Path]) -> str:
    """A short hash of the files' names and contents (a missing file hashes as missing)."""
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode())
        try:
            h.update(path.read_bytes())
        except OSError:
            h.update(b"\0missing")
        h.update(b"\0")
    return h.hexdigest()[:VERSION_CHARS]


def target_module(target: object) -> str:
    return str(getattr(target, "__module__", "") or "")


@attrs.frozen
class CodeMap:
    """One load of a pool's code: each agent's files and version, and all project modules."""

    versions: Mapping[str, str]
    files: Mapping[str, tuple[Path, ...]]
    """Each agent's code files (modules and data)."""
    modules: Mapping[str, Path]
    """Every project module of the pool (its origin's and its agents'), by name."""

    @property
    def folders(self) -> frozenset[Path]:
        return frozenset(path.parent for path in self.modules.values())

    def agents_using(self, paths: Iterable[Path]) -> set[str]:
        wanted = {p.resolve() for p in paths}
        return {agent for agent, files in self.files.items() if wanted & set(files)}


def origin_module(pool: AgentPool) -> list[str]:
    """The module that built `pool` (nothing for a pool built by a function)."""
    module = str(getattr(pool.origin, "module", "") or "")
    if module in MAIN_MODULES:
        return list(MAIN_MODULES)
    return [module] if module else []


def code_map(pool: AgentPool, modules: Mapping[str, ModuleType]) -> CodeMap:
    """Versions and files of `pool`'s agents, whose modules are in `modules`."""
    files: dict[str, tuple[Path, ...]] = {}
    versions: dict[str, str] = {}
    everything: dict[str, Path] = dict(closure(origin_module(pool), modules))
    for name, spec in pool.agents.items():
        own = closure([target_module(spec.target)], modules)
        everything.update(own)
        agent_files = tuple(code_files(own))
        files[name] = agent_files
        versions[name] = digest(agent_files)
    return CodeMap(versions=versions, files=files, modules=everything)
