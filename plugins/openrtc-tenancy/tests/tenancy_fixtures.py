"""Providers and pools for tenancy tests (a module, so job processes import the same ones)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from livekit.agents import Agent

from openrtc_core import AgentPool
from openrtc_testing import Rule, ScriptedLLM


def fingerprint(secret: str) -> str:
    """What a test may print of a key: a hash, never the key."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


class KeyedLLM(ScriptedLLM):
    """A scripted LLM built with a tenant's key: replies name the key's fingerprint and the
    object, so a test sees which key and which provider object served a call."""

    built: ClassVar[list[int]] = []

    def __init__(self, *, api_key: str, model: str = "keyed", fail: bool = False) -> None:
        rules = [Rule(when="", raise_error="the provider refused the key")] if fail else []
        super().__init__(
            name=model,
            rules=rules,
            default_reply=f"key {fingerprint(api_key)} object {id(self)}",
        )
        self._key = api_key
        KeyedLLM.built.append(id(self))

    def __repr__(self) -> str:
        return f"KeyedLLM(model={self.model!r})"


class Support(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Support.")


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Sales.")


def make_pool(tenants: str | None, **settings: Any) -> AgentPool:
    pool = AgentPool(llm=ScriptedLLM(default_reply="pool default"), tenants=tenants, **settings)
    pool.add("support", Support, default=True)
    pool.add("sales", Sales)
    return pool


ACME_KEY = "sk-acme-0123456789abcdef-SECRET"
GLOBEX_KEY = "sk-globex-fedcba9876543210-SECRET"

# Process isolation: job processes rebuild this pool by importing this module, and fork from
# livekit's forkserver, which keeps the environment of when it started. So the tenants file
# and the keys are set when this module is imported (at collection), never by a test.
os.environ["TENANCY_TEST_ACME_KEY"] = ACME_KEY
os.environ["TENANCY_TEST_GLOBEX_KEY"] = GLOBEX_KEY
PROCESS_TENANTS = Path(tempfile.gettempdir()) / f"openrtc-tenancy-{os.getpid()}.toml"
PROCESS_TENANTS.write_text(
    """
[tenants.acme]
max_sessions = 1
[tenants.acme.providers.llm]
class = "tenancy_fixtures:KeyedLLM"
api_key_env = "TENANCY_TEST_ACME_KEY"
[tenants.globex.providers.llm]
class = "tenancy_fixtures:KeyedLLM"
api_key_env = "TENANCY_TEST_GLOBEX_KEY"
"""
)
PROCESS_POOL = make_pool(str(PROCESS_TENANTS), isolation="process", max_sessions=20)
# The same pool with no tenants file of its own: the run gives it (create_server(tenants=...),
# OPENRTC_TENANTS in the worker's environment), one pool per way so each resolves its own.
PROCESS_POOL_TENANTS_IN_CODE = make_pool(None, isolation="process", max_sessions=20)
PROCESS_POOL_TENANTS_FROM_ENV = make_pool(None, isolation="process", max_sessions=20)


class FlakyLLM(KeyedLLM):
    """Builds while `broken` is false (so the worker's start check passes); raises after."""

    broken: ClassVar[bool] = False

    def __init__(self, *, api_key: str, model: str = "flaky") -> None:
        if FlakyLLM.broken:
            raise ConnectionError("the provider's auth endpoint is down")
        super().__init__(api_key=api_key, model=model)


class LeakyLLM:
    """A provider class whose error repeats the key it was given, as some SDKs' do."""

    def __init__(self, *, api_key: str, model: str = "leaky") -> None:
        raise ValueError(f"invalid api_key {api_key!r} for model {model}")
