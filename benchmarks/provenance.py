"""What a benchmark writes down about where it ran, and checks of where it writes.

Shared by the density and soak benchmarks: both check every output path before a run
starts (a run takes minutes to hours), and both record the versions and the source revision
the figures came from.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def unwritable_dir(directory: Path) -> str:
    """Why no file can be created in `directory`, or "" when one can (tried, not guessed)."""
    if not directory.exists():
        return f"directory {directory} does not exist"
    if not directory.is_dir():
        return f"{directory} is not a directory"
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".openrtc-bench-probe-")
    except OSError as exc:
        return f"cannot write in {directory}: {exc.strerror or exc}"
    os.close(fd)
    os.unlink(probe)
    return ""


def unwritable_file(path: Path) -> str:
    """Why `path` cannot be written as a file in an existing directory, or ""."""
    if path.is_dir():
        return f"{path} is a directory"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    return unwritable_dir(path.parent)


def uncreatable_dir(path: Path) -> str:
    """Why `path` cannot be used (or made, parents and all) as a directory, or ""."""
    if path.exists():
        return unwritable_dir(path)
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    return unwritable_dir(ancestor)


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def source_revision() -> str:
    """The git commit the benchmark ran from, with "+changes" when the tree was edited."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}+changes" if dirty else commit
