"""What a production process loads from openrtc-testing imports nothing test-only.

pytest and pytest-asyncio are the ``pytest`` extra: importing the package, or loading it as an
OpenRTC plugin, must not import them, and pytest (which loads the ``pytest11`` entry point
whenever openrtc-testing is installed) must still start when pytest-asyncio is missing.
Each check runs in a fresh interpreter, since this one has pytest loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

TEST_ONLY_MODULES = ("pytest", "_pytest", "pytest_asyncio")


def run_python(code: str, *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def test_package_and_openrtc_plugin_do_not_import_pytest() -> None:
    result = run_python(
        f"""
        import importlib.metadata, json, sys

        import openrtc_testing
        import openrtc_testing.plugin

        # what openrtc_core's plugin host imports for this distribution in a worker
        for ep in importlib.metadata.distribution("openrtc-testing").entry_points:
            if ep.group == "openrtc.plugins":
                ep.load()
        test_only = {TEST_ONLY_MODULES!r}
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in test_only)))
        """
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing openrtc_testing loaded test-only modules: {loaded}"


def test_pytest_starts_without_pytest_asyncio(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (tmp_path / "test_user_suite.py").write_text(
        textwrap.dedent(
            """
            def test_plain():
                pass


            def test_needs_dispatch(openrtc_dispatch):
                pass
            """
        ),
        encoding="utf-8",
    )
    # pytest-asyncio is installed here: hide it (--assert=plain: the rewrite hook would find it)
    # and skip its own pytest11 entry point
    result = run_python(
        """
        import importlib.abc
        import sys


        class HidePytestAsyncio(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "pytest_asyncio":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None


        sys.meta_path.insert(0, HidePytestAsyncio())
        import pytest

        args = ["-p", "no:asyncio", "-p", "no:cacheprovider", "--assert=plain", "-q"]
        sys.exit(pytest.main(args))
        """,
        cwd=tmp_path,
    )
    out = result.stdout + result.stderr
    # the plugin loaded; only the test using the async fixture errors, saying what to install
    assert "1 passed, 1 error" in out, out
    assert "the openrtc_dispatch fixture needs pytest-asyncio" in out, out
    assert "openrtc-testing[pytest]" in out, out


def test_every_exported_name_resolves() -> None:
    import openrtc_testing

    for name in openrtc_testing.__all__:
        assert getattr(openrtc_testing, name) is not None, name
