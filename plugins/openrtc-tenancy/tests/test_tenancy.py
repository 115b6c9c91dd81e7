"""Tenancy through the real worker: keys per tenant, exact caps, the breaker, signed tenants."""

from __future__ import annotations

import asyncio
import json
import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest
from tenancy_fixtures import ACME_KEY, GLOBEX_KEY, KeyedLLM, fingerprint, make_pool

from openrtc_core import SessionInfo, SessionOutcome, hookimpl
from openrtc_tenancy import plugin as tenancy_plugin
from openrtc_tenancy import sign
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.worker import simulated_call_metadata


def tenants_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tenants.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture(autouse=True)
def fresh_tenancy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no tenancy configured in this process."""
    monkeypatch.setattr(tenancy_plugin, "_TENANCIES", {})
    monkeypatch.setattr(tenancy_plugin, "_PATH", [])
    monkeypatch.delenv("OPENRTC_TENANTS", raising=False)


def metadata(tenant: str | None, agent: str = "support", **extra: Any) -> str:
    meta = json.loads(simulated_call_metadata(agent, turns=["hello"], hold_s=extra.pop("hold", 0)))
    if tenant is not None:
        meta["tenant"] = tenant
    meta.update(extra)
    return json.dumps(meta)


async def call(dispatch: LoopbackDispatchServer, room: str, tenant: str | None, **kw: Any) -> Any:
    d = await dispatch.dispatch(room, job_metadata=metadata(tenant, **kw))
    report = await dispatch.wait_for_report(d.job_id, timeout=60) if d.accepted else None
    return d, report


async def test_each_tenant_gets_its_own_providers_and_key_and_no_secret_is_logged(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ACME_KEY", ACME_KEY)
    monkeypatch.setenv("GLOBEX_KEY", GLOBEX_KEY)
    path = tenants_file(
        tmp_path,
        """
        [tenants.acme.providers.llm]
        class = "tenancy_fixtures:KeyedLLM"
        model = "acme-model"
        api_key_env = "ACME_KEY"
        [tenants.globex.providers.llm]
        class = "tenancy_fixtures:KeyedLLM"
        model = "globex-model"
        api_key_env = "GLOBEX_KEY"
        """,
    )
    KeyedLLM.built.clear()
    async with openrtc_worker(make_pool(path)):
        reports = [
            (await call(openrtc_dispatch, f"{tenant}-{i}", tenant))[1]
            for i in range(2)
            for tenant in ("acme", "globex")
        ]
    replies = [r["turns"][0]["events"][-1]["text"] for r in reports]
    for report, reply in zip(reports, replies, strict=True):
        key = ACME_KEY if report["tenant"] == "acme" else GLOBEX_KEY
        assert reply.startswith(f"key {fingerprint(key)} object "), reply
        assert report["providers"]["llm"] == f"{report['tenant']}-model"
    # A provider object per session: no two sessions, let alone two tenants, share one.
    objects = [reply.rsplit(" ", 1)[1] for reply in replies]
    assert len(set(objects)) == len(objects) == 4
    assert len(KeyedLLM.built) >= 4
    for secret in (ACME_KEY, GLOBEX_KEY):
        assert secret not in caplog.text
        assert all(secret not in json.dumps(r) for r in reports)


async def test_the_per_worker_cap_is_exact_under_a_burst_of_requests(
    tmp_path: Path, openrtc_dispatch: LoopbackDispatchServer, openrtc_worker: Any
) -> None:
    path = tenants_file(
        tmp_path,
        """
        [tenants.acme]
        max_sessions = 10
        [tenants.globex]
        """,
    )
    live: dict[str, int] = {"now": 0, "most": 0}

    class Gauge:
        @hookimpl
        def openrtc_session_started(self, info: SessionInfo) -> None:
            if info.tenant and info.tenant.tenant_id == "acme":
                live["now"] += 1
                live["most"] = max(live["most"], live["now"])

        @hookimpl
        def openrtc_session_ended(self, info: SessionInfo, outcome: SessionOutcome) -> None:
            if info.tenant and info.tenant.tenant_id == "acme":
                live["now"] -= 1

    pool = make_pool(path, max_sessions=100)
    pool.plugins.register(Gauge())
    async with openrtc_worker(pool):
        burst = await asyncio.gather(
            *(
                openrtc_dispatch.dispatch(f"acme-{i}", job_metadata=metadata("acme", hold=2.0))
                for i in range(50)
            )
        )
        other = await openrtc_dispatch.dispatch("globex-1", job_metadata=metadata("globex"))
        accepted = [d for d in burst if d.accepted]
        for d in accepted:
            await openrtc_dispatch.wait_for_report(d.job_id, timeout=60)
        await asyncio.sleep(0.5)  # the jobs close and give their slots back
        again = await openrtc_dispatch.dispatch("acme-again", job_metadata=metadata("acme"))
    assert len(accepted) == 10
    assert live["most"] == 10
    refused = [d for d in burst if not d.accepted]
    # Another worker may have room: the per-worker cap never ends the dispatch.
    assert all(d.rejected_by and not d.terminate for d in refused)
    assert other.accepted and again.accepted


async def test_a_failing_tenant_opens_its_breaker_and_no_one_else_notices(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
) -> None:
    monkeypatch.setenv("ACME_KEY", ACME_KEY)
    path = tenants_file(
        tmp_path,
        """
        [tenants.acme.providers.llm]
        class = "tenancy_fixtures:KeyedLLM"
        model = "acme-model"
        api_key_env = "ACME_KEY"
        fail = true
        [tenants.acme.breaker]
        window_s = 60
        min_calls = 3
        failure_ratio = 0.5
        cooldown_s = 1
        [tenants.globex]
        """,
    )
    transitions: list[str] = []
    async with openrtc_worker(make_pool(path)):
        tenancy = tenancy_plugin.current()
        assert tenancy is not None
        tenancy.listeners.append(lambda t: transitions.append(t.after.value))
        failed = [await call(openrtc_dispatch, f"acme-{i}", "acme") for i in range(3)]
        await asyncio.sleep(0.5)  # their jobs close: the breaker counts them
        refused, _ = await call(openrtc_dispatch, "acme-refused", "acme")
        others = [await call(openrtc_dispatch, f"globex-{i}", "globex") for i in range(3)]
        await asyncio.sleep(1.2)  # the cooldown ends
        # The tenant's provider works again: the half-open probe completes, it closes.
        monkeypatch.setattr(KeyedLLM, "__init__", _working_init)
        probe, probe_report = await call(openrtc_dispatch, "acme-probe", "acme")
        await asyncio.sleep(0.5)
        after, _ = await call(openrtc_dispatch, "acme-after", "acme")
    # Each call went on, but its provider failed every reply: failures for the breaker.
    assert all(r is not None and r["turns"][0]["reply"] == "" for _, r in failed), failed
    assert not refused.accepted and refused.rejected_by and not refused.terminate
    assert all(report and report["outcome"] == "completed" for _, report in others)
    assert probe.accepted and probe_report["outcome"] == "completed"
    assert after.accepted
    assert transitions == ["open", "half_open", "closed"]


_original_init = KeyedLLM.__init__


def _working_init(self: KeyedLLM, **kwargs: Any) -> None:
    kwargs["fail"] = False
    _original_init(self, **kwargs)


async def test_signed_tenancy_refuses_missing_wrong_and_replayed_signatures(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "signing-secret-0123456789"
    monkeypatch.setenv("TENANT_SECRET", secret)
    path = tenants_file(
        tmp_path,
        """
        signing_secret_env = "TENANT_SECRET"
        [tenants.acme]
        [tenants.globex]
        """,
    )
    key = secret.encode()
    async with openrtc_worker(make_pool(path)):
        good, report = await call(
            openrtc_dispatch, "room-a", "acme", tenant_sig=sign("acme", "room-a", key)
        )
        missing, _ = await call(openrtc_dispatch, "room-b", "acme")
        wrong, _ = await call(openrtc_dispatch, "room-c", "acme", tenant_sig="0" * 64)
        replayed, _ = await call(
            openrtc_dispatch, "room-d", "acme", tenant_sig=sign("acme", "room-a", key)
        )
        other_tenant, _ = await call(
            openrtc_dispatch, "room-e", "globex", tenant_sig=sign("acme", "room-e", key)
        )
    assert good.accepted and report["tenant"] == "acme"
    for refused in (missing, wrong, replayed, other_tenant):
        assert not refused.accepted and refused.terminate
    assert "signature is missing" in caplog.text and "signature is wrong" in caplog.text
    assert secret not in caplog.text


@pytest.mark.parametrize(
    ("tenant", "says"),
    [
        ("", "empty"),
        ("a" * 64, "too long"),
        ("acmé", "not allowed"),
        ("../acme", "not allowed"),
        ("Acme", "not allowed"),
        ("nobody", "unknown tenant"),
    ],
)
async def test_bad_tenant_ids_are_refused_with_one_clear_line(
    tenant: str,
    says: str,
    tmp_path: Path,
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tenants_file(tmp_path, "[tenants.acme]\n")
    async with openrtc_worker(make_pool(path)):
        refused, _ = await call(openrtc_dispatch, "room-x", tenant)
    assert not refused.accepted and refused.terminate
    lines = [r.getMessage() for r in caplog.records if "rejecting job" in r.getMessage()]
    assert len(lines) == 1 and says in lines[0], lines


async def test_process_isolation_builds_keyed_providers_in_the_job_process(
    openrtc_dispatch: LoopbackDispatchServer, openrtc_worker: Any
) -> None:
    from tenancy_fixtures import PROCESS_POOL

    async with openrtc_worker(PROCESS_POOL):
        first = await openrtc_dispatch.dispatch("acme-1", job_metadata=metadata("acme", hold=3))
        # The worker counts acme's calls while they run in their job processes.
        second = await openrtc_dispatch.dispatch("acme-2", job_metadata=metadata("acme"))
        _, globex = await call(openrtc_dispatch, "globex-1", "globex")
        acme = await openrtc_dispatch.wait_for_report(first.job_id, timeout=90)
    assert first.accepted and not second.accepted and not second.terminate
    assert acme["pid"] != globex["pid"]
    assert acme["turns"][0]["events"][-1]["text"].startswith(f"key {fingerprint(ACME_KEY)}")
    assert globex["turns"][0]["events"][-1]["text"].startswith(f"key {fingerprint(GLOBEX_KEY)}")


async def test_a_bad_tenants_file_stops_the_worker_at_start_naming_file_tenant_and_key(
    tmp_path: Path, openrtc_worker: Any
) -> None:
    from openrtc_core import OpenRTCError

    path = tenants_file(tmp_path, "[tenants.acme]\nmax_sessions = 'three'\n")
    with pytest.raises(OpenRTCError, match=r"tenants\.toml: tenants\.acme\.max_sessions"):
        async with openrtc_worker(make_pool(path)):
            pass


async def test_an_edit_of_the_tenants_file_applies_without_a_restart_and_a_bad_one_is_kept_out(
    tmp_path: Path,
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tenants_file(tmp_path, "[tenants.acme]\nagents = ['sales']\n")
    async with openrtc_worker(make_pool(path)):
        before, _ = await call(openrtc_dispatch, "acme-1", "acme")
        await asyncio.to_thread(Path(path).write_text, "[tenants.acme]\nagents = ['support']\n")
        await asyncio.sleep(1.1)  # the file is looked at again at most once a second
        after, _ = await call(openrtc_dispatch, "acme-2", "acme")
        await asyncio.to_thread(Path(path).write_text, "[tenants.acme]\nagents = 'support'\n")
        await asyncio.sleep(1.1)
        kept, _ = await call(openrtc_dispatch, "acme-3", "acme")
    assert not before.accepted and after.accepted and kept.accepted
    assert "keeping the previous configuration" in caplog.text
