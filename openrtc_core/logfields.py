"""Untrusted text in log lines: bounded in length, control characters escaped.

Agent names from metadata, room names, tenant ids, refusal reasons from plugins and
participant attributes come from whoever dispatches the call. Logged whole, a 64 KB agent
name makes a 64 KB log line, and a newline in a room name writes a second, forged line.
Every log line that carries such a value passes it through :func:`bounded` first.
"""

from __future__ import annotations

from typing import Final

LIMIT: Final = 200
"""Characters of one untrusted value a log line keeps."""
REASON_LIMIT: Final = 600
"""Characters of a refusal reason (it quotes bounded values of its own, and a hint)."""


def _escaped(char: str) -> str:
    return char if char.isprintable() else repr(char)[1:-1]


def bounded(value: object, limit: int = LIMIT) -> str:
    """`value` as text for a log line: control characters and other unprintable ones
    escaped as Python does (``\\n``, ``\\x1b``), cut to `limit` characters with
    ``…(+N chars)`` saying how much was left out."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit and text.isprintable():
        return text
    kept: list[str] = []
    length = 0
    for index, char in enumerate(text):
        piece = _escaped(char)
        if length + len(piece) > limit:
            return "".join(kept) + f"…(+{len(text) - index} chars)"
        kept.append(piece)
        length += len(piece)
    return "".join(kept)
