"""Every distribution in this repo declares exactly what its code imports.

The distributions are openrtc-core (the root ``pyproject.toml``, package ``openrtc_core``) and
every plugin folder ``plugins/<dist>/`` with a ``pyproject.toml`` (found by globbing, so a new
plugin is checked with no edit here; folders starting with ``_`` are templates and skipped).

For each one, the AST of every ``.py`` file of its package(s) is walked for imports, at module
level, inside functions and under ``if TYPE_CHECKING:``. Relative imports, the standard library
and the distribution's own packages are left out; the rest are mapped to distributions with
``importlib.metadata`` (for namespace packages such as ``livekit`` or ``google``, by which
distribution ships the files of the imported subpackage). Tests are not walked, so a module
imported only by tests never counts for the runtime dependencies. The checks:

* every imported distribution is declared, in ``[project].dependencies`` or in an extra (an
  import only under ``TYPE_CHECKING`` may instead come through a declared dependency; that is
  reported as a warning);
* every declared dependency is imported somewhere, bar the short ``NOT_IMPORTED`` list below;
  the same for every extra that is not a tooling extra (``dev``, ``docs``, ...);
* what a production process loads (each package's ``__init__``, console scripts and entry
  points other than ``pytest11``, and everything they import at module level) needs no extra,
  and no distribution requires pytest or a pytest plugin outside an extra;
* a plugin imports from another distribution of this repo no private name and no module whose
  path has a component starting with ``_``.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGINS_DIR = ROOT / "plugins"
CORE = "openrtc-core"

# Declared dependencies that no module imports but that are needed all the same, by
# distribution. Keep it short, one reason each; an entry that becomes imported, or that is no
# longer declared, fails the test so the list cannot go stale.
NOT_IMPORTED: Mapping[str, Mapping[str, str]] = {
    CORE: {
        # The native VAD and end-of-turn models behind livekit.agents.inference, which the
        # built-in prewarm loads (openrtc_core/builtin/prewarm.py: inference.VAD()); only
        # livekit.agents imports livekit.local_inference.
        "livekit-local-inference": "models loaded through livekit.agents.inference",
    },
}

# Extras that hold tools (linters, test runners, docs builders) rather than code's imports: their
# requirements are not expected to be imported by the package.
TOOLING_EXTRAS = frozenset({"dev", "docs", "lint", "test", "tests", "typing"})

# Entry-point groups whose targets are loaded only under test runners, never in production.
TEST_ENTRY_POINT_GROUPS = frozenset({"pytest11"})

# Distributions that are test-only: never a plain [project].dependencies requirement.
TEST_ONLY = re.compile(r"^pytest(-.*)?$")

_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r"\bextra\s*==")


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = _REQUIREMENT_NAME.match(requirement)
    if match is None:
        raise ValueError(f"cannot read a distribution name from requirement {requirement!r}")
    return canonical(match.group(1))


# --------------------------------------------------------------------------------------------
# the distributions of this repo
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    dist: str
    text: str
    line: int  # in pyproject.toml


@dataclass(frozen=True)
class Distribution:
    name: str
    root: Path
    packages: Mapping[str, Path]  # import name -> package folder
    required: Mapping[str, Requirement]
    extras: Mapping[str, Mapping[str, Requirement]]
    entry_modules: tuple[str, ...]  # modules a production process may load by name
    is_plugin: bool

    @property
    def pyproject(self) -> Path:
        return self.root / "pyproject.toml"


def _line_of(lines: list[str], requirement: str) -> int:
    for number, text in enumerate(lines, start=1):
        if f'"{requirement}"' in text or f"'{requirement}'" in text:
            return number
    return 0


def _find_packages(root: Path, project: Mapping[str, Any], tool: Mapping[str, Any]) -> list[Path]:
    wheel = tool.get("hatch", {}).get("build", {}).get("targets", {}).get("wheel", {})
    if "packages" in wheel:
        return [root / str(p) for p in wheel["packages"]]
    src = root / "src"
    if src.is_dir():
        return sorted(p for p in src.iterdir() if (p / "__init__.py").is_file())
    guess = root / canonical(str(project["name"])).replace("-", "_")
    return [guess] if (guess / "__init__.py").is_file() else []


def load_distribution(root: Path, *, is_plugin: bool) -> Distribution:
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    lines = text.splitlines()
    project: dict[str, Any] = data["project"]
    name = canonical(str(project["name"]))

    def requirements(items: list[str]) -> dict[str, Requirement]:
        return {
            requirement_name(r): Requirement(requirement_name(r), r, _line_of(lines, r))
            for r in items
        }

    package_dirs = _find_packages(root, project, data.get("tool", {}))
    assert package_dirs, f"{name}: no package found under {root} (set hatch's wheel packages)"
    entry_modules: list[str] = []
    for target in project.get("scripts", {}).values():
        entry_modules.append(str(target).split(":")[0].strip())
    for group, points in project.get("entry-points", {}).items():
        if group not in TEST_ENTRY_POINT_GROUPS:
            entry_modules.extend(str(t).split(":")[0].strip() for t in points.values())
    return Distribution(
        name=name,
        root=root,
        packages={p.name: p for p in package_dirs},
        required=requirements(project.get("dependencies", [])),
        extras={
            extra: requirements(items)
            for extra, items in project.get("optional-dependencies", {}).items()
        },
        entry_modules=tuple(entry_modules),
        is_plugin=is_plugin,
    )


def plugin_roots() -> list[Path]:
    return sorted(
        manifest.parent
        for manifest in PLUGINS_DIR.glob("*/pyproject.toml")
        if not manifest.parent.name.startswith("_")
    )


@functools.cache
def distributions() -> tuple[Distribution, ...]:
    core = load_distribution(ROOT, is_plugin=False)
    return (core, *(load_distribution(r, is_plugin=True) for r in plugin_roots()))


def distribution(name: str) -> Distribution:
    return next(d for d in distributions() if d.name == name)


@functools.cache
def repo_packages() -> Mapping[str, str]:
    """Import name -> distribution, for the packages of this repo (editable installs are not
    in ``packages_distributions()``)."""
    return {pkg: d.name for d in distributions() for pkg in d.packages}


DIST_NAMES = [d.name for d in distributions()]
PLUGIN_NAMES = [d.name for d in distributions() if d.is_plugin]


# --------------------------------------------------------------------------------------------
# imports
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    module: str  # absolute dotted module ("" never: relative imports are resolved or dropped)
    name: str | None  # for ``from module import name``
    path: Path
    line: int
    typing_only: bool  # under ``if TYPE_CHECKING:``
    eager: bool  # runs when the importing module is imported (not in a function)

    @property
    def top(self) -> str:
        return self.module.split(".")[0]

    @property
    def full(self) -> str:
        """The most specific module this may import (``from livekit import api`` ->
        ``livekit.api``)."""
        return f"{self.module}.{self.name}" if self.name and self.name != "*" else self.module

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"

    def __str__(self) -> str:
        what = f"from {self.module} import {self.name}" if self.name else f"import {self.module}"
        return f"{self.where} {what}" + (" (TYPE_CHECKING)" if self.typing_only else "")


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def module_name(package: str, package_dir: Path, path: Path) -> str:
    parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def collect_imports(path: Path, module: str) -> list[Import]:
    """Every import in ``path``; relative ones made absolute against ``module``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: list[Import] = []

    def visit(node: ast.AST, *, lazy: bool, typing_only: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(alias.name, None, path, node.lineno, typing_only, not lazy))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                found.append(Import(target, alias.name, path, node.lineno, typing_only, not lazy))
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                visit(stmt, lazy=lazy, typing_only=True)
            for stmt in node.orelse:
                visit(stmt, lazy=lazy, typing_only=typing_only)
            return
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            lazy = True
        for child in ast.iter_child_nodes(node):
            visit(child, lazy=lazy, typing_only=typing_only)

    visit(tree, lazy=False, typing_only=False)
    return found


def _is_test_file(path: Path) -> bool:
    return (
        path.name == "conftest.py"
        or path.name.startswith("test_")
        or any(part in {"tests", "test"} for part in path.parts)
    )


@dataclass(frozen=True)
class PackageScan:
    modules: Mapping[str, list[Import]]  # module of the distribution -> its imports

    def imports(self) -> Iterator[Import]:
        for imports in self.modules.values():
            yield from imports


@functools.cache
def scan(dist_name: str) -> PackageScan:
    dist = distribution(dist_name)
    modules: dict[str, list[Import]] = {}
    for package, package_dir in dist.packages.items():
        for path in sorted(package_dir.rglob("*.py")):
            rel = path.relative_to(package_dir)
            if "__pycache__" in rel.parts or _is_test_file(rel):
                continue
            name = module_name(package, package_dir, path)
            modules[name] = collect_imports(path, name)
    return PackageScan(modules)


# --------------------------------------------------------------------------------------------
# import name -> distribution
# --------------------------------------------------------------------------------------------


@functools.cache
def _packages_distributions() -> Mapping[str, tuple[str, ...]]:
    return {
        top: tuple(sorted({canonical(d) for d in dists}))
        for top, dists in importlib.metadata.packages_distributions().items()
    }


@functools.cache
def _namespace_index(top: str) -> Mapping[str, frozenset[str]]:
    """Dotted module prefix under ``top`` -> distributions shipping files there."""
    index: dict[str, set[str]] = {}
    for dist in _packages_distributions().get(top, ()):
        for file in importlib.metadata.distribution(dist).files or ():
            parts = list(PurePosixPath(str(file)).parts)
            if not parts or parts[0] != top or "__pycache__" in parts:
                continue
            parts[-1] = parts[-1].split(".")[0]  # agent.py, _native.cpython-311-...so -> stem
            if parts[-1] == "__init__":
                parts.pop()
            for i in range(2, len(parts) + 1):
                index.setdefault(".".join(parts[:i]), set()).add(dist)
    return {prefix: frozenset(dists) for prefix, dists in index.items()}


def distributions_of(module: str) -> tuple[str, ...]:
    """The installed distribution(s) providing ``module``; () when none is installed."""
    top = module.split(".")[0]
    if top in repo_packages():
        return (repo_packages()[top],)
    candidates = _packages_distributions().get(top, ())
    if len(candidates) <= 1:
        return candidates
    index = _namespace_index(top)
    parts = module.split(".")
    for i in range(len(parts), 1, -1):
        owners = index.get(".".join(parts[:i]))
        if owners:
            return tuple(sorted(owners))
    return candidates  # ``import livekit`` itself: any of them


def third_party(dist: Distribution, imp: Import) -> bool:
    return (
        bool(imp.module) and imp.top not in sys.stdlib_module_names and imp.top not in dist.packages
    )


@functools.cache
def requires_closure(dists: frozenset[str]) -> frozenset[str]:
    """``dists`` and everything they require when installed (extras' requirements left out)."""
    seen: set[str] = set()
    todo = list(dists)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for req in requires:
            if not _EXTRA_MARKER.search(req):
                todo.append(requirement_name(req))
    return frozenset(seen)


def by_dist(dist: Distribution) -> tuple[dict[str, list[Import]], list[Import]]:
    """Third-party imports grouped by the distribution they come from, and the imports no
    installed distribution provides."""
    grouped: dict[str, list[Import]] = {}
    unresolved: list[Import] = []
    for imp in scan(dist.name).imports():
        if not third_party(dist, imp):
            continue
        owners = distributions_of(imp.full)
        if not owners:
            unresolved.append(imp)
        elif len(owners) > 1:
            # a bare namespace import (``import livekit``): it uses whichever candidates are
            # declared, or is reported against the first one
            declared = [o for o in owners if o in dist.required or _extras_declaring(dist, o)]
            owners = tuple(declared) or owners[:1]
        for owner in owners:
            grouped.setdefault(owner, []).append(imp)
    return grouped, unresolved


def _fmt(imports: list[Import], limit: int = 5) -> str:
    shown = "\n".join(f"      {imp}" for imp in imports[:limit])
    more = len(imports) - limit
    return shown + (f"\n      ... and {more} more" if more > 0 else "")


def _extras_declaring(dist: Distribution, name: str) -> list[str]:
    """The extras (tooling extras left out: they hold no runtime requirement) requiring
    ``name``."""
    return sorted(
        extra for extra, reqs in dist.extras.items() if name in reqs and extra not in TOOLING_EXTRAS
    )


def _require_no_problems(dist: Distribution, problems: list[str]) -> None:
    if problems:
        pytest.fail(
            f"{dist.name} ({dist.pyproject.relative_to(ROOT)}):\n" + "\n".join(problems),
            pytrace=False,
        )


# --------------------------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------------------------


def test_every_plugin_folder_is_checked() -> None:
    assert DIST_NAMES[0] == CORE
    assert len(set(DIST_NAMES)) == len(DIST_NAMES) == 1 + len(plugin_roots())
    for dist in distributions():
        assert scan(dist.name).modules, f"{dist.name}: no module found in {dist.packages}"


@pytest.mark.parametrize("dist_name", DIST_NAMES)
def test_imports_are_declared(dist_name: str) -> None:
    dist = distribution(dist_name)
    grouped, unresolved = by_dist(dist)
    problems = [
        f"  `{imp.full}` is provided by no installed distribution (install {dist.name} with "
        f"its extras, or declare what provides it): {imp}"
        for imp in unresolved
    ]
    closure = requires_closure(frozenset(dist.required))
    for owner, imports in sorted(grouped.items()):
        if owner == dist.name or owner in dist.required or _extras_declaring(dist, owner):
            continue
        if all(imp.typing_only for imp in imports) and owner in closure:
            warnings.warn(
                f"{dist.name}: `{owner}` is imported only under TYPE_CHECKING and is not "
                f"declared; it comes in through a declared dependency:\n{_fmt(imports)}",
                stacklevel=1,
            )
            continue
        tooling = sorted(e for e, reqs in dist.extras.items() if owner in reqs)
        problems.append(
            f"  undeclared: `{owner}` is imported but not in [project].dependencies"
            + (" (only under TYPE_CHECKING)" if all(i.typing_only for i in imports) else "")
            + (f" (only in tooling extra {', '.join(tooling)})" if tooling else "")
            + f":\n{_fmt(imports)}"
        )
    _require_no_problems(dist, problems)


@pytest.mark.parametrize("dist_name", DIST_NAMES)
def test_declared_dependencies_are_imported(dist_name: str) -> None:
    dist = distribution(dist_name)
    grouped, _ = by_dist(dist)
    allowed = NOT_IMPORTED.get(dist.name, {})
    problems: list[str] = []
    for name in sorted(allowed):
        if name not in dist.required:
            problems.append(f"  NOT_IMPORTED lists `{name}`, which is not declared: drop it")
        elif name in grouped:
            problems.append(
                f"  NOT_IMPORTED lists `{name}`, which is imported now: drop it\n"
                f"{_fmt(grouped[name])}"
            )
    pyproject = dist.pyproject.relative_to(ROOT).as_posix()
    sections = [("[project].dependencies", dist.required)] + [
        (f"[project.optional-dependencies].{extra}", reqs)
        for extra, reqs in sorted(dist.extras.items())
        if extra not in TOOLING_EXTRAS
    ]
    for section, reqs in sections:
        for name, req in sorted(reqs.items()):
            if name in grouped or name in allowed or name == dist.name:
                continue
            problems.append(
                f"  unused: `{req.text}` in {section} ({pyproject}:{req.line}) is imported by no "
                f"module of {', '.join(dist.packages)} (remove it, or add it to NOT_IMPORTED in "
                "tests/test_dependencies.py with the reason it is needed)"
            )
    _require_no_problems(dist, problems)


def eager_closure(dist: Distribution) -> set[str]:
    """Modules of ``dist`` a production process loads: each package, every console script and
    non-test entry point target, and all they import at module level, transitively."""
    modules = scan(dist.name).modules
    todo = [*dist.packages, *(m for m in dist.entry_modules if m.split(".")[0] in dist.packages)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in modules:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        for imp in modules[name]:
            if imp.eager and not imp.typing_only and imp.top in dist.packages:
                todo.append(imp.module)
                todo.append(imp.full)  # ``from . import offline`` loads the submodule
    return seen


@pytest.mark.parametrize("dist_name", DIST_NAMES)
def test_production_loads_nothing_optional(dist_name: str) -> None:
    dist = distribution(dist_name)
    problems = [
        f"  `{req.text}` is test-only: move it to an extra "
        f"({dist.pyproject.relative_to(ROOT).as_posix()}:{req.line})"
        for name, req in sorted(dist.required.items())
        if TEST_ONLY.match(name)
    ]
    loaded = eager_closure(dist)
    modules = scan(dist.name).modules
    for module in sorted(loaded):
        for imp in modules[module]:
            if not imp.eager or imp.typing_only or not third_party(dist, imp):
                continue
            for owner in distributions_of(imp.full):
                extras = _extras_declaring(dist, owner)
                if owner not in dist.required and extras:
                    problems.append(
                        f"  `{owner}` (extra {', '.join(extras)}) is imported at module level by "
                        f"{module}, which a production process loads: {imp}"
                    )
    _require_no_problems(dist, problems)


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


@pytest.mark.parametrize("dist_name", PLUGIN_NAMES)
def test_plugins_import_no_private_names(dist_name: str) -> None:
    """A plugin imports from another distribution of this repo only public modules and names,
    and from the core only what ``openrtc_core`` exports (its ``__all__``)."""
    import openrtc_core

    exported = set(openrtc_core.__all__)
    dist = distribution(dist_name)
    imports = list(scan(dist.name).imports())
    tests_dir = dist.root / "tests"
    for path in sorted(tests_dir.rglob("*.py")) if tests_dir.is_dir() else ():
        imports.extend(collect_imports(path, f"tests.{path.stem}"))
    problems: list[str] = []
    for imp in imports:
        owner = repo_packages().get(imp.top)
        if owner is None or owner == dist.name:
            continue
        module_parts = imp.module.split(".")[1:]
        if any(_private(p) for p in module_parts) or (imp.name and _private(imp.name)):
            problems.append(f"  private `{imp.full}` of {owner}: {imp}")
        elif owner == "openrtc-core" and (module_parts or (imp.name and imp.name not in exported)):
            problems.append(
                f"  `{imp.full}` is not exported by openrtc_core (add it to its __all__ or "
                f"use an exported name): {imp}"
            )
    _require_no_problems(dist, problems)
