"""Loads the shared VAD once per worker process, unless the pool brings its own."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..hookspecs import hookimpl
from ..prewarm import VAD_KEY

if TYPE_CHECKING:
    from livekit.agents import JobProcess

    from ..pool import AgentPool

logger = logging.getLogger("openrtc.prewarm")


@hookimpl
def openrtc_prewarm(proc: JobProcess, pool: AgentPool) -> None:
    if not pool.needs_shared_vad():
        return
    from livekit.agents import inference

    proc.userdata[VAD_KEY] = inference.VAD()
    logger.info("loaded the shared VAD (livekit-local-inference)")
