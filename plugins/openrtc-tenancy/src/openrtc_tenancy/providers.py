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

from .config import ConfigError, ProviderConfig, TenantConfig

_INFERENCE: Mapping[str, Any] = {
    "llm": inference.LLM,
    "stt": inference.STT,
    "tts": inference.TTS,
}


class ProviderBuildError(ConfigError):
    """A tenant's provider does not build with the file's options (its message names the
    tenant, the provider and the cause, with any secret value blanked out)."""

    def __init__(self, config: ProviderConfig, problem: str) -> None:
        tenant = f"tenant {config.tenant_id!r}, " if config.tenant_id else ""
        super().__init__(f"{tenant}{config.kind} provider: {problem}")
        self.problem = problem


def build_provider(config: ProviderConfig, environ: Mapping[str, str]) -> Any:
    """One provider object for one session, its secrets read from `environ` now.

    :raises ConfigError: a secret's variable is unset (:meth:`ProviderConfig.resolve`).
    :raises ProviderBuildError: the class cannot be imported, or refuses the options.
    """
    options = dict(config.resolve(environ))
    what = config.provider_class or config.model
    try:
        factory = resolve_reference(config.provider_class) if config.provider_class else None
        if factory is None:
            return _INFERENCE[config.kind](config.model, **options)
        if config.model:
            options.setdefault("model", config.model)
        return factory(**options)
    except Exception as exc:
        secrets = [str(options[name]) for name in config.secret_env if name in options]
        raise ProviderBuildError(
            config, f"{what} cannot be built: {type(exc).__name__}: {_blank(str(exc), secrets)}"
        ) from None


def tenant_providers(tenant: TenantConfig, environ: Mapping[str, str]) -> dict[str, Any]:
    """The session options (``llm``, ``stt``, ``tts``) the tenant's file overrides."""
    return {kind: build_provider(config, environ) for kind, config in tenant.providers.items()}


def _blank(text: str, secrets: list[str]) -> str:
    """`text` with every secret value in it replaced: provider errors may quote their options."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<secret>")
    return text
