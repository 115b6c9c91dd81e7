"""Folders full of files nobody's code is made of, for tests and benchmarks of what a worker
watches: a project folder that holds a virtualenv is the common case."""

from __future__ import annotations

from pathlib import Path
from typing import Final

FILES_PER_FOLDER: Final = 25
SUFFIXES: Final = (".py", ".py", ".py", ".pyi", ".txt")


def virtualenv_like(root: Path, count: int) -> Path:
    """`count` tiny files under ``root/venv``, nested the way a virtualenv's installed
    packages are (``lib/python3.X/site-packages/<package>/<module>``); the folder made."""
    venv = root / "venv"
    packages = venv / "lib" / "python3.11" / "site-packages"
    for first in range(0, count, FILES_PER_FOLDER):
        folder = packages / f"package_{first // FILES_PER_FOLDER:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(first, min(first + FILES_PER_FOLDER, count)):
            suffix = SUFFIXES[n % len(SUFFIXES)]
            (folder / f"module_{n % FILES_PER_FOLDER:02d}{suffix}").write_text(f"# {n}\n")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    return venv
