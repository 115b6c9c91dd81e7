"""A voice-mode simulated call: the caller speaks each line as real speech into the session
and listens for the agent's audio.

The session runs the pool's VAD and turn detector on the caller's audio; the scripted STT
answers with the line when the VAD-segmented speech ends, the scripted TTS makes audio of
the reply's length, and the caller's earpiece plays it in real time. What the caller does
and measures per turn is :class:`~openrtc_testing.voice_caller.VoiceCaller`'s (shared with
the benchmarks' plain livekit workers); this class runs it as a simulated call: the script,
the report, the job's end.
"""

from __future__ import annotations

from typing import Any

from .caller import SimulatedCall
from .voice_caller import VoiceCaller


class VoiceCall(SimulatedCall):
    """One voice-mode caller (see the module's docstring)."""

    def __init__(self, *args: Any, caller: VoiceCaller, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.caller = caller

    async def _turn(self, index: int, text: str) -> dict[str, Any]:
        turn = await self.caller.turn(index, text)
        # The same dict, not a copy: a later barge-in marks it interrupted.
        turn.update(events=[], version=self.version())
        return turn

    async def _finish(self, outcome: str, error: str = "") -> None:
        self.report["voice"] = self.caller.figures()
        self.caller.close()
        await super()._finish(outcome, error)
