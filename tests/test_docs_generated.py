"""docs/hooks.md is generated from openrtc_core.hookspecs: the committed page must match."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "docs" / "gen_hooks.py"


def load_generator() -> ModuleType:
    # The generators import their shared helper from docs/, as when run as scripts.
    if str(GENERATOR.parent) not in sys.path:
        sys.path.insert(0, str(GENERATOR.parent))
    spec = importlib.util.spec_from_file_location("openrtc_docs_gen_hooks", GENERATOR)
    assert spec is not None and spec.loader is not None, f"cannot load {GENERATOR}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hooks_page_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    status = load_generator().main(["--check"])
    assert status == 0, (
        "docs/hooks.md differs from what the hook specs generate: run python docs/gen_hooks.py\n"
        + capsys.readouterr().err
    )


def test_check_fails_on_a_stale_page(tmp_path: Path) -> None:
    page = tmp_path / "hooks.md"
    page.write_text("# Hook reference\n\nedited by hand\n", encoding="utf-8")
    assert load_generator().main(["--check", "--page", str(page)]) == 1
    assert page.read_text(encoding="utf-8") == "# Hook reference\n\nedited by hand\n"
