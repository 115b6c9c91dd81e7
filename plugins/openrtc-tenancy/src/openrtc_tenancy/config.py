"""The tenants file: what it holds, how it is checked, and how live edits to it apply.

Secrets never appear in the file: a provider option such as ``api_key`` is written as
``api_key_env = "ENV_VAR_NAME"`` and read from the environment by :meth:`ProviderConfig.resolve`.
Every error names the file, the key path (``tenants.acme.max_sessions``) and the problem, and
never shows a value that may be a secret.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeGuard, TypeVar
from urllib.parse import parse_qs, urlsplit

import attrs

from .ids import TenancyError, show_value, tenant_id_problem

logger = logging.getLogger("openrtc.tenancy")

T = TypeVar("T")
PathPart = str | int
KeyPath = tuple[PathPart, ...]

PROVIDER_KINDS: Final = ("llm", "stt", "tts")
SECRET_SUFFIXES: Final = ("key", "secret", "token", "password")
"""An option whose name ends so (``api_key``, ``api_secret``, ...) is a secret."""
ENV_SUFFIX: Final = "_env"
DEFAULT_LEASE_S: Final = 15.0
REDIS_SCHEMES: Final = ("redis", "rediss", "unix")

_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED: Final = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_CLASS_REFERENCE: Final = re.compile(f"{_DOTTED}:{_DOTTED}")
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]{1,40}")
_TOP_KEYS: Final = (
    "default_tenant",
    "signing_secret_env",
    "redis_url",
    "redis_url_env",
    "lease_s",
    "tenants",
)
_TENANT_KEYS: Final = ("agents", "max_sessions", "fleet_max_sessions", "providers", "breaker")
_BREAKER_KEYS: Final = ("window_s", "min_calls", "failure_ratio", "cooldown_s")
_SYNTAX_AT: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


class ConfigError(TenancyError):
    """A tenants file, or an environment variable it names, cannot be used."""


def is_secret_name(name: str) -> bool:
    """Whether an option called `name` holds a secret (case-insensitive)."""
    return name.lower().endswith(SECRET_SUFFIXES)


def is_env_name(value: object) -> TypeGuard[str]:
    """Whether `value` can name an environment variable."""
    return isinstance(value, str) and _ENV_NAME.fullmatch(value) is not None


# -- value checks: each returns the value or raises ValueError saying what is wrong -----------


def _shown(value: object) -> str:
    """A scalar as its safe repr; a table or array by its type only (it may hold anything)."""
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return show_value(value)


def _positive_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ValueError(f"must be a positive integer, got {_shown(value)}")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) else None


def _positive_number(value: object) -> float:
    number = _number(value)
    if number is not None and number > 0:
        return number
    raise ValueError(f"must be a positive number, got {_shown(value)}")


def _ratio(value: object) -> float:
    number = _number(value)
    if number is not None and 0 < number <= 1:
        return number
    raise ValueError(f"must be a number above 0 and at most 1, got {_shown(value)}")


def _non_empty_str(value: object) -> str:
    if isinstance(value, str) and value.strip():
        return value
    raise ValueError(f"must be a non-empty string, got {_shown(value)}")


def _env_name(value: object) -> str:
    if is_env_name(value):
        return value
    # The value is not shown: a secret pasted where its variable's name belongs is common.
    raise ValueError(
        "must name an environment variable ([A-Za-z_][A-Za-z0-9_]*); "
        "the value given is not one (not shown: it may be a secret)"
    )


def _tenant_id(value: object) -> str:
    problem = tenant_id_problem(value)
    if problem is not None:
        raise ValueError(problem)
    assert isinstance(value, str)
    return value


def _provider_kind(value: object) -> str:
    if isinstance(value, str) and value in PROVIDER_KINDS:
        return value
    raise ValueError(f"must be one of {', '.join(PROVIDER_KINDS)}, got {_shown(value)}")


def _class_reference(value: object) -> str:
    if isinstance(value, str) and _CLASS_REFERENCE.fullmatch(value):
        return value
    raise ValueError(f'must be "package.module:Name", got {_shown(value)}')


def _redis_url(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {_shown(value)}")
    # Never shown: it may hold a password.
    parts = urlsplit(value)
    if parts.password is not None or "password" in parse_qs(parts.query):
        raise ValueError(
            "holds a password, a secret that must not be written in the file; put the URL in "
            'an environment variable and write redis_url_env = "ENV_VAR_NAME" instead'
        )
    if parts.scheme not in REDIS_SCHEMES:
        raise ValueError(f"must be a {', '.join(s + '://' for s in REDIS_SCHEMES)} URL")
    return value


def _attrs_check(
    check: Callable[[object], object],
) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """An attrs validator from a value check, raising ConfigError naming the class and field."""

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        try:
            check(value)
        except ValueError as exc:
            raise ConfigError(f"{type(instance).__name__}.{attribute.name}: {exc}") from None

    return validate


def _optional(
    check: Callable[[object], object],
) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    validate = _attrs_check(check)

    def validate_optional(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            validate(instance, attribute, value)

    return validate_optional


def _frozen(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


def _mapping_repr(value: Mapping[str, object]) -> str:
    return repr(dict(value))


# -- the configuration ------------------------------------------------------------------------


def _no_secret_options(_instance: Any, _attribute: Any, options: Mapping[str, object]) -> None:
    for name in options:
        if is_secret_name(name):
            raise ConfigError(
                f"ProviderConfig.options: {name!r} is a secret: give its variable in secret_env"
            )


def _env_names(_instance: Any, _attribute: Any, secret_env: Mapping[str, str]) -> None:
    for name, env in secret_env.items():
        if not is_env_name(env):
            raise ConfigError(
                f"ProviderConfig.secret_env: {name!r} must map to an environment variable name"
            )


@attrs.frozen(kw_only=True)
class BreakerConfig:
    """A tenant's circuit breaker: open after `failure_ratio` of at least `min_calls` calls in
    the last `window_s` seconds failed; try again after `cooldown_s` seconds."""

    window_s: float = attrs.field(default=60.0, validator=_attrs_check(_positive_number))
    min_calls: int = attrs.field(default=10, validator=_attrs_check(_positive_int))
    failure_ratio: float = attrs.field(default=0.5, validator=_attrs_check(_ratio))
    cooldown_s: float = attrs.field(default=30.0, validator=_attrs_check(_positive_number))


@attrs.frozen(kw_only=True)
class ProviderConfig:
    """One of a tenant's providers (llm, stt or tts): its model and options.

    It holds the names of the environment variables its secrets are in, never the secrets, so
    its repr is safe to log.
    """

    kind: str = attrs.field(validator=_attrs_check(_provider_kind))
    model: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    """A model string ("openai/gpt-4.1-mini"); "" for a provider class that needs none."""
    secret_env: Mapping[str, str] = attrs.field(
        factory=dict,
        converter=_frozen,
        validator=_env_names,
        repr=_mapping_repr,
    )
    """Option name -> the environment variable holding its value (``api_key`` -> ``ACME_KEY``)."""
    options: Mapping[str, object] = attrs.field(
        factory=dict,
        converter=_frozen,
        validator=_no_secret_options,
        repr=_mapping_repr,
    )
    """Options other than the model and secrets (``temperature``)."""
    provider_class: str | None = attrs.field(default=None, validator=_optional(_class_reference))
    """``class = "package.module:Name"``: the class to build instead of livekit's inference one."""
    tenant_id: str | None = None
    """The tenant it belongs to, for error messages."""

    def resolve(self, environ: Mapping[str, str]) -> dict[str, object]:
        """The options, plus each secret read from `environ` (without the model).

        :raises ConfigError: a secret's variable is unset or empty (naming it, never a value).
        """
        # Option tables are copied: a provider may keep (and change) what it is given.
        resolved: dict[str, object] = {
            name: dict(value) if isinstance(value, Mapping) else value
            for name, value in self.options.items()
        }
        for name, env in self.secret_env.items():
            value = environ.get(env)
            if not value:
                tenant = f"tenant {self.tenant_id!r}, " if self.tenant_id else ""
                raise ConfigError(
                    f"{tenant}{self.kind} provider, option {name!r}: "
                    f"environment variable {env} is not set or is empty"
                )
            resolved[name] = value
        return resolved


@attrs.frozen(kw_only=True)
class TenantConfig:
    """What one tenant may run, how many sessions at once, and with which providers."""

    tenant_id: str = attrs.field(validator=_attrs_check(_tenant_id))
    agents: frozenset[str] | None = None
    """The agents the tenant may use; None: every agent."""
    max_sessions: int | None = attrs.field(default=None, validator=_optional(_positive_int))
    """Sessions at once in this worker."""
    fleet_max_sessions: int | None = attrs.field(default=None, validator=_optional(_positive_int))
    """Sessions at once across the workers sharing Redis."""
    providers: Mapping[str, ProviderConfig] = attrs.field(
        factory=dict, converter=_frozen, repr=_mapping_repr
    )
    breaker: BreakerConfig | None = None

    def allows(self, agent: str) -> bool:
        """Whether the tenant may use `agent`."""
        return self.agents is None or agent in self.agents


@attrs.frozen(kw_only=True)
class TenancyConfig:
    """A whole tenants file, checked."""

    source: str
    """Where it was read from (the file's path), for messages."""
    default_tenant: str | None = attrs.field(default=None, validator=_optional(_tenant_id))
    """The tenant of jobs that name none."""
    signing_secret_env: str | None = attrs.field(default=None, validator=_optional(_env_name))
    """Set: tenancy is signed, with the secret in this environment variable."""
    redis_url: str | None = attrs.field(default=None, validator=_optional(_redis_url))
    redis_url_env: str | None = attrs.field(default=None, validator=_optional(_env_name))
    lease_s: float = attrs.field(default=DEFAULT_LEASE_S, validator=_attrs_check(_positive_number))
    """How long a fleet session's lease lasts without renewal."""
    tenants: Mapping[str, TenantConfig] = attrs.field(
        factory=dict, converter=_frozen, repr=_mapping_repr
    )

    @property
    def signed(self) -> bool:
        """Whether jobs must carry a tenant signature."""
        return self.signing_secret_env is not None

    @property
    def fleet_needs_redis(self) -> bool:
        """Some tenant has a fleet cap, but no Redis URL is configured to count it."""
        has_fleet_caps = any(t.fleet_max_sessions is not None for t in self.tenants.values())
        return has_fleet_caps and self.redis_url is None and self.redis_url_env is None

    def tenant(self, tenant_id: str) -> TenantConfig | None:
        """The configuration of `tenant_id`, or None when the file does not name it."""
        return self.tenants.get(tenant_id)

    def signing_secret(self, environ: Mapping[str, str]) -> bytes | None:
        """The signing secret from `environ`; None when tenancy is not signed.

        :raises ConfigError: the variable is configured but unset or empty.
        """
        if self.signing_secret_env is None:
            return None
        secret = self._from_env(environ, "signing_secret_env", self.signing_secret_env)
        return secret.encode("utf-8", "surrogateescape")  # the variable's bytes, as set

    def redis_url_from(self, environ: Mapping[str, str]) -> str | None:
        """The Redis URL (written in the file or read from `environ`); None when there is none.

        :raises ConfigError: ``redis_url_env`` names a variable that is unset or empty.
        """
        if self.redis_url_env is None:
            return self.redis_url
        return self._from_env(environ, "redis_url_env", self.redis_url_env)

    def needed_env(self) -> dict[str, list[str]]:
        """Each environment variable the configuration reads -> the keys that name it."""
        needed: dict[str, list[str]] = {}
        for key, env in (
            ("signing_secret_env", self.signing_secret_env),
            ("redis_url_env", self.redis_url_env),
        ):
            if env is not None:
                needed.setdefault(env, []).append(key)
        for tenant in self.tenants.values():
            for kind, provider in tenant.providers.items():
                for name, env in provider.secret_env.items():
                    key = f"tenants.{tenant.tenant_id}.providers.{kind}.{name}{ENV_SUFFIX}"
                    needed.setdefault(env, []).append(key)
        return needed

    def _from_env(self, environ: Mapping[str, str], key: str, env: str) -> str:
        value = environ.get(env)
        if not value:
            raise ConfigError(f"{self.source}: {key}: environment variable {env} is not set")
        return value


# -- reading a tenants file -------------------------------------------------------------------


def _key_path(path: Iterable[PathPart]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            shown = part if _BARE_KEY.fullmatch(part) else show_value(part)
            text += f".{shown}" if text else shown
    return text


@attrs.frozen
class _Reader:
    """Checks the parsed TOML of one file, raising ConfigError naming the file and key path."""

    source: str

    def error(self, path: KeyPath, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {_key_path(path)}: {problem}")

    def check(self, value: object, path: KeyPath, check: Callable[[object], T]) -> T:
        try:
            return check(value)
        except ValueError as exc:
            raise self.error(path, str(exc)) from None

    def table(self, value: object, path: KeyPath) -> dict[str, object]:
        if not isinstance(value, dict):
            raise self.error(path, f"must be a table, got {_shown(value)}")
        return value

    def only_known(
        self, table: Mapping[str, object], path: KeyPath, known: Iterable[str], what: str = "key"
    ) -> None:
        known = tuple(known)
        for key in table:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.error(
                (*path, key), f"unknown {what}{hint}; known {what}s: {', '.join(known)}"
            )


def parse_config(text: str, source: str) -> TenancyConfig:
    """Check the tenants file `text`, read from `source` (named in errors).

    :raises ConfigError: the file is not valid TOML or not a valid tenants file.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(source, exc) from None
    reader = _Reader(source)
    reader.only_known(data, (), _TOP_KEYS)

    def optional(key: str, check: Callable[[object], T]) -> T | None:
        return reader.check(data[key], (key,), check) if key in data else None

    redis_url = optional("redis_url", _redis_url)
    redis_url_env = optional("redis_url_env", _env_name)
    if redis_url is not None and redis_url_env is not None:
        raise reader.error(("redis_url",), "give redis_url or redis_url_env, not both")
    lease_s = optional("lease_s", _positive_number)
    tenants_table = reader.table(data.get("tenants", {}), ("tenants",))
    tenants: dict[str, TenantConfig] = {}
    for name, table in tenants_table.items():
        tenant_id = reader.check(name, ("tenants", name), _tenant_id)
        tenants[tenant_id] = _tenant(reader, tenant_id, table)
    return TenancyConfig(
        source=source,
        default_tenant=optional("default_tenant", _tenant_id),
        signing_secret_env=optional("signing_secret_env", _env_name),
        redis_url=redis_url,
        redis_url_env=redis_url_env,
        lease_s=DEFAULT_LEASE_S if lease_s is None else lease_s,
        tenants=tenants,
    )


def _syntax_error(source: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    message = str(exc)
    at = _SYNTAX_AT.search(message)
    if at is None:
        return ConfigError(f"{source}: invalid TOML: {message}")
    line, column = at.groups()
    return ConfigError(f"{source}:{line}:{column}: invalid TOML: {message[: at.start()]}")


def _tenant(reader: _Reader, tenant_id: str, value: object) -> TenantConfig:
    path: KeyPath = ("tenants", tenant_id)
    table = reader.table(value, path)
    reader.only_known(table, path, _TENANT_KEYS)

    def optional(key: str, check: Callable[[object], T]) -> T | None:
        return reader.check(table[key], (*path, key), check) if key in table else None

    agents = None
    if "agents" in table:
        agents = _agents(reader, table["agents"], (*path, "agents"))
    providers_path = (*path, "providers")
    providers_table = reader.table(table.get("providers", {}), providers_path)
    reader.only_known(providers_table, providers_path, PROVIDER_KINDS, what="provider kind")
    providers = {
        kind: _provider(reader, tenant_id, kind, provider)
        for kind, provider in providers_table.items()
    }
    breaker = None
    if "breaker" in table:
        breaker = _breaker(reader, table["breaker"], (*path, "breaker"))
    return TenantConfig(
        tenant_id=tenant_id,
        agents=agents,
        max_sessions=optional("max_sessions", _positive_int),
        fleet_max_sessions=optional("fleet_max_sessions", _positive_int),
        providers=providers,
        breaker=breaker,
    )


def _agents(reader: _Reader, value: object, path: KeyPath) -> frozenset[str]:
    if not isinstance(value, list):
        raise reader.error(path, f"must be an array of agent names, got {_shown(value)}")
    return frozenset(
        reader.check(agent, (*path, index), _non_empty_str) for index, agent in enumerate(value)
    )


def _provider(reader: _Reader, tenant_id: str, kind: str, value: object) -> ProviderConfig:
    path: KeyPath = ("tenants", tenant_id, "providers", kind)
    table = reader.table(value, path)
    model: str | None = None
    provider_class: str | None = None
    secret_env: dict[str, str] = {}
    options: dict[str, object] = {}
    for name, option in table.items():
        option_path = (*path, name)
        if name == "model":
            model = reader.check(option, option_path, _non_empty_str)
        elif name == "class":
            provider_class = reader.check(option, option_path, _class_reference)
        elif name.endswith(ENV_SUFFIX) and len(name) > len(ENV_SUFFIX):
            secret_env[name.removesuffix(ENV_SUFFIX)] = reader.check(option, option_path, _env_name)
        elif is_secret_name(name):
            raise reader.error(
                option_path,
                "is a secret and must not be written in the file; put it in an environment "
                f'variable and write {name}{ENV_SUFFIX} = "ENV_VAR_NAME" instead',
            )
        elif isinstance(option, str | int | float | bool):
            options[name] = option
        elif isinstance(option, dict):
            options[name] = _option_table(reader, option, option_path)
        else:
            raise reader.error(
                option_path,
                f"must be a string, number, boolean or table of them, got {_shown(option)}",
            )
    both = sorted(secret_env.keys() & {*options, "model"})
    if both:
        raise reader.error(
            (*path, both[0]), f"is given both as {both[0]} and {both[0]}{ENV_SUFFIX}; keep one"
        )
    if model is None and provider_class is None:
        raise reader.error(
            path,
            'needs a model (model = "openai/gpt-4.1-mini") or a provider class '
            '(class = "package.module:Name")',
        )
    return ProviderConfig(
        kind=kind,
        model=model or "",
        secret_env=secret_env,
        options=options,
        provider_class=provider_class,
        tenant_id=tenant_id,
    )


def _option_table(reader: _Reader, table: dict[str, object], path: KeyPath) -> Mapping[str, object]:
    """A provider option given as a table of scalars (``extra_kwargs = { temperature = 0.2 }``,
    model parameters livekit's inference classes take in one keyword)."""
    for name, value in table.items():
        if is_secret_name(name):
            raise reader.error(
                (*path, name),
                "is a secret and must not be written in the file; pass it as a provider "
                f'option with {name}{ENV_SUFFIX} = "ENV_VAR_NAME" instead',
            )
        if not isinstance(value, str | int | float | bool):
            raise reader.error(
                (*path, name), f"must be a string, number or boolean, got {_shown(value)}"
            )
    return MappingProxyType(dict(table))


def _breaker(reader: _Reader, value: object, path: KeyPath) -> BreakerConfig:
    table = reader.table(value, path)
    reader.only_known(table, path, _BREAKER_KEYS)
    checks: dict[str, Callable[[object], object]] = {
        "window_s": _positive_number,
        "min_calls": _positive_int,
        "failure_ratio": _ratio,
        "cooldown_s": _positive_number,
    }
    fields: dict[str, Any] = {
        key: reader.check(table[key], (*path, key), checks[key]) for key in table
    }
    return BreakerConfig(**fields)


def load_config(path: str | Path) -> TenancyConfig:
    """Read and check the tenants file at `path`.

    :raises ConfigError: the file cannot be read, or is not a valid tenants file.
    """
    return parse_config(_read(Path(path), str(path)), str(path))


def _read(path: Path, source: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise _unreadable(source, exc) from None


def _unreadable(source: str, exc: OSError) -> ConfigError:
    if isinstance(exc, FileNotFoundError):
        return ConfigError(f"{source}: no such tenants file")
    return ConfigError(f"{source}: cannot read the tenants file: {exc.strerror or exc}")


# -- live edits -------------------------------------------------------------------------------


class ConfigFile:
    """The current configuration of a tenants file, following its edits.

    A file that is bad at start is fatal (:class:`ConfigError`); a bad edit later keeps the
    previous configuration and logs one warning per distinct bad content. `usable` checks
    what parsing cannot (variables set, providers building: :mod:`.checks`); it raises
    :class:`ConfigError`, and a file it refuses is bad in the same way.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        check_every_s: float = 1.0,
        now: Callable[[], float] = time.monotonic,
        usable: Callable[[TenancyConfig], None] | None = None,
    ) -> None:
        self._path = Path(path)
        self._source = str(path)
        self._check_every_s = check_every_s
        self._now = now
        self._usable = usable
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._text = _read(self._path, self._source)
        self._current = self._parse(self._text)
        self._checked_at = now()
        self._warned: set[str] = set()
        """The bad contents (or read errors) warned about since the last good one."""

    @property
    def path(self) -> Path:
        return self._path

    @property
    def current(self) -> TenancyConfig:
        """The configuration in force."""
        return self._current

    def refresh(self) -> bool:
        """Re-read the file if it changed (checked at most once per `check_every_s`).

        :return: whether a new configuration now applies.
        """
        with self._lock:
            now = self._now()
            if now - self._checked_at < self._check_every_s:
                return False
            self._checked_at = now
            try:
                stamp = self._stat()
                if stamp == self._stamp:
                    return False
                text = _read(self._path, self._source)
            except ConfigError as exc:  # the stamp stays: an unreadable file is tried again
                self._warn_once(str(exc), str(exc))
                return False
            self._stamp = stamp
            if text == self._text:  # touched, or a bad edit undone
                self._warned.clear()
                return False
            try:
                config = self._parse(text)
            except ConfigError as exc:
                self._warn_once(text, str(exc))
                return False
            self._text, self._current = text, config
            self._warned.clear()
        logger.info("tenants file %s reloaded: %d tenants", self._source, len(config.tenants))
        return True

    def check_with(self, usable: Callable[[TenancyConfig], None]) -> None:
        """Check the configuration in force, and every later edit, with `usable` from now on.

        :raises ConfigError: the configuration in force fails it (it stays in force).
        """
        with self._lock:
            usable(self._current)
            self._usable = usable

    def _parse(self, text: str) -> TenancyConfig:
        config = parse_config(text, self._source)
        if self._usable is not None:
            self._usable(config)
        return config

    def _stat(self) -> tuple[int, int]:
        try:
            stat = self._path.stat()
        except OSError as exc:
            raise _unreadable(self._source, exc) from None
        return stat.st_mtime_ns, stat.st_size

    def _warn_once(self, key: str, error: str) -> None:
        """Warn about `error` unless already done for `key` (the bad content, or the error)."""
        if key in self._warned:
            return
        self._warned.add(key)
        logger.warning("tenants file %s; keeping the previous configuration", error)
