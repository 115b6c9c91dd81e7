"""``openrtc simulate --tenants/--tenant`` as far as openrtc-testing goes on its own.

Reading the tenant names from the file and placing the calls needs no tenancy plugin; what a
tenancy plugin does with them is tested with openrtc-tenancy
(plugins/openrtc-tenancy/tests/test_simulate_tenants.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def simulate(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    # No tenants file but the one the arguments name.
    env = {key: value for key, value in os.environ.items() if key != "OPENRTC_TENANTS"}
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "openrtc_core", "simulate", "examples/pool.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such tenants file"),
        ("[tenants.acme\nmax_sessions = 2\n", "invalid TOML"),
        ("tenants = 3\n", "tenants must be a table"),
        ("default_tenant = 7\n", "default_tenant must be a string"),
        ("# nobody yet\n", "names no tenant to place calls for"),
    ],
)
def test_a_tenants_file_that_cannot_be_read_for_its_tenants_is_one_error_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "tenants.toml"
    if content is not None:
        path.write_text(content)
    done = simulate("--tenants", str(path), "--calls", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {path}: ")
    assert message in lines[0]
    assert "Traceback" not in done.stdout + done.stderr


def test_tenant_names_are_placed_in_the_calls_round_robin(tmp_path: Path) -> None:
    # No tenants file: nothing enforces tenants, every call is admitted; the figures are
    # still per tenant named.
    out = tmp_path / "figures.json"
    done = simulate(
        *("--tenant", "acme", "--tenant", "globex", "--tenant", "[bold]initech"),
        *("--calls", "7", "--concurrency", "7", "--turns", "1", "--json", str(out)),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert list(figures["tenants"]) == ["acme", "globex", "[bold]initech"]
    assert [f["calls"] for f in figures["tenants"].values()] == [3, 2, 2]
    for f in figures["tenants"].values():
        assert f["admitted"] == f["calls"]
        assert (f["rejected"], f["failed"]) == ({}, 0)
        assert 1 <= f["max_live"] <= f["calls"]
    names = ["acme", "globex", "[bold]initech"]
    for call in figures["calls"]:
        assert call["tenant"] == names[int(call["room"].removeprefix("sim-")) % 3]
    # A name is shown as given, not read as markup.
    assert "[bold]initech" in done.stdout


def test_without_tenants_the_figures_are_as_before(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    done = simulate("--calls", "2", "--turns", "1", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert "tenants" not in figures
    assert all("tenant" not in call for call in figures["calls"])
    assert "per tenant" not in done.stdout


def test_with_no_plugin_taking_the_tenants_file_it_is_said_and_the_calls_still_run(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text("[tenants.acme]\nmax_sessions = 1\nagents = ['nobody']\n")
    out = tmp_path / "figures.json"
    done = simulate(
        *("--tenants", str(path), "--calls", "2", "--turns", "1", "--json", str(out)),
        OPENRTC_DISABLE_PLUGINS="tenancy",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no installed plugin takes a tenants file (--tenants)" in " ".join(done.stdout.split())
    # Nothing enforced the file (its only tenant may use no agent of the pool).
    acme = json.loads(out.read_text())["tenants"]["acme"]
    assert (acme["calls"], acme["admitted"], acme["rejected"]) == (2, 2, {})
