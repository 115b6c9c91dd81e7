"""The LiveKit server URL and keys the connecting verbs need, checked before livekit runs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import attrs

from .argv import flag_value

if TYPE_CHECKING:
    from ..pool import AgentPool

CONNECTING_VERBS: Final = ("dev", "start", "connect")
"""The verbs that talk to a LiveKit server, so need its URL and credentials."""


@attrs.frozen
class Credential:
    flag: str
    env: str
    server_option: str


CREDENTIALS: Final = (
    Credential("--url", "LIVEKIT_URL", "ws_url"),
    Credential("--api-key", "LIVEKIT_API_KEY", "api_key"),
    Credential("--api-secret", "LIVEKIT_API_SECRET", "api_secret"),
)
"""What livekit needs to register a worker, where it reads each (``cli/_legacy.py``: the
flag, else the environment variable; ``AgentServer`` also takes them as options), and the
checks it would otherwise fail late (``worker.py``: "ws_url is required")."""


def missing_credentials(args: Sequence[str], pool: AgentPool) -> list[Credential]:
    """The credentials neither `args`, the environment nor the pool's server options give."""
    options = pool.settings.server_options
    return [
        cred
        for cred in CREDENTIALS
        if not (
            flag_value(args, cred.flag)
            or os.environ.get(cred.env, "").strip()
            or options.get(cred.server_option)
        )
    ]


def credentials_message(command: str, missing: Sequence[Credential]) -> str:
    envs = ", ".join(cred.env for cred in missing)
    flags = ", ".join(cred.flag for cred in missing)
    return f"{command}: no LiveKit server to connect to: set {envs} (or pass {flags})"
