"""The isolation contract, from outside: a backend built only from names openrtc_core exports,
and a production worker that carries no simulation code path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from livekit.agents import Agent, AgentServer, JobExecutorType
from livekit.protocol import agent as agent_pb

from openrtc_core import (
    AgentPool,
    BackendTraits,
    JobPoolFactory,
    JobView,
    TenantContext,
    WorkerSpec,
    hookimpl,
)
from openrtc_testing import LoopbackDispatchServer, ScriptedLLM
from openrtc_testing.worker import running_worker, simulate_call

ROOT = Path(__file__).resolve().parents[1]
DONE = (agent_pb.JS_SUCCESS, agent_pb.JS_FAILED)


@attrs.define
class InThreads:
    """A third-party backend: livekit's thread executor, from public names only."""

    name: str = "in-threads"
    traits: BackendTraits = attrs.field(
        factory=lambda: BackendTraits(jobs_run_in_worker=True, default_max_sessions=3)
    )
    told: list[WorkerSpec] = attrs.field(factory=list)
    installed: list[AgentServer] = attrs.field(factory=list)

    def server_options(self, worker: WorkerSpec) -> Mapping[str, Any]:
        self.told.append(worker)
        return {"job_executor_type": JobExecutorType.THREAD}

    def job_pool(self, worker: WorkerSpec) -> JobPoolFactory | None:
        return None

    def install(self, server: AgentServer) -> None:
        self.installed.append(server)


BACKEND = InThreads()


class Offers:
    @hookimpl
    def openrtc_register_isolation_backends(self, register: Any) -> None:
        register("in-threads", lambda: BACKEND)


class TenantFromRoom:
    """Resolves the tenant at admission; the session must see that same object."""

    def __init__(self) -> None:
        self.resolved: list[TenantContext] = []
        self.seen: list[TenantContext | None] = []

    @hookimpl
    def openrtc_resolve_tenant(self, job: JobView) -> TenantContext:
        tenant = TenantContext(tenant_id=job.room_name.split("-")[0])
        self.resolved.append(tenant)
        return tenant

    @hookimpl
    def openrtc_session_options(self, tenant: TenantContext | None) -> None:
        self.seen.append(tenant)


class Echo(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Echo.")


TENANTS = TenantFromRoom()


@pytest.mark.asyncio
async def test_a_backend_from_public_names_runs_calls_and_is_told_its_worker() -> None:
    pool = AgentPool(
        isolation="in-threads",
        load_plugins=False,
        plugins=[Offers(), TENANTS],
        llm=ScriptedLLM(default_reply="ok"),
        vad=None,
        turn_handling={"turn_detection": None},
    )
    pool.add("echo", Echo, default=True)
    async with LoopbackDispatchServer() as lk, running_worker(pool, lk):
        d, report = await simulate_call(lk, "acme-1", turns=["hi"])
        assert report["outcome"] == "completed"
        assert report["tenant"] == "acme"
        assert await d.wait_for_status(*DONE) == agent_pb.JS_SUCCESS
    (worker,) = BACKEND.told
    assert worker.session_cap == 3  # the backend's default, as the pool set none
    assert worker.settings.isolation == "in-threads"
    assert len(BACKEND.installed) == 1
    # jobs_run_in_worker: the session got the tenant admission resolved, not a second one.
    assert TENANTS.seen == [TENANTS.resolved[0]]
    assert TENANTS.seen[0] is TENANTS.resolved[0]


def test_a_production_worker_loads_no_simulation_code() -> None:
    """With openrtc-testing installed, building a production server imports and registers
    nothing of the simulation: no start-session hook, no caller, no simulation module."""
    script = """
import json, sys
from openrtc_core import load_pool
pool = load_pool("examples/pool.py")
pool.create_server()
hooks = pool.plugins.manager.hook
print(json.dumps({
    "start_session": [i.plugin_name for i in hooks.openrtc_start_session.get_hookimpls()],
    "loaded": sorted(m for m in sys.modules if m.startswith("openrtc_testing")),
}))
"""
    env = {**os.environ, "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s" * 32}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["start_session"] == []
    # The installed plugin, which only adds a command, and nothing else of the test tooling.
    assert seen["loaded"] == ["openrtc_testing", "openrtc_testing.plugin"]
