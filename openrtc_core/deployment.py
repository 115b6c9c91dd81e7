"""Which deployment of the code a worker is: its deployment version.

The *deployment version* names what was shipped: ``--deploy-version V`` on a run verb
(``pool.run(deploy_version=...)``), else ``OPENRTC_DEPLOY_VERSION``, else the git commit of
the pool's source folder (``-dirty`` when that folder has uncommitted changes), else a hash
of the Python files in it. A deploy controller runs a generation of workers per version.
It is neither the *installed version* (``openrtc version``: which openrtc-core and
livekit-agents are installed) nor the *code version* (``AgentPool(code_version=)``, or the
content hash a reload strategy stamps on an agent), which changes inside one running
deployment whenever code reloads. The former spellings (``--version`` on a run verb,
``OPENRTC_VERSION``, ``pool.run(version=)``) still work, with a note.

The command line resolves it once and exports it as ``OPENRTC_DEPLOY_VERSION``, so forked
workers, job processes and child processes all report the same value; a worker built some
other way (``pool.create_server()`` in a test) resolves it from its pool on first use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

import attrs

from .errors import PoolConfigError
from .origins import CallOrigin, ModuleOrigin, Origin

logger = logging.getLogger("openrtc.deploy")

VERSION_ENV: Final = "OPENRTC_DEPLOY_VERSION"
"""The deployment version, set by the command line (and inherited by every process it
starts) or by whoever runs the worker."""
OLD_VERSION_ENV: Final = "OPENRTC_VERSION"
"""The former name of :data:`VERSION_ENV`, still read."""
VERSION_FLAG: Final = "--deploy-version"
"""The run verbs' flag that names the deployment version."""
OLD_VERSION_FLAG: Final = "--version"
VERSION_OPTION: Final = "deploy_version"
"""Its run option (:mod:`.runoptions`; ``pool.run(deploy_version=...)``)."""

SOURCES: Final = ("flag", "env", "git", "content")
"""Where a deployment version can come from, highest precedence first."""

VERSION_PATTERN: Final = re.compile(r"[A-Za-z0-9._+:@/-]{1,128}")
VERSION_RULE: Final = (
    "a deployment version is 1 to 128 letters, digits and . _ + : @ / - (a release tag, a "
    "build number or a commit, e.g. v1.4.2 or build-812)"
)
GIT_TIMEOUT_S: Final = 5.0
CONTENT_PREFIX: Final = "sha-"
HASH_CHARS: Final = 12
SKIPPED_DIRS: Final = frozenset({"__pycache__", "site-packages", "node_modules"})
"""Folders the content hash never walks into (nor any whose name starts with ``.``)."""
MAX_HASHED_FILES: Final = 5000
MAX_WALKED_DIRS: Final = 20000
"""The content hash stops after this many files or folders (walked in sorted order, so
always the same ones): a pool whose folder is a huge tree still starts quickly."""
DIRECTORY_LOADER: Final = "openrtc_core.targets:pool_from_directory"
"""The function that builds a pool from a directory target (its origin's only argument is
the directory)."""


@attrs.frozen
class DeployVersion:
    """A deployment version and where it came from: ``flag``, ``env``, ``git`` or
    ``content``."""

    value: str
    source: str = attrs.field(validator=attrs.validators.in_(SOURCES))

    def __str__(self) -> str:
        return self.value


def check_version(raw: str, source: str) -> DeployVersion:
    """`raw` as given by `source` (``flag`` or ``env``), or a :class:`PoolConfigError` naming
    it and saying what a version may hold."""
    if not VERSION_PATTERN.fullmatch(raw):
        given = f"{VERSION_FLAG} {raw!r}" if source == "flag" else f"{VERSION_ENV}={raw!r}"
        raise PoolConfigError(f"{given}: {VERSION_RULE}")
    return DeployVersion(raw, source)


def checked_version(raw: str) -> str:
    """`raw` when it is a usable deployment version (the run option's parser)."""
    if not VERSION_PATTERN.fullmatch(raw):
        raise ValueError(VERSION_RULE)
    return raw


class Located(Protocol):
    """What a deployment version is read from: a pool, which knows where it came from."""

    @property
    def origin(self) -> Origin: ...


def pool_source_dir(pool: Located) -> Path | None:
    """The folder the pool's code lives in: a directory target's own folder, else the folder
    of the file that built the pool (a module, a script, the module of a function that built
    it); None when no file is known (a pool built in an interactive session)."""
    origin = pool.origin
    if isinstance(origin, CallOrigin):
        if origin.function == DIRECTORY_LOADER and origin.args:
            return Path(str(origin.args[0])).resolve()
        file = _module_file(origin.function.partition(":")[0])
    elif isinstance(origin, ModuleOrigin):
        file = origin.file or _module_file(origin.module)
    else:
        return None
    return Path(file).resolve().parent if file else None


def _module_file(module: str) -> str:
    found = sys.modules.get("__main__" if module == "__mp_main__" else module)
    return str(getattr(found, "__file__", None) or "")


def resolve_deploy_version(
    pool: Located, explicit: str | None = None, *, use_env: bool = True
) -> DeployVersion:
    """The deployment version of `pool`'s code: `explicit` (``--version``), else
    ``OPENRTC_VERSION`` (unless `use_env` is false: a deploy controller resolving the code
    now on disk for its next generation), else the git commit of the pool's source folder
    (:func:`pool_source_dir`; the working directory when no file is known), else a hash of
    the Python files in it.

    :raises PoolConfigError: `explicit` or ``OPENRTC_VERSION`` is not a usable version.
    """
    if explicit is not None:
        return check_version(explicit, "flag")
    raw = exported() if use_env else ""
    if raw:
        return check_version(raw, "env")
    folder = pool_source_dir(pool) or Path.cwd()
    commit = git_version(folder)
    if commit is not None:
        return DeployVersion(commit, "git")
    return DeployVersion(content_version(folder), "content")


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_version(folder: Path) -> str | None:
    """The short commit checked out in `folder`'s repository, with ``-dirty`` when `folder`
    has changes not committed (bytecode caches aside); None when `folder` is in no git
    repository, the repository has no commit yet, or git is missing or too slow."""
    head = _git(folder, "rev-parse", f"--short={HASH_CHARS}", "HEAD")
    if head is None or not head.strip():
        return None
    status = _git(folder, "status", "--porcelain", "--", ".")
    if status is None:
        return None
    changed = [line for line in status.splitlines() if line.strip() and not _is_cache(line)]
    return head.strip() + ("-dirty" if changed else "")


def _is_cache(status_line: str) -> bool:
    """An untracked bytecode cache: running the code makes one, which changes nothing."""
    if not status_line.startswith("??"):
        return False
    path = status_line[3:].strip().strip('"').rstrip("/")
    return "__pycache__" in path.split("/") or path.endswith((".pyc", ".pyo"))


def python_files(folder: Path) -> Iterator[Path]:
    """The ``*.py`` files under `folder`, in sorted order, skipping hidden folders, bytecode
    caches and installed packages; at most :data:`MAX_HASHED_FILES`."""
    count = 0
    for walked, (root, dirs, files) in enumerate(os.walk(folder)):
        if walked >= MAX_WALKED_DIRS:
            return
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS)
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            if count >= MAX_HASHED_FILES:
                return
            count += 1
            yield Path(root, name)


def content_version(folder: Path) -> str:
    """``sha-`` and 12 hex digits of a SHA-256 over the relative paths and bytes of the
    Python files under `folder`: it changes when any of them does."""
    digest = hashlib.sha256()
    for path in sorted(python_files(folder), key=lambda p: p.relative_to(folder).as_posix()):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        name = path.relative_to(folder).as_posix().encode()
        digest.update(b"%d:%s\0%d:" % (len(name), name, len(data)))
        digest.update(data)
    return CONTENT_PREFIX + digest.hexdigest()[:HASH_CHARS]


# -- this process's version ------------------------------------------------------------------

_RESOLVED: dict[Path | None, DeployVersion] = {}
"""Versions resolved from a pool's folder in this process (nothing exported one)."""
_unannounced: tuple[DeployVersion, int] | None = None
"""The version the command line exported and the process that did, until that process's
worker says it once in its log (a worker forked from it does not say it again)."""


def deploy_version(pool: Located | None = None) -> str:
    """This process's deployment version: ``OPENRTC_VERSION`` (the command line exported
    it), else resolved from `pool` on first use and kept; "" with neither.

    :raises PoolConfigError: ``OPENRTC_VERSION`` is set to something that is not a version.
    """
    raw = exported()
    if raw:
        return check_version(raw, "env").value
    if pool is None:
        return ""
    folder = pool_source_dir(pool)
    if folder not in _RESOLVED:
        _RESOLVED[folder] = resolve_deploy_version(pool)
    return _RESOLVED[folder].value


def exported() -> str:
    """The deployment version the environment gives (:data:`VERSION_ENV`, else its former
    name), stripped; "" when neither is set."""
    for name in (VERSION_ENV, OLD_VERSION_ENV):
        raw = os.environ.get(name, "").strip()
        if raw:
            return raw
    return ""


def export_deploy_version(version: DeployVersion) -> Callable[[], None]:
    """Make `version` this process's deployment version, and that of every process it starts
    from now on (``OPENRTC_DEPLOY_VERSION``); the worker names it once in its log. Returns what puts
    things back as they were (for a worker that did not start after all)."""
    global _unannounced
    previous = os.environ.get(VERSION_ENV)
    os.environ[VERSION_ENV] = version.value
    _unannounced = (version, os.getpid())

    def withdraw() -> None:
        global _unannounced
        _unannounced = None
        if previous is None:
            os.environ.pop(VERSION_ENV, None)
        else:
            os.environ[VERSION_ENV] = previous

    return withdraw


# -- the logs --------------------------------------------------------------------------------


class DeployLogFields(logging.Filter):
    """Names the deployment on every log record (``deploy``), with the fields plugins add
    (``openrtc_log_fields``). A field the record already has is kept."""

    def __init__(self, deploy: str, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.fields = {"deploy": deploy, **(fields or {})}

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in self.fields.items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def install_deploy_log_fields(deploy: str, fields: Mapping[str, Any] | None = None) -> None:
    """In a worker, name its deployment (and `fields`) on every record its log handlers
    write, and say the version once (:func:`announce_deploy_version`)."""
    log_filter = DeployLogFields(deploy, fields)
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, DeployLogFields)]:
            handler.removeFilter(old)
        handler.addFilter(log_filter)
    announce_deploy_version()


def announce_deploy_version() -> None:
    """Log ``deploy version V (from SOURCE)`` once, in the process that exported it (a worker
    forked from that process stays quiet); call it once logging is set up."""
    global _unannounced
    if _unannounced is None or _unannounced[1] != os.getpid():
        return
    version, _ = _unannounced
    _unannounced = None
    logger.info("deploy version %s (from %s)", version.value, version.source)
