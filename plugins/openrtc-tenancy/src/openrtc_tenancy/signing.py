"""Signed tenancy: a job's tenant is trusted only with a signature bound to its room.

Whoever dispatches a job puts ``{"tenant": "acme", "tenant_sig": sign("acme", room, secret)}``
in its metadata. The signature is the hex HMAC-SHA256, keyed by the shared secret, of the
UTF-8 bytes of::

    "openrtc-tenant-v1" NUL tenant_id NUL room_name

(NUL is ``"\\x00"``). A tenant id never contains NUL, so the message splits one way only: a
signature made for one tenant or room does not verify for another. In Python,
``hmac.new(secret, f"openrtc-tenant-v1\\x00{tenant}\\x00{room}".encode(), "sha256").hexdigest()``.
The signature does not expire: it stays valid for its room, so use a new room per call.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from .ids import check_tenant_id, is_tenant_id

TENANT_KEY: Final = "tenant"
"""The job-metadata key naming the tenant."""
SIGNATURE_KEY: Final = "tenant_sig"
"""The job-metadata key holding the signature of the tenant and room."""
DOMAIN: Final = "openrtc-tenant-v1"
SIGNATURE_LENGTH: Final = 2 * hashlib.sha256().digest_size
_HEX_DIGITS: Final = frozenset("0123456789abcdef")


def _message(tenant_id: str, room_name: str) -> bytes:
    return f"{DOMAIN}\x00{tenant_id}\x00{room_name}".encode()


def sign(tenant_id: str, room_name: str, secret: bytes) -> str:
    """The signature (64 lowercase hex digits) binding `tenant_id` to `room_name`.

    :raises TenancyError: `tenant_id` is not a valid tenant id.
    :raises ValueError: `secret` is empty.
    """
    check_tenant_id(tenant_id, where="sign")
    if not secret:
        raise ValueError("the signing secret is empty")
    return hmac.new(secret, _message(tenant_id, room_name), hashlib.sha256).hexdigest()


def verify(tenant_id: object, room_name: object, signature: object, secret: bytes) -> bool:
    """Whether `signature` is :func:`sign`'s for this tenant and room; never raises.

    False for a missing, non-string, wrong-length or non-hex signature, an invalid tenant id,
    a room name that is not a string, or an empty secret. Compared in constant time.
    """
    if not isinstance(signature, str) or len(signature) != SIGNATURE_LENGTH:
        return False
    signature = signature.lower()
    if not _HEX_DIGITS.issuperset(signature):
        return False
    if not is_tenant_id(tenant_id) or not isinstance(room_name, str) or not secret:
        return False
    try:
        message = _message(tenant_id, room_name)
    except UnicodeEncodeError:  # a lone surrogate: no signature was made for it
        return False
    expected = hmac.new(secret, message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)
