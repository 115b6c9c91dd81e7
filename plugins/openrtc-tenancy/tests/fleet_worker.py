"""One real OpenRTC worker process of a test fleet (run by test_fleet.py, not collected).

    python fleet_worker.py --url ws://127.0.0.1:PORT --api-key KEY --api-secret SECRET \
        --tenants /path/to/tenants.toml

Builds a coroutine-isolation pool with one ``support`` agent (scripted LLM) and the tenants
file, then runs its production worker with the Simulation plugin against the loopback
dispatch server at ``--url``, until it is killed or its stdin closes (the test process
ended). The tenancy plugin comes from its entry point, as in any deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
from collections.abc import Sequence

from livekit.agents import Agent

from openrtc_core import AgentPool
from openrtc_testing import ScriptedLLM
from openrtc_testing.simulation import Simulation

MAX_SESSIONS = 100
"""Far above any fleet cap a test sets: only tenancy refuses jobs."""


class Support(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Support.")


def build_pool(tenants: str) -> AgentPool:
    pool = AgentPool(
        llm=ScriptedLLM(default_reply="fleet worker reply"),
        tenants=tenants,
        isolation="coroutine",
        max_sessions=MAX_SESSIONS,
    )
    pool.add("support", Support, default=True)
    return pool


async def serve(args: argparse.Namespace) -> None:
    pool = build_pool(args.tenants)
    server = pool.create_server(
        plugins=[Simulation(args.url)],
        ws_url=args.url,
        api_key=args.api_key,
        api_secret=args.api_secret,
        port=0,
    )
    print(f"fleet worker pid {os.getpid()} starting", flush=True)
    await server.run(devmode=True)


def exit_with_the_test() -> None:
    """Exit when stdin closes: the test process that started this one has ended (even killed)."""
    sys.stdin.buffer.read()
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet_worker.py", description=__doc__)
    parser.add_argument("--url", required=True, help="the loopback dispatch server's ws:// URL")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--api-secret", required=True)
    parser.add_argument("--tenants", required=True, help="the tenants file")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
    )
    threading.Thread(target=exit_with_the_test, name="exit-with-the-test", daemon=True).start()
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
