"""``openrtc tenancy``: sign a job's tenant, check a tenants file.

Secrets are read from the environment only, and only environment variable names are printed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from .checks import problems
from .config import ConfigError, TenancyConfig, TenantConfig, is_env_name, load_config
from .ids import TenancyError, check_tenant_id
from .signing import SIGNATURE_KEY, TENANT_KEY, sign

DEFAULT_SECRET_ENV = "OPENRTC_TENANT_SECRET"
INVALID = 1
"""Exit status: the tenants file is invalid."""
USAGE = 2
"""Exit status: the command cannot run as asked (bad TENANT, no secret)."""


def register(app: typer.Typer) -> None:
    """Add the ``tenancy`` command group to `app`."""
    tenancy = typer.Typer(
        help="Tenants: check a tenants file, sign a job's tenant for signed tenancy.",
        no_args_is_help=True,
    )
    tenancy.command("sign")(sign_command)
    tenancy.command("check")(check_command)
    app.add_typer(tenancy, name="tenancy")


def sign_command(
    tenant: Annotated[str, typer.Argument(help="The tenant id.", show_default=False)],
    room: Annotated[str, typer.Argument(help="The room the job runs in.", show_default=False)],
    secret_env: Annotated[
        str,
        typer.Option(
            "--secret-env",
            metavar="NAME",
            help="The environment variable holding the signing secret.",
        ),
    ] = DEFAULT_SECRET_ENV,
) -> None:
    """Print the job metadata (JSON) that runs a job in ROOM as TENANT under signed tenancy.

    The secret is read from the environment, never from the command line.
    """
    try:
        check_tenant_id(tenant, where="TENANT")
    except TenancyError as exc:
        _fail(str(exc), USAGE)
    if not room:
        _fail("ROOM is empty", USAGE)
    if not is_env_name(secret_env):
        _fail(
            "--secret-env must name the environment variable that holds the secret "
            "(the secret itself is never given on the command line)",
            USAGE,
        )
    secret = os.environ.get(secret_env)
    if not secret:
        _fail(f"environment variable {secret_env} is not set: export the signing secret", USAGE)
    signature = sign(tenant, room, secret.encode("utf-8", "surrogateescape"))
    typer.echo(json.dumps({TENANT_KEY: tenant, SIGNATURE_KEY: signature}))


def check_command(
    file: Annotated[Path, typer.Argument(help="The tenants file (TOML).", show_default=False)],
    pool: Annotated[
        str | None,
        typer.Option(
            "--pool",
            metavar="TARGET",
            help="Also check that the file names only agents this pool has "
            "(a pool file or module:pool, as for start).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check a tenants file as a worker would at start: print its tenants and caps and the
    environment it needs, and exit 1 when it could not serve calls here (a variable unset, a
    provider that does not build, an agent the --pool does not have)."""
    try:
        config = load_config(file)
    except ConfigError as exc:
        _fail(str(exc), INVALID)
    agents = _pool_agents(pool) if pool is not None else None
    found = problems(config, os.environ, agents)
    for line in summary(config, os.environ, usable=not found):
        typer.echo(line)
    if config.fleet_needs_redis:
        typer.echo(
            "warning: fleet_max_sessions is set but there is no redis_url or redis_url_env: "
            "fleet caps are counted on each worker only",
            err=True,
        )
    if found:
        for problem in found:
            typer.echo(f"error: {config.source}: {problem}", err=True)
        raise typer.Exit(code=INVALID)


def _pool_agents(target: str) -> frozenset[str]:
    # Imported here: loading a pool imports livekit, which the other commands never need.
    from openrtc_core import OpenRTCError, load_pool

    try:
        return frozenset(load_pool(target).agents)
    except OpenRTCError as exc:
        _fail(f"--pool {target}: {exc}", USAGE)


def summary(config: TenancyConfig, environ: Mapping[str, str], *, usable: bool = True) -> list[str]:
    """A few lines describing `config`; environment variables by name and whether set."""
    state = "valid" if usable else "valid syntax but NOT USABLE here (errors below)"
    lines = [f"{config.source}: {state}, {_count(len(config.tenants), 'tenant')}"]
    default = config.default_tenant
    if default is not None:
        known = "" if default in config.tenants else " (not listed: every agent, no caps)"
        lines.append(f"  default tenant: {default}{known}")
    if config.signing_secret_env is not None:
        lines.append(f"  signed tenancy: secret in {config.signing_secret_env}")
    if config.redis_url is not None or config.redis_url_env is not None:
        where = config.redis_url_env or "redis_url"
        lines.append(f"  fleet counting: Redis from {where}, lease {config.lease_s:g}s")
    for tenant in config.tenants.values():
        lines.append(f"  tenant {tenant.tenant_id}: {_describe(tenant)}")
    needed = config.needed_env()
    if needed:
        lines.append("environment (names only):")
        width = max(len(name) for name in needed)
        for name, keys in needed.items():
            state = "set" if environ.get(name) else "NOT SET"
            lines.append(f"  {name:<{width}}  {state:<7}  {', '.join(keys)}")
    return lines


def _describe(tenant: TenantConfig) -> str:
    parts = [
        "every agent" if tenant.agents is None else "agents: " + ", ".join(sorted(tenant.agents))
    ]
    if tenant.max_sessions is not None:
        parts.append(f"max {tenant.max_sessions} sessions per worker")
    if tenant.fleet_max_sessions is not None:
        parts.append(f"max {tenant.fleet_max_sessions} across the fleet")
    for kind, provider in tenant.providers.items():
        parts.append(f"{kind} {provider.model}")
    breaker = tenant.breaker
    if breaker is not None:
        parts.append(
            f"breaker: opens at {breaker.failure_ratio:.0%} failed of >= {breaker.min_calls} "
            f"calls in {breaker.window_s:g}s, for {breaker.cooldown_s:g}s"
        )
    return "; ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _fail(message: str, status: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=status)
