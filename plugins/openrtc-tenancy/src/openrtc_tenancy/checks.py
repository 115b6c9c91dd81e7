"""Whether a tenants file can serve calls here: beyond its syntax, what it needs to work.

A file that parses may still be unusable in this process: a variable it names is unset, a
provider it describes does not build with its options, it lets a tenant use an agent the
pool does not have. Each of these would otherwise surface call by call; :func:`problems`
finds them all at once, when the worker starts and on every live edit, and
``openrtc tenancy check`` reports them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from .config import ConfigError, TenancyConfig
from .providers import ProviderBuildError, build_provider

SHOWN: int = 3
"""Problems named in one error line; the rest are counted."""


def problems(
    config: TenancyConfig,
    environ: Mapping[str, str],
    agents: Collection[str] | None = None,
) -> list[str]:
    """Everything that stops `config` from serving calls with `environ` and the pool's
    `agents` (None: not known, not checked), one sentence each, naming key and tenant."""
    found: list[str] = []
    unset: set[str] = set()
    for env, keys in config.needed_env().items():
        if not environ.get(env):
            unset.add(env)
            found.extend(f"{key}: environment variable {env} is not set" for key in keys)
    for tenant in config.tenants.values():
        if agents is not None and tenant.agents is not None:
            missing = sorted(tenant.agents - set(agents))
            if missing:
                found.append(
                    f"tenants.{tenant.tenant_id}.agents: {_names(missing)} not in the pool "
                    f"(its agents: {', '.join(sorted(agents))})"
                )
        for kind, provider in tenant.providers.items():
            if unset & set(provider.secret_env.values()):
                continue  # said above; it cannot be built without them
            try:
                build_provider(provider, environ)
            except ProviderBuildError as exc:
                found.append(f"tenants.{tenant.tenant_id}.providers.{kind}: {exc.problem}")
    return found


def check_usable(
    config: TenancyConfig,
    environ: Mapping[str, str],
    agents: Collection[str] | None = None,
) -> None:
    """Raise :class:`ConfigError` (one line, naming the file) when :func:`problems` finds any."""
    found = problems(config, environ, agents)
    if not found:
        return
    shown = "; ".join(found[:SHOWN])
    more = f"; ...and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    raise ConfigError(f"{config.source}: {shown}{more}")


def _names(agents: list[str]) -> str:
    quoted = ", ".join(repr(agent) for agent in agents)
    return f"agent {quoted} is" if len(agents) == 1 else f"agents {quoted} are"
