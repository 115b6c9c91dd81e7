"""The shared VAD: loaded once per worker process, handed to every session that has none.

It is a plugin like any other: ``openrtc_prewarm`` loads the model into ``proc.userdata``,
``openrtc_session_options`` contributes it to the sessions of agents configured without a
``vad``. Disable it (``OPENRTC_DISABLE_PLUGINS=openrtc.prewarm``) and sessions get no VAD
unless the pool or the agent names one.

The shared VAD runs every session's inference on one thread pool, as many threads as the
worker has usable cores. livekit's default is a new one-thread pool per VAD stream: one or two
streams a voice call, each a thread with its own stack and allocator arena, for work that
takes a fraction of a millisecond every 32 ms. The pool starts its threads on first use, in
the process that runs the sessions: a supervisor that forks workers after the prewarm hands
them a pool with no threads yet.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

from ..cores import usable_cores
from ..hookspecs import hookimpl
from ..models import PoolView

if TYPE_CHECKING:
    from livekit.agents import JobProcess, inference

logger = logging.getLogger("openrtc.prewarm")

VAD_KEY: Final = "openrtc.vad"
"""Where the shared VAD is kept in ``JobProcess.userdata``."""

VAD_THREAD_PREFIX: Final = "openrtc.vad"
"""The name of the shared VAD's inference threads (``openrtc.vad_0``, ...)."""


def _wants_shared_vad(pool: PoolView, agent: str | None = None) -> bool:
    agents = [agent] if agent is not None else sorted(pool.agents)
    return not agents or any("vad" not in pool.configured(name) for name in agents)


@hookimpl
def openrtc_prewarm(proc: JobProcess, pool: PoolView) -> None:
    if not _wants_shared_vad(pool):
        return
    proc.userdata[VAD_KEY] = shared_vad()
    logger.info(
        "loaded the shared VAD (livekit-local-inference), inference on %d thread(s)",
        usable_cores(),
    )


def shared_vad() -> inference.VAD:
    """livekit's local VAD with one inference pool of usable-cores threads for all streams."""
    from livekit.agents import inference

    executor = ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix=VAD_THREAD_PREFIX)
    return inference.VAD(executor=executor)


@hookimpl
def openrtc_session_options(
    agent: str, pool: PoolView, userdata: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    if VAD_KEY not in userdata or not _wants_shared_vad(pool, agent):
        return None
    return {"vad": userdata[VAD_KEY]}
