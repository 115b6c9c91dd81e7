"""Each tenant's providers, built per session with the tenant's own keys.

A provider in the tenants file is a model string for livekit's inference gateway
(``model = "openai/gpt-4.1-mini"``) or a provider class (``class = "package.module:Name"``),
with options, and secrets named by environment variable. A new provider object is built for
every session, its key read from the environment then: two tenants' sessions never share a
keyed provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from livekit.agents import inference

from openrtc_core import resolve_reference

from .config import ProviderConfig, TenantConfig

_INFERENCE: Mapping[str, Any] = {
    "llm": inference.LLM,
    "stt": inference.STT,
    "tts": inference.TTS,
}


def build_provider(config: ProviderConfig, environ: Mapping[str, str]) -> Any:
    """One provider object for one session, its secrets read from `environ` now."""
    options = dict(config.resolve(environ))
    factory = resolve_reference(config.provider_class) if config.provider_class else None
    if factory is None:
        return _INFERENCE[config.kind](config.model, **options)
    if config.model:
        options.setdefault("model", config.model)
    return factory(**options)


def tenant_providers(tenant: TenantConfig, environ: Mapping[str, str]) -> dict[str, Any]:
    """The session options (``llm``, ``stt``, ``tts``) the tenant's file overrides."""
    return {kind: build_provider(config, environ) for kind, config in tenant.providers.items()}
