"""Tenant ids: what a valid one looks like, and how to show an invalid one safely."""

from __future__ import annotations

import re
from typing import Final, TypeGuard

from openrtc_core import OpenRTCError

TENANT_ID_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
"""A tenant id, matched in full: lowercase ASCII letters, digits, ``_`` and ``-``."""
MAX_TENANT_ID_LENGTH: Final = 63
SHOWN_CHARS: Final = 40
_ALLOWED_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
_RULE: Final = "use a-z, 0-9, '_' and '-', starting with a letter or digit"


class TenancyError(OpenRTCError):
    """A tenancy problem: a bad tenant id, tenants file or signing setup."""


def show_value(value: object, limit: int = SHOWN_CHARS) -> str:
    """`value` for an error message: its ASCII repr (quoted, escaped), at most `limit` chars."""
    text = ascii(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def is_tenant_id(value: object) -> TypeGuard[str]:
    """Whether `value` is a valid tenant id."""
    return isinstance(value, str) and TENANT_ID_PATTERN.fullmatch(value) is not None


def check_tenant_id(value: object, *, where: str) -> str:
    """`value` if it is a valid tenant id; otherwise a :class:`TenancyError` saying why.

    :param where: where the value came from, the start of the message (``"job metadata"``).
    """
    if is_tenant_id(value):
        return value
    raise TenancyError(f"{where}: {tenant_id_problem(value)}")


def tenant_id_problem(value: object) -> str | None:
    """What is wrong with `value` as a tenant id (showing it safely), or None if it is valid."""
    if is_tenant_id(value):
        return None
    if not isinstance(value, str):
        return f"tenant id must be a string, got {type(value).__name__} {show_value(value)}"
    if not value:
        return "tenant id is empty"
    shown = show_value(value)
    if len(value) > MAX_TENANT_ID_LENGTH:
        return (
            f"tenant id is too long ({len(value)} chars, at most {MAX_TENANT_ID_LENGTH}): {shown}"
        )
    bad = sorted(set(value) - _ALLOWED_CHARS)
    if bad:
        listed = ", ".join(show_value(char) for char in bad[:5]) + (", ..." if bad[5:] else "")
        return f"tenant id {shown} has characters that are not allowed: {listed} ({_RULE})"
    return f"tenant id {shown} must start with a letter or digit ({_RULE})"
