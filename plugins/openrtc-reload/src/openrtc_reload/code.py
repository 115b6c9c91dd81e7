"""Which code is the project's, which files an agent's code is made of, and its version.

An agent's code is the module that defines it (the class, or the factory), the project
modules it imports, directly or not, and the data files their source names: a string in
the code that is the path of an existing file, relative to the module's folder or to the
project's (a prompt, a config file the agent reads). Its version is a short hash of those
files' contents: equal contents, equal version, whatever the clock says.

Project modules are the ones to load again on a change: files under the project's folder
(the pool's, or the working directory), not the standard library, not installed packages
(site-packages), not OpenRTC and its plugins, even when installed in editable mode from a
source tree.

Nothing here lists a folder's tree: what is found is found from the modules' own source,
so a project folder that also holds a virtualenv or a data dump costs nothing.
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

from openrtc_core import AgentPool, pool_source_dir

VERSION_CHARS = 8
MAX_DATA_FILES = 200
"""Data files an agent's code names, at most (a folder of thousands is not its prompts)."""
MAX_NAME_CHARS = 255
IGNORED_NAMES = ("__pycache__", "node_modules")
IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp", ".swx", ".tmp", "~")
WRITTEN_SUFFIXES = (".log", ".pid", ".lock", ".db", ".sqlite", ".sqlite3", "-journal", "-wal")
"""Files a program writes while it runs (its own log named in its code): never its code."""
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


def pool_folder(pool: AgentPool) -> Path | None:
    """The pool's own folder: a directory target's, or that of the file that built it."""
    folder = pool_source_dir(pool)
    return Path(os.path.realpath(folder)) if folder is not None else None


def project_roots(pool: AgentPool) -> tuple[Path, ...]:
    """The folders the project's modules live in: the pool's own and the working directory
    it was started from."""
    roots = [pool_folder(pool), Path(os.path.realpath(Path.cwd()))]
    return tuple(dict.fromkeys(r for r in roots if r is not None))


def _inside(path: Path, folders: Iterable[Path]) -> bool:
    return any(path.is_relative_to(folder) for folder in folders)


@attrs.define
class Sources:
    """The parsed source of each module file, parsed once per look at the pool's code."""

    _trees: dict[Path, ast.Module | None] = attrs.Factory(dict)

    def tree(self, file: Path) -> ast.Module | None:
        if file not in self._trees:
            try:
                self._trees[file] = ast.parse(file.read_bytes(), filename=str(file))
            except (OSError, SyntaxError, ValueError):
                self._trees[file] = None
        return self._trees[file]


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


def closure(
    roots: Iterable[str],
    modules: Mapping[str, ModuleType],
    *,
    inside: tuple[Path, ...] = (),
    sources: Sources | None = None,
) -> dict[str, Path]:
    """The project modules `roots` are made of: themselves and what they import, directly
    or not, among `modules` (by name, with their files), keeping to files `inside` those
    folders (any, when none is given)."""
    sources = sources or Sources()
    found: dict[str, Path] = {}
    todo = [name for name in roots if name in modules]
    while todo:
        name = todo.pop()
        module = modules[name]
        file = module_file(module)
        if name in found or file is None or not is_project(name, module):
            continue
        if inside and not _inside(file, inside):
            continue
        found[name] = file
        tree = sources.tree(file)
        if tree is None:
            continue
        package = module.__package__ or ""
        for imported in _imported_names(tree, package):
            for candidate in _with_parents(imported):
                if candidate in modules and candidate not in found:
                    todo.append(candidate)
    return found


def _strings(tree: ast.Module) -> Iterator[str]:
    """The string constants of `tree` that could be a path (an f-string's fixed parts too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if 0 < len(text) <= MAX_NAME_CHARS and text.strip() == text and "\n" not in text:
                yield text


def _data(path: Path) -> bool:
    return not ignored(path) and not path.name.endswith(WRITTEN_SUFFIXES)


def _named(text: str, bases: tuple[Path, ...]) -> Iterator[Path]:
    """The files `text` names, relative to one of `bases` and inside it: the file itself, or
    the files directly in the folder it names (a ``prompts/`` folder), its modules aside."""
    for base in bases:
        try:
            path = Path(os.path.normpath(base / text))
            if path == base or not path.is_relative_to(base):
                continue
            # Judged below the base, so a project inside a hidden folder still counts.
            if not _data(path.relative_to(base)):
                continue
            if path.is_file():
                yield path
            elif path.is_dir():
                with os.scandir(path) as entries:
                    for n, entry in enumerate(entries):
                        if n >= MAX_DATA_FILES:
                            break
                        found = path.relative_to(base) / entry.name
                        if found.suffix != ".py" and _data(found) and entry.is_file():
                            yield base / found
        except (OSError, ValueError):
            continue


def named_files(
    modules: Mapping[str, Path], roots: tuple[Path, ...], sources: Sources | None = None
) -> list[Path]:
    """The data files the source of `modules` names, relative to a module's folder or to one
    of `roots` (``"prompt.txt"`` beside the module, ``"config/agent.toml"`` from the pool's
    folder), at most :data:`MAX_DATA_FILES`."""
    sources = sources or Sources()
    found: set[Path] = set()
    for file in sorted(set(modules.values())):
        tree = sources.tree(file)
        if tree is None:
            continue
        bases = tuple(dict.fromkeys((file.parent, *roots)))
        for text in dict.fromkeys(_strings(tree)):
            for path in _named(text, bases):
                found.add(Path(os.path.realpath(path)))
                if len(found) >= MAX_DATA_FILES:
                    return sorted(found)
    return sorted(found)


def code_files(
    modules: Mapping[str, Path], roots: tuple[Path, ...] = (), sources: Sources | None = None
) -> list[Path]:
    """The files of `modules`, and the data files their source names, sorted."""
    return sorted({*modules.values(), *named_files(modules, roots, sources)})


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
    watched: frozenset[Path] = frozenset()
    """Every file the pool's code is made of: its modules and the data files they name."""
    home: Path | None = None
    """The pool's own folder: a module file added there may be a new agent (a directory
    target's)."""

    @property
    def folders(self) -> frozenset[Path]:
        """The folders of the watched files (each on its own, not what is below it)."""
        home = {self.home} if self.home is not None else set()
        return frozenset({path.parent for path in self.watched} | home)

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
    roots = project_roots(pool)
    home = pool_folder(pool)
    # Data files are named from the pool's folder, never from wherever the worker started.
    bases = (home,) if home is not None else ()
    sources = Sources()
    files: dict[str, tuple[Path, ...]] = {}
    versions: dict[str, str] = {}
    origin = closure(origin_module(pool), modules, inside=roots, sources=sources)
    everything: dict[str, Path] = dict(origin)
    watched = set(code_files(origin, bases, sources))
    for name, spec in pool.agents.items():
        own = closure([target_module(spec.target)], modules, inside=roots, sources=sources)
        everything.update(own)
        agent_files = tuple(code_files(own, bases, sources))
        files[name] = agent_files
        versions[name] = digest(agent_files)
        watched.update(agent_files)
    return CodeMap(
        versions=versions, files=files, modules=everything, watched=frozenset(watched), home=home
    )
