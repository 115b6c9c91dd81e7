"""Hooks that decide whose call it is or which keys it uses fail closed, through the real
worker: a broken plugin fails the call it was deciding for, never lets it run without it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest
from e2e_pools import make_coroutine_pool

from openrtc_core import (
    HookFailedError,
    JobView,
    OnFailure,
    OpenRTCError,
    PoolView,
    TenantContext,
    contract_of,
    hookimpl,
    hookspecs,
)
from openrtc_testing import LoopbackDispatchServer, ScriptedLLM
from openrtc_testing.worker import simulate_call, simulated_call_metadata

TENANT_LLM = ScriptedLLM(name="tenant-llm", default_reply="on the tenant's keys")


class BrokenResolver:
    @hookimpl
    def openrtc_resolve_tenant(self, job: JobView) -> TenantContext | None:
        raise RuntimeError("tenant directory unreachable")


class BrokenOptions:
    """Resolves every job to tenant 'acme', whose keyed provider cannot be built."""

    @hookimpl
    def openrtc_resolve_tenant(self, job: JobView) -> TenantContext | None:
        return TenantContext(tenant_id="acme")

    @hookimpl
    def openrtc_session_options(self, tenant: TenantContext | None) -> Mapping[str, Any] | None:
        raise KeyError("ACME_KEY")


class WrongOptions:
    @hookimpl
    def openrtc_session_options(self) -> object:
        return ["llm", TENANT_LLM]


class TenantOptions:
    @hookimpl
    def openrtc_session_options(self, tenant: TenantContext | None) -> Mapping[str, Any] | None:
        return {"llm": TENANT_LLM}


async def test_a_failing_tenant_resolver_refuses_the_job_naming_the_plugin(
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = make_coroutine_pool(max_sessions=10)
    pool.plugins.register(BrokenResolver(), name="directory")
    async with openrtc_worker(pool):
        refused = await openrtc_dispatch.dispatch(
            "room-1", job_metadata=simulated_call_metadata("support", turns=["hi"])
        )
    assert not refused.accepted
    assert not refused.terminate  # another worker's resolver may work
    rejections = [r.getMessage() for r in caplog.records if "rejecting job" in r.getMessage()]
    assert len(rejections) == 1, rejections
    assert "refused by directory" in rejections[0]
    assert "tenant directory unreachable" in rejections[0]


@pytest.mark.parametrize(
    ("plugin", "says"),
    [
        (BrokenOptions(), "KeyError: 'ACME_KEY'"),
        (WrongOptions(), "returned 'list' from openrtc_session_options"),
    ],
    ids=["raises", "wrong-type"],
)
async def test_failing_session_options_fail_the_call_never_running_on_the_pools_keys(
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    plugin: object,
    says: str,
) -> None:
    pool = make_coroutine_pool(max_sessions=10)
    name = pool.plugins.register(plugin, name="keys")
    async with openrtc_worker(pool):
        _, report = await simulate_call(openrtc_dispatch, "room-1", turns=["hi"])
    assert report["outcome"] == "failed", report
    assert "HookFailedError" in report["error"] and name in report["error"]
    assert says in report["error"]
    # Not one turn ran: the pool's LLM never answered a call meant for the tenant's.
    assert not any(turn.get("events") for turn in report.get("turns", [])), report


async def test_a_working_contribution_still_applies(
    openrtc_dispatch: LoopbackDispatchServer, openrtc_worker: Any
) -> None:
    pool = make_coroutine_pool(max_sessions=10)
    pool.plugins.register(TenantOptions(), name="keys")
    async with openrtc_worker(pool):
        _, report = await simulate_call(openrtc_dispatch, "room-1", turns=["hi"])
    assert report["outcome"] == "completed", report
    assert report["turns"][0]["events"][-1]["text"] == "on the tenant's keys"


class RefusesThePool:
    def __init__(self, error: Exception) -> None:
        self.error = error

    @hookimpl
    def openrtc_check_pool(self, pool: PoolView) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            OpenRTCError("tenants.toml: ACME_KEY is not set"),
            r"^tenants\.toml: ACME_KEY is not set$",
        ),
        (
            AttributeError("'NoneType' object has no attribute 'agents'"),
            r"^plugin checker failed in openrtc_check_pool \(AttributeError: ",
        ),
    ],
    ids=["said-on-purpose", "a-bug"],
)
async def test_a_failing_start_check_stops_the_worker_before_it_registers(
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    expected: str,
) -> None:
    pool = make_coroutine_pool(max_sessions=10)
    pool.plugins.register(RefusesThePool(error), name="checker")
    with (
        caplog.at_level(logging.ERROR, logger="openrtc.plugins"),
        pytest.raises(HookFailedError, match=expected) as caught,
    ):
        async with openrtc_worker(pool):
            pass
    assert caught.value.plugin == "checker"
    assert not openrtc_dispatch.workers
    # An error raised on purpose is reported once, by whoever stops; a bug is logged with
    # its traceback where it failed.
    logged = [r for r in caplog.records if "checker" in r.getMessage()]
    assert bool(logged) is not isinstance(error, OpenRTCError)


def test_every_hook_declares_its_contract_and_the_deciding_ones_fail_closed() -> None:
    specs = [name for name in dir(hookspecs) if name.startswith("openrtc_")]
    assert specs
    contracts = {name: contract_of(name) for name in specs}
    assert all(contract is not None for contract in contracts.values()), contracts
    closed = {name for name, c in contracts.items() if c and c.on_failure is OnFailure.FAIL_CLOSED}
    assert {
        "openrtc_resolve_tenant",
        "openrtc_admit_job",
        "openrtc_claim_job",
        "openrtc_session_options",
        "openrtc_check_pool",
    } <= closed
