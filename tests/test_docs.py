"""The documentation keeps up with the code: every hook is documented, every page is reachable."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from openrtc_core import hookspecs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HOOKS_PAGE = DOCS / "hooks.md"
MKDOCS_YML = ROOT / "mkdocs.yml"


def hookspec_names() -> set[str]:
    return {
        name
        for name, func in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("openrtc_") and func.__module__ == hookspecs.__name__
    }


def documented_hooks() -> set[str]:
    text = HOOKS_PAGE.read_text(encoding="utf-8")
    return set(re.findall(r"^## (openrtc_\w+)[ \t]*$", text, flags=re.MULTILINE))


def nav_pages(entries: Any) -> Iterator[str]:
    """Every page path in an mkdocs ``nav`` (strings, ``{title: page}``, nested sections)."""
    if isinstance(entries, str):
        if "://" not in entries:  # external links are allowed in a nav
            yield entries
    elif isinstance(entries, list):
        for entry in entries:
            yield from nav_pages(entry)
    elif isinstance(entries, dict):
        for value in entries.values():
            yield from nav_pages(value)


def load_nav() -> list[str]:
    config = yaml.safe_load(MKDOCS_YML.read_text(encoding="utf-8"))
    return list(nav_pages(config.get("nav")))


def test_hookspecs_are_found() -> None:
    # Guards the two tests below against passing on an empty set.
    assert "openrtc_route_job" in hookspec_names()


def test_every_hookspec_has_a_section_in_hooks_md() -> None:
    missing = sorted(hookspec_names() - documented_hooks())
    assert not missing, (
        f"hooks without a '## <name>' section in {HOOKS_PAGE.relative_to(ROOT)}: "
        f"{', '.join(missing)}; document each one (signature, parameters, return contract)."
    )


def test_hooks_md_documents_no_unknown_hook() -> None:
    stale = sorted(documented_hooks() - hookspec_names())
    assert not stale, (
        f"{HOOKS_PAGE.relative_to(ROOT)} documents hooks that openrtc_core.hookspecs does not "
        f"define: {', '.join(stale)}; remove or rename those sections."
    )


def test_every_nav_page_exists() -> None:
    pages = load_nav()
    assert pages, f"{MKDOCS_YML.name} has an empty nav"
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, f"pages listed in {MKDOCS_YML.name} nav but missing in docs/: {missing}"


def test_every_page_is_in_the_nav() -> None:
    pages = set(load_nav())
    orphans = sorted(
        str(path.relative_to(DOCS))
        for path in DOCS.rglob("*.md")
        if str(path.relative_to(DOCS)) not in pages
    )
    assert not orphans, f"pages in docs/ that {MKDOCS_YML.name} nav does not list: {orphans}"
