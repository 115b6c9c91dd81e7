"""Safe reading of job and room metadata.

Metadata arrives from whoever created the room or the dispatch. It is read as a JSON object;
anything else is treated as absent, with one warning, so a bad value never takes a worker down.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

logger = logging.getLogger("openrtc.metadata")

MAX_METADATA_BYTES = 64 * 1024

EMPTY: Mapping[str, Any] = MappingProxyType({})


def parse_metadata(
    raw: str, *, source: str, job_id: str = "", warn: bool = True
) -> Mapping[str, Any]:
    """Parse `raw` as a JSON object; return an empty mapping (and warn) when it is not one.

    `source` names where the text came from ("job metadata", "room metadata") for the warning.
    Empty text is the normal case of no metadata and is not warned about; `warn=False` reads
    text that was already warned about once.
    """
    if not warn:
        return _parse(raw)
    return _parse(raw, on_problem=lambda problem: _warn(source, job_id, problem))


def _parse(raw: str, on_problem: Callable[[str], None] | None = None) -> Mapping[str, Any]:
    def problem(text: str) -> Mapping[str, Any]:
        if on_problem is not None:
            on_problem(text)
        return EMPTY

    if not raw or not raw.strip():
        return EMPTY
    size = len(raw.encode("utf-8", errors="replace"))
    if size > MAX_METADATA_BYTES:
        return problem(f"is {size} bytes, over the {MAX_METADATA_BYTES} byte limit")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return problem(f"is not valid JSON ({_short(exc)})")
    if not isinstance(value, dict):
        return problem(f"is JSON {type(value).__name__}, not an object")
    return MappingProxyType(value)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _warn(source: str, job_id: str, problem: str) -> None:
    logger.warning(
        '%s %s; treating it as absent (send a JSON object such as {"agent": "support"})',
        source,
        problem,
        extra={"job_id": job_id, "metadata_source": source},
    )
