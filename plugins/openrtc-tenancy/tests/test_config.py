"""The tenants file: tenant ids, parsing and its errors, secrets, live edits, ``tenancy check``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from openrtc_tenancy.commands import register
from openrtc_tenancy.config import (
    BreakerConfig,
    ConfigError,
    ConfigFile,
    ProviderConfig,
    TenancyConfig,
    TenantConfig,
    load_config,
    parse_config,
)
from openrtc_tenancy.ids import TenancyError, check_tenant_id, is_tenant_id

EXAMPLE = """\
default_tenant = "public"
signing_secret_env = "OPENRTC_TENANT_SECRET"
redis_url_env = "OPENRTC_REDIS_URL"
lease_s = 20

[tenants.acme]
agents = ["support", "sales"]
max_sessions = 3
fleet_max_sessions = 10

[tenants.acme.providers.llm]
model = "openai/gpt-4.1-mini"
api_key_env = "ACME_OPENAI_KEY"
extra_kwargs = { temperature = 0.2 }

[tenants.acme.breaker]
window_s = 60
min_calls = 10
failure_ratio = 0.5
cooldown_s = 30

[tenants.beta]
"""

SECRET = "sk-LIVE-0123456789abcdef"


def write(tmp_path: Path, text: str, name: str = "tenants.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    return message


# -- tenant ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["acme", "a", "0", "acme-eu_2", "a" * 63])
def test_valid_tenant_ids(value: str) -> None:
    assert is_tenant_id(value)
    assert check_tenant_id(value, where="test") == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "test: tenant id is empty"),
        ("a" * 64, "tenant id is too long (64 chars, at most 63): 'aaaa"),
        ("acmé", r"tenant id 'acm\xe9' has characters that are not allowed: '\xe9'"),
        ("../acme", "tenant id '../acme' has characters that are not allowed: '.', '/'"),
        ("acme/../x", "tenant id 'acme/../x' has characters that are not allowed: '.', '/'"),
        ("Acme", "tenant id 'Acme' has characters that are not allowed: 'A'"),
        ("-acme", "tenant id '-acme' must start with a letter or digit"),
        ("_acme", "tenant id '_acme' must start with a letter or digit"),
        ("acme\n", r"tenant id 'acme\n' has characters that are not allowed: '\n'"),
        ("acme\x00", r"'acme\x00' has characters"),
        (7, "tenant id must be a string, got int 7"),
        (None, "tenant id must be a string, got NoneType None"),
    ],
    ids=lambda v: ascii(v)[:20],
)
def test_invalid_tenant_ids_say_where_and_why(value: object, expected: str) -> None:
    assert not is_tenant_id(value)
    with pytest.raises(TenancyError) as caught:
        check_tenant_id(value, where="test")
    message = str(caught.value)
    assert message.startswith("test: ")
    assert expected in message
    assert message.isascii() and message.isprintable()


def test_a_long_invalid_tenant_id_is_shown_truncated() -> None:
    with pytest.raises(TenancyError) as caught:
        check_tenant_id("../" * 20, where="test")
    shown = str(caught.value).split("tenant id ", 1)[1].split(" has", 1)[0]
    assert shown == "'" + "../" * 12 + "..."
    with pytest.raises(TenancyError) as caught:
        check_tenant_id("é" * 100, where="test")
    assert str(caught.value).endswith(": '" + r"\xe9" * 9 + "...")


# -- a valid file -----------------------------------------------------------------------------


def test_the_example_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE))
    assert config.source == str(tmp_path / "tenants.toml")
    assert config.default_tenant == "public"
    assert config.signing_secret_env == "OPENRTC_TENANT_SECRET"
    assert config.signed
    assert (config.redis_url, config.redis_url_env) == (None, "OPENRTC_REDIS_URL")
    assert config.lease_s == 20.0
    assert set(config.tenants) == {"acme", "beta"}
    acme = config.tenant("acme")
    assert acme is not None
    assert acme.agents == frozenset({"support", "sales"})
    assert (acme.max_sessions, acme.fleet_max_sessions) == (3, 10)
    assert acme.breaker == BreakerConfig(
        window_s=60.0, min_calls=10, failure_ratio=0.5, cooldown_s=30.0
    )
    llm = acme.providers["llm"]
    assert (llm.kind, llm.model) == ("llm", "openai/gpt-4.1-mini")
    assert dict(llm.secret_env) == {"api_key": "ACME_OPENAI_KEY"}
    assert dict(llm.options) == {"extra_kwargs": {"temperature": 0.2}}
    assert acme.allows("support") and not acme.allows("billing")
    beta = config.tenant("beta")
    assert beta == TenantConfig(tenant_id="beta")
    assert beta.allows("anything")
    assert config.tenant("public") is None  # the default tenant need not be listed
    assert not config.fleet_needs_redis
    assert config.needed_env() == {
        "OPENRTC_TENANT_SECRET": ["signing_secret_env"],
        "OPENRTC_REDIS_URL": ["redis_url_env"],
        "ACME_OPENAI_KEY": ["tenants.acme.providers.llm.api_key_env"],
    }


def test_an_empty_file_has_no_tenants_and_the_defaults() -> None:
    config = parse_config("", "t.toml")
    assert config == TenancyConfig(source="t.toml")
    assert config.lease_s == 15.0
    assert not config.signed and not config.fleet_needs_redis
    assert config.signing_secret({}) is None and config.redis_url_from({}) is None


@pytest.mark.parametrize(
    "text",
    [
        "[tenants.acme]\nmax_sessions = 5\nfleet_max_sessions = 2\n",  # not over-validated
        "[tenants.acme]\nagents = []\n",
        "[tenants.acme.breaker]\n",
        '[tenants.acme.providers.tts]\nmodel = "cartesia/sonic-2"\nvoice_env = "ACME_VOICE"\n',
        '[tenants.acme.providers.stt]\nmodel = "x"\nclass = "livekit.plugins.deepgram:STT"\n',
        'redis_url = "redis://127.0.0.1:6379/0"\n',
        'redis_url = "rediss://user@redis.internal:6380/1"\n',
        "lease_s = 2.5\n",
    ],
)
def test_valid_variations(text: str) -> None:
    parse_config(text, "t.toml")


def test_empty_agents_allow_none() -> None:
    config = parse_config("[tenants.acme]\nagents = []\n", "t.toml")
    acme = config.tenant("acme")
    assert acme is not None and not acme.allows("support")


def test_fleet_caps_without_redis_are_allowed_but_flagged() -> None:
    text = "[tenants.acme]\nfleet_max_sessions = 4\n"
    assert parse_config(text, "t.toml").fleet_needs_redis
    with_url = 'redis_url = "redis://127.0.0.1:6379/0"\n' + text
    assert not parse_config(with_url, "t.toml").fleet_needs_redis
    with_env = 'redis_url_env = "REDIS"\n' + text
    assert not parse_config(with_env, "t.toml").fleet_needs_redis


# -- errors name the file, the key path (and so the tenant), and never a secret ---------------

BAD: list[tuple[str, str, list[str]]] = [
    # (id, file text, what the message says after "<file>: ")
    ("syntax", "[tenants.acme]\nmax_sessions = = 3\n", [":2:16: invalid TOML: Invalid value"]),
    ("syntax-eof", "[tenants.acme\n", ["invalid TOML"]),
    (
        "unknown-top-key",
        'defualt_tenant = "acme"\n',
        [
            "defualt_tenant: unknown key (did you mean 'default_tenant'?)",
            "known keys: default_tenant, signing_secret_env",
        ],
    ),
    (
        "unknown-tenant-key",
        "[tenants.acme]\nmax_session = 3\n",
        [
            "tenants.acme.max_session: unknown key (did you mean 'max_sessions'?)",
            "known keys: agents, max_sessions, fleet_max_sessions, providers, breaker",
        ],
    ),
    (
        "unknown-breaker-key",
        "[tenants.acme.breaker]\nwindow = 60\n",
        ["tenants.acme.breaker.window: unknown key (did you mean 'window_s'?)"],
    ),
    ("tenants-not-table", "tenants = 3\n", ["tenants: must be a table, got 3"]),
    ("tenant-not-table", '[tenants]\nacme = "x"\n', ["tenants.acme: must be a table, got 'x'"]),
    (
        "max-sessions-str",
        '[tenants.acme]\nmax_sessions = "three"\n',
        ["tenants.acme.max_sessions: must be a positive integer, got 'three'"],
    ),
    (
        "max-sessions-zero",
        "[tenants.acme]\nmax_sessions = 0\n",
        ["tenants.acme.max_sessions: must be a positive integer, got 0"],
    ),
    (
        "max-sessions-bool",
        "[tenants.acme]\nmax_sessions = true\n",
        ["tenants.acme.max_sessions: must be a positive integer, got True"],
    ),
    (
        "max-sessions-float",
        "[tenants.acme]\nmax_sessions = 2.5\n",
        ["tenants.acme.max_sessions: must be a positive integer, got 2.5"],
    ),
    (
        "fleet-max-negative",
        "[tenants.acme]\nfleet_max_sessions = -1\n",
        ["tenants.acme.fleet_max_sessions: must be a positive integer, got -1"],
    ),
    (
        "tenant-path-like",
        '[tenants."../acme"]\n',
        ["tenants.'../acme': tenant id '../acme' has characters that are not allowed"],
    ),
    (
        "tenant-uppercase",
        "[tenants.Acme]\n",
        ["tenants.Acme: tenant id 'Acme' has characters that are not allowed: 'A'"],
    ),
    (
        "tenant-leading-dash",
        "[tenants.-acme]\n",
        ["tenants.-acme: tenant id '-acme' must start with a letter or digit"],
    ),
    (
        "tenant-non-ascii",
        '[tenants."acmé"]\n',
        [r"tenants.'acm\xe9': tenant id 'acm\xe9' has characters that are not allowed"],
    ),
    (
        "tenant-too-long",
        f"[tenants.{'a' * 64}]\n",
        ["tenant id is too long (64 chars, at most 63)"],
    ),
    ("default-tenant-empty", 'default_tenant = ""\n', ["default_tenant: tenant id is empty"]),
    (
        "default-tenant-invalid",
        'default_tenant = "Public Tenant"\n',
        ["default_tenant: tenant id 'Public Tenant' has characters that are not allowed"],
    ),
    (
        "default-tenant-int",
        "default_tenant = 3\n",
        ["default_tenant: tenant id must be a string, got int 3"],
    ),
    (
        "agents-not-list",
        '[tenants.acme]\nagents = "support"\n',
        ["tenants.acme.agents: must be an array of agent names, got 'support'"],
    ),
    (
        "agents-empty-name",
        '[tenants.acme]\nagents = ["support", ""]\n',
        ["tenants.acme.agents[1]: must be a non-empty string, got ''"],
    ),
    (
        "agents-not-str",
        '[tenants.acme]\nagents = ["support", 3]\n',
        ["tenants.acme.agents[1]: must be a non-empty string, got 3"],
    ),
    (
        "providers-not-table",
        "[tenants.acme]\nproviders = 3\n",
        ["tenants.acme.providers: must be a table, got 3"],
    ),
    (
        "provider-kind",
        '[tenants.acme.providers.llmm]\nmodel = "x"\n',
        [
            "tenants.acme.providers.llmm: unknown provider kind (did you mean 'llm'?)",
            "known provider kinds: llm, stt, tts",
        ],
    ),
    (
        "provider-not-table",
        '[tenants.acme.providers]\nllm = "openai/gpt-4.1-mini"\n',
        ["tenants.acme.providers.llm: must be a table, got 'openai/gpt-4.1-mini'"],
    ),
    (
        "provider-without-model",
        "[tenants.acme.providers.llm]\ntemperature = 0.2\n",
        ["tenants.acme.providers.llm: needs a model", "or a provider class"],
    ),
    (
        "provider-model-not-str",
        "[tenants.acme.providers.llm]\nmodel = 4\n",
        ["tenants.acme.providers.llm.model: must be a non-empty string, got 4"],
    ),
    (
        "provider-option-array",
        '[tenants.acme.providers.llm]\nmodel = "x"\nstop = ["a"]\n',
        [
            "tenants.acme.providers.llm.stop: must be a string, number, boolean or table of "
            "them, got an array"
        ],
    ),
    (
        "provider-option-twice",
        '[tenants.acme.providers.tts]\nmodel = "x"\nvoice = "v"\nvoice_env = "VOICE"\n',
        ["tenants.acme.providers.tts.voice: is given both as voice and voice_env; keep one"],
    ),
    (
        "provider-class",
        '[tenants.acme.providers.stt]\nmodel = "x"\nclass = "not a class"\n',
        ['tenants.acme.providers.stt.class: must be "package.module:Name"'],
    ),
    (
        "redis-url-and-env",
        'redis_url = "redis://localhost"\nredis_url_env = "REDIS"\n',
        ["redis_url: give redis_url or redis_url_env, not both"],
    ),
    (
        "redis-url-scheme",
        'redis_url = "http://localhost"\n',
        ["redis_url: must be a redis://, rediss://, unix:// URL"],
    ),
    ("lease-zero", "lease_s = 0\n", ["lease_s: must be a positive number, got 0"]),
    ("lease-str", 'lease_s = "15"\n', ["lease_s: must be a positive number, got '15'"]),
    ("lease-inf", "lease_s = inf\n", ["lease_s: must be a positive number, got inf"]),
    ("lease-nan", "lease_s = nan\n", ["lease_s: must be a positive number, got nan"]),
    ("lease-huge", f"lease_s = 1{'0' * 400}\n", ["lease_s: must be a positive number, got 1000"]),
    (
        "breaker-not-table",
        "[tenants.acme]\nbreaker = 3\n",
        ["tenants.acme.breaker: must be a table, got 3"],
    ),
    (
        "breaker-window",
        "[tenants.acme.breaker]\nwindow_s = 0\n",
        ["tenants.acme.breaker.window_s: must be a positive number, got 0"],
    ),
    (
        "breaker-min-calls",
        "[tenants.acme.breaker]\nmin_calls = 1.5\n",
        ["tenants.acme.breaker.min_calls: must be a positive integer, got 1.5"],
    ),
    (
        "breaker-ratio-zero",
        "[tenants.acme.breaker]\nfailure_ratio = 0\n",
        ["tenants.acme.breaker.failure_ratio: must be a number above 0 and at most 1, got 0"],
    ),
    (
        "breaker-ratio-high",
        "[tenants.acme.breaker]\nfailure_ratio = 1.5\n",
        ["tenants.acme.breaker.failure_ratio: must be a number above 0 and at most 1, got 1.5"],
    ),
    (
        "breaker-cooldown",
        "[tenants.acme.breaker]\ncooldown_s = -30\n",
        ["tenants.acme.breaker.cooldown_s: must be a positive number, got -30"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_files_name_the_file_and_key(tmp_path: Path, text: str, expected: list[str]) -> None:
    message = error_for(tmp_path, text)
    for fragment in expected:
        assert fragment in message, message
    assert "\n" not in message


LITERAL_SECRETS = [
    ("api_key", f'api_key = "{SECRET}"', 'write api_key_env = "ENV_VAR_NAME" instead'),
    ("api_secret", f'api_secret = "{SECRET}"', 'write api_secret_env = "ENV_VAR_NAME"'),
    ("secret", f'secret = "{SECRET}"', 'write secret_env = "ENV_VAR_NAME"'),
    ("token", f'token = "{SECRET}"', 'write token_env = "ENV_VAR_NAME"'),
    ("password", f'password = "{SECRET}"', 'write password_env = "ENV_VAR_NAME"'),
    ("key", f'key = "{SECRET}"', 'write key_env = "ENV_VAR_NAME"'),
    ("suffix", f'deepgram_api_key = "{SECRET}"', 'write deepgram_api_key_env = "ENV_VAR_NAME"'),
    ("case", f'API_KEY = "{SECRET}"', 'write API_KEY_env = "ENV_VAR_NAME"'),
    ("access_token", f'access_token = "{SECRET}"', 'write access_token_env = "ENV_VAR_NAME"'),
]


@pytest.mark.parametrize(
    ("name", "line", "advice"), LITERAL_SECRETS, ids=[c[0] for c in LITERAL_SECRETS]
)
def test_literal_secrets_are_refused_without_showing_them(
    tmp_path: Path, name: str, line: str, advice: str
) -> None:
    text = f'[tenants.acme.providers.llm]\nmodel = "openai/gpt-4.1-mini"\n{line}\n'
    message = error_for(tmp_path, text)
    option = line.split(" =", 1)[0]
    assert f"tenants.acme.providers.llm.{option}: is a secret" in message
    assert advice in message
    assert SECRET not in message and "0123456789" not in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            f'[tenants.acme.providers.llm]\nmodel = "m"\napi_key_env = "{SECRET}"\n',
            "tenants.acme.providers.llm.api_key_env",
        ),
        (f'signing_secret_env = "{SECRET}"\n', "signing_secret_env"),
        (f'redis_url_env = "{SECRET}"\n', "redis_url_env"),
        (f'redis_url = "redis://:{SECRET}@localhost:6379/0"\n', "redis_url"),
        (f'redis_url = "redis://default:{SECRET}@localhost/0"\n', "redis_url"),
        (f'redis_url = "redis://localhost/0?password={SECRET}"\n', "redis_url"),
        (f'signing_secret = "{SECRET}"\n', "signing_secret"),
        (f'[tenants.acme]\napi_key = "{SECRET}"\n', "tenants.acme.api_key"),
    ],
    ids=[
        "secret-as-env-name",
        "signing-secret-as-env-name",
        "redis-url-as-env-name",
        "redis-password",
        "redis-user-password",
        "redis-query-password",
        "signing-secret-literal",
        "secret-on-tenant",
    ],
)
def test_secrets_in_the_wrong_place_are_never_echoed(tmp_path: Path, text: str, key: str) -> None:
    message = error_for(tmp_path, text)
    assert f": {key}: " in message
    assert SECRET not in message and "0123456789" not in message


def test_redis_password_error_says_what_to_do(tmp_path: Path) -> None:
    message = error_for(tmp_path, f'redis_url = "redis://:{SECRET}@localhost/0"\n')
    assert "holds a password" in message and 'redis_url_env = "ENV_VAR_NAME"' in message


def test_env_names_must_be_names(tmp_path: Path) -> None:
    message = error_for(tmp_path, '[tenants.acme.providers.llm]\nmodel = "m"\napi_key_env = 3\n')
    assert "tenants.acme.providers.llm.api_key_env: must name an environment variable" in message


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: None, "no such tenants file"),
        (lambda p: p.mkdir(), "cannot read the tenants file"),
        (lambda p: p.write_bytes(b"default_tenant = '\xff'\n"), "not UTF-8 text (byte 18)"),
    ],
    ids=["missing", "directory", "not-utf8"],
)
def test_unreadable_files_are_named(tmp_path: Path, make: object, expected: str) -> None:
    path = tmp_path / "tenants.toml"
    assert callable(make)
    make(path)
    with pytest.raises(ConfigError, match="^" + str(path)) as caught:
        load_config(path)
    assert expected in str(caught.value)


# -- secrets come from the environment ----------------------------------------------------------


def test_resolve_reads_secrets_from_the_given_environ(tmp_path: Path) -> None:
    acme = load_config(write(tmp_path, EXAMPLE)).tenant("acme")
    assert acme is not None
    llm = acme.providers["llm"]
    resolved = llm.resolve({"ACME_OPENAI_KEY": SECRET})
    assert resolved == {"extra_kwargs": {"temperature": 0.2}, "api_key": SECRET}
    assert SECRET not in repr(llm) and SECRET not in repr(acme)
    assert "ACME_OPENAI_KEY" in repr(llm)


@pytest.mark.parametrize("environ", [{}, {"ACME_OPENAI_KEY": ""}], ids=["unset", "empty"])
def test_resolve_names_tenant_provider_option_and_variable(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    llm = load_config(write(tmp_path, EXAMPLE)).tenants["acme"].providers["llm"]
    with pytest.raises(ConfigError) as caught:
        llm.resolve({**environ, "OTHER": SECRET})
    message = str(caught.value)
    assert message == (
        "tenant 'acme', llm provider, option 'api_key': "
        "environment variable ACME_OPENAI_KEY is not set or is empty"
    )


def test_signing_secret_and_redis_url_from_the_environ(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    config = load_config(path)
    environ = {"OPENRTC_TENANT_SECRET": "s3cret", "OPENRTC_REDIS_URL": "redis://:pw@r:6379/0"}
    assert config.signing_secret(environ) == b"s3cret"
    assert config.redis_url_from(environ) == "redis://:pw@r:6379/0"
    with pytest.raises(ConfigError, match=f"^{path}: signing_secret_env: .*OPENRTC_TENANT_SECRET"):
        config.signing_secret({})
    with pytest.raises(ConfigError, match=f"^{path}: redis_url_env: .*OPENRTC_REDIS_URL"):
        config.redis_url_from({"OPENRTC_REDIS_URL": ""})
    literal = parse_config('redis_url = "redis://127.0.0.1:6379/0"\n', "t.toml")
    assert literal.redis_url_from({}) == "redis://127.0.0.1:6379/0"


def test_built_in_code_the_classes_check_too() -> None:
    with pytest.raises(ConfigError, match=r"BreakerConfig\.window_s: must be a positive number"):
        BreakerConfig(window_s=0)
    with pytest.raises(ConfigError, match=r"BreakerConfig\.min_calls: must be a positive integer"):
        BreakerConfig(min_calls=True)
    with pytest.raises(ConfigError, match=r"TenantConfig\.tenant_id: tenant id '\.\./x'"):
        TenantConfig(tenant_id="../x")
    with pytest.raises(ConfigError, match=r"ProviderConfig\.kind: must be one of llm, stt, tts"):
        ProviderConfig(kind="vad", model="m")
    with pytest.raises(ConfigError, match="'api_key' is a secret") as caught:
        ProviderConfig(kind="llm", model="m", options={"api_key": SECRET})
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigError, match="'api_key' must map to an environment variable") as c2:
        ProviderConfig(kind="llm", model="m", secret_env={"api_key": SECRET})
    assert SECRET not in str(c2.value)


# -- live edits -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def edit(path: Path, text: str, mtime_ns: int) -> None:
    """Write `text` and set a distinct mtime, so the change is seen whatever the clock."""
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(mtime_ns, mtime_ns))


GOOD_ONE = "[tenants.acme]\nmax_sessions = 3\n"
GOOD_TWO = "[tenants.acme]\nmax_sessions = 5\n\n[tenants.beta]\n"
BAD_EDIT = '[tenants.acme]\nmax_sessions = "five"\n'


def test_a_bad_file_at_start_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_sessions"):
        ConfigFile(write(tmp_path, BAD_EDIT))
    with pytest.raises(ConfigError, match="no such tenants file"):
        ConfigFile(tmp_path / "missing.toml")


def test_edits_apply_at_most_once_per_check_interval(tmp_path: Path) -> None:
    clock = Clock()
    path = write(tmp_path, GOOD_ONE)
    file = ConfigFile(path, check_every_s=1.0, now=clock)
    assert file.path == path
    edit(path, GOOD_TWO, 1_000_000_000)
    clock.now += 0.5
    assert not file.refresh()  # too soon
    assert file.current.tenants["acme"].max_sessions == 3
    clock.now += 0.5
    assert file.refresh()
    assert file.current.tenants["acme"].max_sessions == 5
    clock.now += 1
    assert not file.refresh()  # unchanged


def test_a_bad_edit_keeps_the_old_config_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openrtc.tenancy")
    clock = Clock()
    path = write(tmp_path, GOOD_ONE)
    file = ConfigFile(path, now=clock)
    before = file.current
    for step in range(3):  # the same bad content, saved three times
        edit(path, BAD_EDIT, 1_000_000_000 + step)
        clock.now += 1
        assert not file.refresh()
        assert file.current is before
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"tenants file {path}: tenants.acme.max_sessions: must be a positive integer, "
        "got 'five'; keeping the previous configuration"
    ]
    assert warnings[0].name == "openrtc.tenancy"

    edit(path, GOOD_TWO, 2_000_000_000)
    clock.now += 1
    assert file.refresh()
    assert set(file.current.tenants) == {"acme", "beta"}
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == [f"tenants file {path} reloaded: 2 tenants"]

    edit(path, BAD_EDIT, 3_000_000_000)  # the same mistake after a good edit: said again
    clock.now += 1
    assert not file.refresh()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_each_distinct_bad_content_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    path = write(tmp_path, GOOD_ONE)
    file = ConfigFile(path, now=clock)
    other_bad = "[tenants.acme]\nmax_sessions = 0\n"
    for step, text in enumerate([BAD_EDIT, other_bad, BAD_EDIT, GOOD_ONE, BAD_EDIT]):
        edit(path, text, 1_000_000_000 + step)
        clock.now += 1
        assert not file.refresh()  # GOOD_ONE is the configuration already in force
    assert file.current.tenants["acme"].max_sessions == 3
    said = [r.getMessage().split(": ", 2)[2] for r in caplog.records]
    assert said == [
        "must be a positive integer, got 'five'; keeping the previous configuration",
        "must be a positive integer, got 0; keeping the previous configuration",
        # undoing the bad edit forgets it: breaking the file again is said again
        "must be a positive integer, got 'five'; keeping the previous configuration",
    ]


def test_a_removed_file_keeps_the_old_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    path = write(tmp_path, GOOD_ONE)
    file = ConfigFile(path, now=clock)
    path.unlink()
    for _ in range(2):
        clock.now += 1
        assert not file.refresh()
    assert [r.getMessage() for r in caplog.records] == [
        f"tenants file {path}: no such tenants file; keeping the previous configuration"
    ]
    edit(path, GOOD_TWO, 5_000_000_000)
    clock.now += 1
    assert file.refresh()
    assert set(file.current.tenants) == {"acme", "beta"}


# -- openrtc tenancy check --------------------------------------------------------------------


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """The test app."""

    register(app)
    return app


EXAMPLE_ENV = {
    "ACME_OPENAI_KEY": SECRET,
    "OPENRTC_TENANT_SECRET": "signing-secret",
    "OPENRTC_REDIS_URL": "redis://127.0.0.1:1/0",
    # inference.LLM needs one to build
    "LIVEKIT_API_SECRET": "gateway-secret-0123456789abcdef-0123",
}


def test_check_summarises_a_valid_file_with_env_names_only(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    result = CliRunner().invoke(cli(), ["tenancy", "check", str(path)], env=EXAMPLE_ENV)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"{path}: valid, 2 tenants" in out
    assert "default tenant: public (not listed: every agent, no caps)" in out
    assert "tenant acme: agents: sales, support; max 3 sessions per worker; " in out
    assert "max 10 across the fleet; llm openai/gpt-4.1-mini; breaker: opens at 50%" in out
    assert "tenant beta: every agent" in out
    lines = out.splitlines()
    assert any(
        line.split() == ["ACME_OPENAI_KEY", "set", "tenants.acme.providers.llm.api_key_env"]
        for line in lines
    ), out
    assert SECRET not in result.output


def test_check_exits_1_naming_each_unset_variable_and_its_key(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    env = {**EXAMPLE_ENV, "OPENRTC_TENANT_SECRET": "", "ACME_OPENAI_KEY": ""}
    result = CliRunner().invoke(cli(), ["tenancy", "check", str(path)], env=env)
    assert result.exit_code == 1, result.output
    assert "NOT USABLE" in result.stdout
    lines = result.stdout.splitlines()
    assert any(line.split()[:3] == ["OPENRTC_TENANT_SECRET", "NOT", "SET"] for line in lines)
    assert result.stderr.splitlines() == [
        f"error: {path}: signing_secret_env: environment variable OPENRTC_TENANT_SECRET is not set",
        f"error: {path}: tenants.acme.providers.llm.api_key_env: environment variable "
        "ACME_OPENAI_KEY is not set",
    ]


def test_check_warns_about_fleet_caps_without_redis(tmp_path: Path) -> None:
    path = write(tmp_path, "[tenants.acme]\nfleet_max_sessions = 4\n")
    result = CliRunner().invoke(cli(), ["tenancy", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "warning: fleet_max_sessions is set but there is no redis_url" in result.stderr


def test_check_exits_1_with_the_error_line(tmp_path: Path) -> None:
    path = write(tmp_path, f'[tenants.acme.providers.llm]\nmodel = "m"\napi_key = "{SECRET}"\n')
    result = CliRunner().invoke(cli(), ["tenancy", "check", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {path}: tenants.acme.providers.llm.api_key: ")
    assert len(result.stderr.splitlines()) == 1
    assert SECRET not in result.output
