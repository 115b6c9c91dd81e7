"""Test, lint, type and docs sessions for openrtc-core and every plugin under plugins/.

Plugin folders are discovered from ``plugins/*/pyproject.toml`` each time nox runs: adding a
plugin adds its session, with no edit here. Folders starting with ``_`` (templates) are skipped.

    nox -l                              list sessions
    nox -s tests                        core tests
    nox -s "plugin(openrtc-testing)"    one plugin's tests
    nox -s tests -- -k routing          arguments after -- go to pytest
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import nox

nox.needs_version = ">=2024.4"
nox.options.default_venv_backend = "venv"  # uv may not be installed
nox.options.reuse_venv = "yes"  # reinstalling is quick; rebuilding livekit's stack is not
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["tests", "plugin", "lint", "types", "docs"]

ROOT = Path(__file__).parent
PLUGINS_DIR = ROOT / "plugins"
# Every plugin's tests drive the pool through the loopback harness in this distribution.
TESTING_PLUGIN = "openrtc-testing"


def discover_plugins() -> list[str]:
    """Folder names of the plugin distributions under plugins/, sorted."""
    return sorted(
        manifest.parent.name
        for manifest in PLUGINS_DIR.glob("*/pyproject.toml")
        if not manifest.parent.name.startswith("_")
    )


PLUGINS = discover_plugins()


def dev_requirement(name: str) -> str:
    """The requirement for `name` in openrtc-core's ``dev`` extra, so versions live in one place."""
    with (ROOT / "pyproject.toml").open("rb") as fh:
        dev = tomllib.load(fh)["project"].get("optional-dependencies", {}).get("dev", [])
    for requirement in dev:
        match = re.match(r"\s*([A-Za-z0-9._-]+)", requirement)
        if match and _normalize(match.group(1)) == _normalize(name):
            return str(requirement)
    raise LookupError(f"add {name!r} to [project.optional-dependencies] dev in pyproject.toml")


def _normalize(project: str) -> str:
    return re.sub(r"[-_.]+", "-", project).lower()


def extras_of(folder: str) -> list[str]:
    """The plugin's optional features (``openrtc-tenancy[redis]``): its tests cover them too."""
    with (PLUGINS_DIR / folder / "pyproject.toml").open("rb") as fh:
        project = tomllib.load(fh)["project"]
    return sorted(project.get("optional-dependencies", {}))


def with_local_dependencies(folder: str) -> list[str]:
    """`folder` after the plugins of this repo it depends on (openrtc-deploy needs
    openrtc-workers), which are not on the package index."""
    with (PLUGINS_DIR / folder / "pyproject.toml").open("rb") as fh:
        requirements = tomllib.load(fh)["project"].get("dependencies", [])
    names = set()
    for requirement in requirements:
        match = re.match(r"\s*([A-Za-z0-9._-]+)", requirement)
        if match:
            names.add(_normalize(match.group(1)))
    local = [plugin for plugin in PLUGINS if _normalize(plugin) in names]
    return [*local, folder]


def editable(*folders: str) -> list[str]:
    """``-e plugins/<folder>[extras]`` for each folder, without duplicates, in order."""
    args: list[str] = []
    for folder in dict.fromkeys(folders):
        extras = extras_of(folder)
        args += ["-e", f"plugins/{folder}" + (f"[{','.join(extras)}]" if extras else "")]
    return args


@nox.session
def tests(session: nox.Session) -> None:
    """The core tests, with the loopback test harness installed."""
    session.install("-e", ".[dev]", *editable(TESTING_PLUGIN))
    session.run("pytest", "tests", *session.posargs)


@nox.session
@nox.parametrize("folder", PLUGINS, ids=PLUGINS)
def plugin(session: nox.Session, folder: str) -> None:
    """One plugin's own tests, with only the core, that plugin and the test harness installed."""
    tests_dir = PLUGINS_DIR / folder / "tests"
    if not tests_dir.is_dir():
        session.error(f"plugins/{folder} has no tests/ folder; every plugin ships its tests")
    session.install("-e", ".[dev]", *editable(TESTING_PLUGIN, *with_local_dependencies(folder)))
    session.run("pytest", f"plugins/{folder}/tests", *session.posargs)


@nox.session
def integration(session: nox.Session) -> None:
    """Every test, with the core and every plugin installed together."""
    session.install("-e", ".[dev]", *editable(TESTING_PLUGIN, *PLUGINS))
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting (configuration in pyproject.toml)."""
    session.install(dev_requirement("ruff"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def types(session: nox.Session) -> None:
    """mypy --strict over the files listed in pyproject.toml, against installed dependencies."""
    session.install("-e", ".[dev]", *editable(TESTING_PLUGIN, *PLUGINS))
    session.run("mypy", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site; warnings (broken links, missing pages) fail the build."""
    session.install(dev_requirement("mkdocs"))
    site_dir = os.path.join(session.create_tmp(), "site")
    session.run("mkdocs", "build", "--strict", "--site-dir", site_dir, *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The density benchmark against plain livekit workers; arguments after -- go to it.

    nox -s bench -- --out docs/benchmarks.md    the full sweep, rewrites the committed page
    nox -s bench -- --quick            N = 1, 10 in about two minutes
    """
    # openrtc-workers: variant E runs its supervisor.
    session.install("-e", ".[dev]", *editable(TESTING_PLUGIN, "openrtc-workers"), "matplotlib")
    session.run("python", "-m", "benchmarks.density", *session.posargs)
