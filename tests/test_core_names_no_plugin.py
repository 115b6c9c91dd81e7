"""The core names none of our plugins, except in its one table of hints.

A plugin declares its own flags, variables, keywords and commands; the core reads them from
the declarations. Knowledge of a plugin anywhere else in ``openrtc_core`` (its distribution,
its package, a flag, a variable or a command of it) fails here, naming file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

from openrtc_core.hints import HINTS

CORE = Path(__file__).resolve().parent.parent / "openrtc_core"
HINTS_MODULE = CORE / "hints.py"


def patterns() -> list[tuple[str, re.Pattern[str]]]:
    found = []
    for hint in HINTS:
        package = hint.distribution.replace("-", "_")
        words = [hint.distribution, package, *hint.flags, *hint.env]
        found += [(word, re.compile(rf"(?<![\w-]){re.escape(word)}(?![\w-])")) for word in words]
        for command in hint.commands:
            spelled = rf"openrtc {command}\b"
            found.append((f"command {command!r}", re.compile(spelled)))
    return found


def test_the_core_names_no_plugin_outside_the_hints() -> None:
    named = [
        f"{path.relative_to(CORE.parent)}:{number}: {word}"
        for path in sorted(CORE.rglob("*.py"))
        if path != HINTS_MODULE
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for word, pattern in patterns()
        if pattern.search(line)
    ]
    assert not named, "the core names a plugin:\n" + "\n".join(named)


def test_the_check_finds_a_plugin_named_in_the_core() -> None:
    lines = ["pip install openrtc-workers", "use --tenants FILE", "run `openrtc simulate`"]
    hits = [word for line in lines for word, pattern in patterns() if pattern.search(line)]
    assert hits == ["openrtc-workers", "--tenants", "command 'simulate'"]
