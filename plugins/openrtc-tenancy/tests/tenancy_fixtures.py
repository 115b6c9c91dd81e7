"""Providers and pools for tenancy tests (a module, so job processes import the same ones)."""

from __future__ import annotations

import hashlib
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


def make_pool(tenants: str, **settings: Any) -> AgentPool:
    pool = AgentPool(llm=ScriptedLLM(default_reply="pool default"), tenants=tenants, **settings)
    pool.add("support", Support, default=True)
    pool.add("sales", Sales)
    return pool


# Process isolation: job processes rebuild this pool by importing this module; the tenants
# file reaches them through OPENRTC_TENANTS, set by the test before the worker starts.
PROCESS_POOL = make_pool("", isolation="process", max_sessions=20)
