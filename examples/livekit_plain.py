"""The support agent as a plain livekit-agents worker, for comparison with pool.py.

One worker per agent, the AgentSession wiring rebuilt in every entrypoint.
"""

from __future__ import annotations

from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    JobContext,
    TurnHandlingOptions,
    cli,
    inference,
)

server = AgentServer()


class SupportAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Help callers with support questions. Be brief.")


@server.rtc_session(agent_name="support")
async def entrypoint(ctx: JobContext) -> None:
    session: AgentSession[None] = AgentSession(
        stt="deepgram/nova-3",
        llm="openai/chat-latest",
        tts="cartesia/sonic-3",
        vad=inference.VAD(),
        turn_handling=TurnHandlingOptions(turn_detection=inference.TurnDetector()),
    )
    await session.start(SupportAgent(), room=ctx.room)
    await session.generate_reply(instructions="Greet the caller.")


if __name__ == "__main__":
    cli.run_app(server)
