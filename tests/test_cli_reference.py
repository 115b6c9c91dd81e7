"""docs/cli-reference.md is generated from the openrtc typer app: the committed page must match."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "docs" / "gen_cli.py"


def load_generator() -> ModuleType:
    # The generators import their shared helper from docs/, as when run as scripts.
    if str(GENERATOR.parent) not in sys.path:
        sys.path.insert(0, str(GENERATOR.parent))
    spec = importlib.util.spec_from_file_location("openrtc_docs_gen_cli", GENERATOR)
    assert spec is not None and spec.loader is not None, f"cannot load {GENERATOR}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    status = load_generator().main(["--check"])
    assert status == 0, (
        "docs/cli-reference.md differs from what the CLI generates: run python docs/gen_cli.py\n"
        + capsys.readouterr().err
    )


def test_check_fails_on_a_stale_page(tmp_path: Path) -> None:
    page = tmp_path / "cli-reference.md"
    page.write_text("# Command reference\n\nedited by hand\n", encoding="utf-8")
    assert load_generator().main(["--check", "--page", str(page)]) == 1
    assert page.read_text(encoding="utf-8") == "# Command reference\n\nedited by hand\n"


def test_the_page_lists_every_command_and_livekit_flag() -> None:
    text = (ROOT / "docs" / "cli-reference.md").read_text(encoding="utf-8")
    for command in ("dev", "start", "console", "connect", "download-files", "plugins"):
        assert f"## openrtc {command}\n" in text
    assert "## openrtc simulate\n" in text
    for flag in ("`--url`", "`--api-key`", "`--drain-timeout`", "`--room`", "`LIVEKIT_URL`"):
        assert flag in text
    assert "`--install-completion`" in text
    assert "`--version`" in text


def test_the_page_ignores_the_disabled_plugins_of_the_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENRTC_DISABLE_PLUGINS", "testing")
    assert "## openrtc simulate\n" in load_generator().render()
