"""Signed tenancy: signatures bind a tenant to a room; ``openrtc tenancy sign`` prints them."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
import typer
from typer.testing import CliRunner

from openrtc_tenancy.commands import register
from openrtc_tenancy.ids import TenancyError
from openrtc_tenancy.signing import SIGNATURE_KEY, TENANT_KEY, sign, verify

SECRET = b"the-shared-signing-secret"


def test_the_signature_is_the_documented_hmac() -> None:
    # What a dispatcher written in another language must reproduce.
    message = b"openrtc-tenant-v1\x00acme\x00room-1"
    expected = hmac.new(SECRET, message, hashlib.sha256).hexdigest()
    assert sign("acme", "room-1", SECRET) == expected
    assert len(expected) == 64 and expected == expected.lower()


def test_a_signature_verifies_for_its_tenant_and_room() -> None:
    signature = sign("acme", "room-1", SECRET)
    assert verify("acme", "room-1", signature, SECRET)
    assert verify("acme", "room-1", signature.upper(), SECRET)
    assert verify("acme", "réunion ☎", sign("acme", "réunion ☎", SECRET), SECRET)


def test_a_signature_does_not_verify_for_another_room_tenant_or_secret() -> None:
    signature = sign("acme", "room-1", SECRET)
    assert not verify("acme", "room-2", signature, SECRET)  # replayed in another room
    assert not verify("globex", "room-1", signature, SECRET)  # claimed by another tenant
    assert not verify("acme", "room-1", signature, b"another-secret")


def test_tenant_and_room_cannot_be_shifted_into_each_other() -> None:
    assert sign("ab", "c", SECRET) != sign("a", "bc", SECRET)
    assert sign("a", "", SECRET) != sign("a", "\x00", SECRET)


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        42,
        b"0" * 64,
        ["0" * 64],
        "0" * 63,
        "0" * 65,
        "z" * 64,
        "é" * 64,
        " " + "0" * 63,
        "0" * 62 + "\x00\x00",
    ],
    ids=lambda v: ascii(v)[:16],
)
def test_malformed_signatures_are_false_without_raising(signature: object) -> None:
    assert not verify("acme", "room-1", signature, SECRET)


@pytest.mark.parametrize(
    ("tenant", "room", "secret"),
    [
        ("../acme", "room-1", SECRET),
        ("", "room-1", SECRET),
        (None, "room-1", SECRET),
        ("acme", None, SECRET),
        ("acme", "\udc80", SECRET),
        ("acme", "room-1", b""),
    ],
    ids=["path-like-tenant", "empty-tenant", "no-tenant", "no-room", "surrogate-room", "no-key"],
)
def test_verify_is_false_for_unusable_inputs(tenant: object, room: object, secret: bytes) -> None:
    assert not verify(tenant, room, "0" * 64, secret)


def test_sign_refuses_an_invalid_tenant_or_empty_secret() -> None:
    with pytest.raises(TenancyError, match=r"sign: tenant id '\.\./acme' has characters"):
        sign("../acme", "room-1", SECRET)
    with pytest.raises(ValueError, match="the signing secret is empty"):
        sign("acme", "room-1", b"")


# -- openrtc tenancy sign ---------------------------------------------------------------------


def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """The test app."""

    register(app)
    return app


def test_sign_prints_the_job_metadata() -> None:
    result = CliRunner().invoke(
        cli(), ["tenancy", "sign", "acme", "room-1"], env={"OPENRTC_TENANT_SECRET": "s3cret"}
    )
    assert result.exit_code == 0, result.output
    metadata = json.loads(result.stdout)
    assert set(metadata) == {TENANT_KEY, SIGNATURE_KEY} == {"tenant", "tenant_sig"}
    assert metadata[TENANT_KEY] == "acme"
    assert verify("acme", "room-1", metadata[SIGNATURE_KEY], b"s3cret")
    assert "s3cret" not in result.output


def test_sign_reads_the_secret_from_the_named_variable() -> None:
    result = CliRunner().invoke(
        cli(),
        ["tenancy", "sign", "acme", "room-1", "--secret-env", "MY_SECRET"],
        env={"MY_SECRET": "other", "OPENRTC_TENANT_SECRET": "s3cret"},
    )
    assert result.exit_code == 0, result.output
    assert verify("acme", "room-1", json.loads(result.stdout)[SIGNATURE_KEY], b"other")


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            ["acme", "room-1"],
            {"OPENRTC_TENANT_SECRET": ""},
            "error: environment variable OPENRTC_TENANT_SECRET is not set",
        ),
        (
            ["acme", "room-1", "--secret-env", "MY_SECRET"],
            {"MY_SECRET": None},
            "error: environment variable MY_SECRET is not set",
        ),
        (
            ["../acme", "room-1"],
            {"OPENRTC_TENANT_SECRET": "s3cret"},
            "error: TENANT: tenant id '../acme' has characters that are not allowed",
        ),
        (
            ["Acme", "room-1"],
            {"OPENRTC_TENANT_SECRET": "s3cret"},
            "error: TENANT: tenant id 'Acme' has characters that are not allowed",
        ),
        (["acme", ""], {"OPENRTC_TENANT_SECRET": "s3cret"}, "error: ROOM is empty"),
        (
            ["acme", "room-1", "--secret-env", "sk-pasted-secret-value"],
            {},
            "error: --secret-env must name the environment variable that holds the secret",
        ),
    ],
    ids=["unset", "unset-named", "path-like-tenant", "uppercase-tenant", "empty-room", "pasted"],
)
def test_sign_exits_2_with_one_error_line(
    args: list[str], env: dict[str, str | None], expected: str
) -> None:
    result = CliRunner().invoke(cli(), ["tenancy", "sign", *args], env=env)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(expected), result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "s3cret" not in result.output and "sk-pasted" not in result.output
