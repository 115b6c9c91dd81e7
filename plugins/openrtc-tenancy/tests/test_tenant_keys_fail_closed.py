"""A tenant's keys never fall back to the pool's: the tenants file is checked whole when the
worker starts and at every edit, and a tenant whose providers fail anyway fails its call."""

from __future__ import annotations

import asyncio
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from tenancy_fixtures import ACME_KEY, FlakyLLM, fingerprint, make_pool
from test_config import cli
from test_simulate_tenants import simulate
from test_tenancy import call
from typer.testing import CliRunner

from openrtc_core import OpenRTCError
from openrtc_tenancy import plugin as tenancy_plugin
from openrtc_tenancy.config import load_config
from openrtc_testing import LoopbackDispatchServer

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs" / "tenancy.md"


@pytest.fixture(autouse=True)
def fresh_tenancy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tenancy_plugin, "_TENANCIES", {})
    monkeypatch.setattr(tenancy_plugin, "_PATH", [])
    monkeypatch.delenv("OPENRTC_TENANTS", raising=False)
    monkeypatch.setattr(FlakyLLM, "broken", False)


def tenants_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tenants.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def check(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli(), ["tenancy", "check", *args], env=env)


FLAKY = """
[tenants.acme.providers.llm]
class = "tenancy_fixtures:FlakyLLM"
api_key_env = "ACME_KEY"
"""


async def test_a_tenant_whose_provider_fails_mid_run_fails_its_call_not_onto_the_pools_keys(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
) -> None:
    monkeypatch.setenv("ACME_KEY", ACME_KEY)
    path = tenants_file(tmp_path, FLAKY)
    async with openrtc_worker(make_pool(path)):
        _, first = await call(openrtc_dispatch, "acme-1", "acme")
        FlakyLLM.broken = True
        _, second = await call(openrtc_dispatch, "acme-2", "acme")
    assert first["outcome"] == "completed"
    assert first["turns"][0]["events"][-1]["text"].startswith(f"key {fingerprint(ACME_KEY)}")
    assert second["outcome"] == "failed", second
    assert (
        "tenant 'acme', llm provider: tenancy_fixtures:FlakyLLM cannot be built" in second["error"]
    )
    assert "ConnectionError" in second["error"]
    # The pool's LLM ("pool default") never answered acme's caller.
    assert "pool default" not in str(second)
    assert ACME_KEY not in str(second)


@pytest.mark.parametrize(
    ("text", "env", "says"),
    [
        (
            FLAKY,
            {},
            "tenants.acme.providers.llm.api_key_env: environment variable ACME_KEY is not set",
        ),
        (
            """
            [tenants.acme.providers.llm]
            model = "openai/gpt-4.1-mini"
            api_key_env = "ACME_KEY"
            temperature = 0.2
            """,
            {"ACME_KEY": ACME_KEY, "LIVEKIT_API_SECRET": "gateway-secret-0123456789abcdef-0123"},
            "tenants.acme.providers.llm: openai/gpt-4.1-mini cannot be built: TypeError: "
            "LLM.__init__() got an unexpected keyword argument 'temperature'",
        ),
        (
            "[tenants.acme]\nagents = ['support', 'billing']\n",
            {},
            "tenants.acme.agents: agent 'billing' is not in the pool (its agents: sales, support)",
        ),
        (
            "signing_secret_env = 'SIGNING'\n[tenants.acme]\n",
            {},
            "signing_secret_env: environment variable SIGNING is not set",
        ),
    ],
    ids=["unset-key", "provider-refuses-option", "unknown-agent", "unset-signing-secret"],
)
async def test_a_tenants_file_that_cannot_serve_calls_stops_the_worker_at_start(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    text: str,
    env: dict[str, str],
    says: str,
) -> None:
    for name in ("ACME_KEY", "SIGNING", "LIVEKIT_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = tenants_file(tmp_path, text)
    with pytest.raises(OpenRTCError, match=re.escape(f"{path}: {says}")):
        async with openrtc_worker(make_pool(path)):
            pass
    assert not openrtc_dispatch.workers


def test_simulate_with_an_unset_tenant_key_is_one_error_line(tmp_path: Path) -> None:
    path = tenants_file(
        tmp_path,
        """
        [tenants.acme.providers.llm]
        class = "simulate_acme_llm:AcmeLLM"
        api_key_env = "NOT_SET_ANYWHERE"
        """,
    )
    done, text = simulate(tmp_path, "--tenants", path, "--calls", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {path}: tenants.acme.providers.llm.api_key_env: environment variable "
        "NOT_SET_ANYWHERE is not set"
    ]
    assert text == ""


async def test_a_live_edit_naming_an_unset_variable_keeps_the_old_config(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("ACME_KEY", ACME_KEY)
    monkeypatch.delenv("GLOBEX_KEY", raising=False)
    path = tenants_file(tmp_path, FLAKY)
    edited = FLAKY + textwrap.dedent(
        """
        [tenants.globex.providers.llm]
        class = "tenancy_fixtures:KeyedLLM"
        api_key_env = "GLOBEX_KEY"
        """
    )
    async with openrtc_worker(make_pool(path)):
        tenancy = tenancy_plugin.current()
        assert tenancy is not None
        await asyncio.to_thread(Path(path).write_text, edited)
        await asyncio.sleep(1.1)  # the file is looked at again at most once a second
        config = tenancy.config
    assert config.tenant("globex") is None  # the edit was kept out
    kept = [r.getMessage() for r in caplog.records if "keeping the previous" in r.getMessage()]
    assert len(kept) == 1, kept
    assert "tenants.globex.providers.llm.api_key_env: environment variable GLOBEX_KEY" in kept[0]


def test_check_exits_1_when_a_provider_does_not_build_and_never_shows_its_key(
    tmp_path: Path,
) -> None:
    path = tenants_file(
        tmp_path,
        """
        [tenants.acme.providers.llm]
        class = "tenancy_fixtures:LeakyLLM"
        api_key_env = "ACME_KEY"
        """,
    )
    result = check(path, env={"ACME_KEY": ACME_KEY})
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        f"error: {path}: tenants.acme.providers.llm: tenancy_fixtures:LeakyLLM cannot be built: "
        "ValueError: invalid api_key '<secret>' for model leaky"
    ]
    assert ACME_KEY not in result.output


def test_check_with_a_pool_names_the_agents_the_pool_lacks(tmp_path: Path) -> None:
    path = tenants_file(tmp_path, "[tenants.acme]\nagents = ['support', 'billing', 'refunds']\n")
    result = check(path, "--pool", str(ROOT / "examples" / "pool.py"))
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        f"error: {path}: tenants.acme.agents: agents 'billing', 'refunds' are not in the pool "
        "(its agents: booking, sales, support)"
    ]
    assert check(path).exit_code == 0  # without --pool the agents are not known


def docs_example() -> str:
    """The first TOML block of the tenancy page: the tenants file it describes."""
    found = re.search(r"```toml\n(.*?)```", DOCS.read_text(), re.S)
    assert found is not None
    return found.group(1)


def test_the_tenancy_pages_example_passes_the_workers_own_check(tmp_path: Path) -> None:
    path = tenants_file(tmp_path, docs_example())
    needed = load_config(path).needed_env()
    env = {name: f"dummy-{name.lower()}-0123456789abcdef0123" for name in needed}
    env["OPENRTC_REDIS_URL"] = "redis://127.0.0.1:1/0"
    result = check(path, "--pool", str(ROOT / "examples" / "pool.py"), env=env)
    assert result.exit_code == 0, result.output
    assert f"{path}: valid, " in result.stdout
