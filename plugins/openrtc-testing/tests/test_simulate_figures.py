"""The per-tenant figures of ``openrtc simulate``, from made-up calls: no worker runs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from openrtc_testing.simulate import (
    REFUSAL_LOGGER,
    CallResult,
    SimulationResult,
    call_tenants,
    most_at_once,
    reason_key,
    short_reason,
    tenants_in_file,
    watching_refusals,
)


def result(calls: list[CallResult], tenants: list[str]) -> SimulationResult:
    return SimulationResult(
        calls=calls,
        wall_s=1.0,
        baseline_pss_mb=0.0,
        peak_pss_mb=0.0,
        loop_lag_p99_s=0.0,
        isolation="coroutine",
        swapped={},
        tenants=tenants,
    )


def admitted(tenant: str, start: float, duration: float, ok: bool = True) -> CallResult:
    return CallResult(
        "support",
        f"room-{tenant}-{start}",
        ok=ok,
        tenant=tenant,
        accepted=True,
        session_started_at=start,
        duration_s=duration,
    )


def refused(tenant: str, reason: str) -> CallResult:
    return CallResult("support", "room", ok=False, tenant=tenant, refusal=reason)


@pytest.mark.parametrize(
    ("spans", "most"),
    [
        ([], 0),
        ([(0.0, 1.0)], 1),
        ([(0.0, 1.0), (1.0, 2.0)], 1),  # one ends as the next starts
        ([(0.0, 2.0), (1.0, 3.0), (1.5, 1.6), (2.5, 4.0)], 3),
        ([(0.0, 10.0), (1.0, 2.0), (3.0, 4.0), (5.0, 6.0)], 2),
    ],
)
def test_most_at_once(spans: list[tuple[float, float]], most: int) -> None:
    assert most_at_once(spans) == most


def test_per_tenant_counts_every_call_once() -> None:
    calls = [
        admitted("acme", 0.0, 2.0),
        admitted("acme", 1.0, 2.0, ok=False),
        admitted("acme", 2.5, 1.0),
        refused("acme", "tenant 'acme' is at max_sessions=2 on this worker"),
        refused("bad", "unknown tenant 'bad'"),
        refused("bad", "unknown tenant 'bad'"),
        CallResult("sales", "room", ok=False, tenant="acme"),  # lost before any answer
    ]
    figures = result(calls, ["acme", "bad", "idle"]).per_tenant()
    assert list(figures) == ["acme", "bad", "idle"]
    assert figures["acme"] == {
        "calls": 5,
        "admitted": 3,
        "rejected": {"not accepted": 1, "tenant 'acme' is at max_sessions=2 on this worker": 1},
        "failed": 1,
        "max_live": 2,
    }
    assert figures["bad"] == {
        "calls": 2,
        "admitted": 0,
        "rejected": {"unknown tenant 'bad'": 2},
        "failed": 0,
        "max_live": 0,
    }
    assert figures["idle"] == {
        "calls": 0,
        "admitted": 0,
        "rejected": {},
        "failed": 0,
        "max_live": 0,
    }
    for f in figures.values():
        assert f["calls"] == f["admitted"] + sum(f["rejected"].values())


def test_figures_have_tenants_only_when_calls_named_them() -> None:
    plain = result([CallResult("support", "room", ok=True, accepted=True)], [])
    assert "tenants" not in plain.as_dict()
    assert "tenant" not in plain.as_dict()["calls"][0]
    named = result([admitted("acme", 0.0, 1.0)], ["acme"]).as_dict()
    assert named["tenants"]["acme"]["admitted"] == 1
    assert named["calls"][0]["tenant"] == "acme"


@pytest.mark.parametrize(
    ("reason", "key", "short"),
    [
        (
            "tenant 'acme' is at max_sessions=2 on this worker (3 calls live or being accepted)",
            "tenant 'acme' is at max_sessions=2 on this worker",
            "max_sessions=2",
        ),
        (
            "the worker is at max_sessions=4: 3 calls live and 1 being accepted "
            "(jobs only shutting down are not counted)",
            "the worker is at max_sessions=4: N calls live and N being accepted",
            "worker max_sessions=4",
        ),
        (
            "job metadata 'tenant': tenant id '../bad' has characters that are not allowed: "
            "'.', '/' (use a-z, 0-9, '_' and '-', starting with a letter or digit)",
            "job metadata 'tenant': tenant id '../bad' has characters that are not allowed: "
            "'.', '/'",
            "not allowed",
        ),
        (
            "tenant 'a2': its breaker is open for 12 s more",
            "tenant 'a2': its breaker is open for N s more",
            "breaker",
        ),
        ("unknown tenant '42'", "unknown tenant '42'", "unknown tenant"),
        (
            "tenant 'acme' is at fleet_max_sessions=5",
            "tenant 'acme' is at fleet_max_sessions=5",
            "fleet_max_sessions=5",
        ),
        (
            "worker AW_0123abcd rejected the job",
            "the worker rejected the job",
            "the worker rejected the job",
        ),
        (
            "a reason no one has given before, at length",
            "a reason no one has given before, at length",
            "a reason no one has given…",
        ),
    ],
)
def test_reasons_group_and_shorten(reason: str, key: str, short: str) -> None:
    assert reason_key(reason) == key
    assert reason_key(key) == key
    assert short_reason(key) == short


def test_the_tenants_of_a_file_in_order_then_its_default(tmp_path: Path) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text(
        'default_tenant = "public"\n[tenants.globex]\nmax_sessions = 1\n[tenants.acme]\n'
    )
    assert tenants_in_file(path) == ["globex", "acme", "public"]
    path.write_text('default_tenant = "acme"\n[tenants.acme]\n')
    assert tenants_in_file(path) == ["acme"]
    # --tenant names win; the file is still read, so a bad one is still said.
    assert call_tenants(path, ["x", "y"]) == ["x", "y"]
    assert call_tenants(None, ["x"]) == ["x"]
    assert call_tenants(None, []) == []
    with pytest.raises(ValueError, match="no such tenants file"):
        call_tenants(tmp_path / "missing.toml", ["x"])


def test_refusals_are_read_without_changing_what_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger(REFUSAL_LOGGER)
    before = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with caplog.at_level(logging.DEBUG, logger="some.other"), watching_refusals() as seen:
            assert logger.isEnabledFor(logging.INFO)
            for level, job in ((logging.INFO, "AJ_1"), (logging.WARNING, "AJ_2")):
                logger.log(
                    level,
                    "rejecting job %s in room %s: %s%s",
                    job,
                    "room",
                    "refused by tenancy: ",
                    f"reason {job}",
                    extra={"job_id": job, "room": "room", "terminate": False},
                )
        assert seen.reasons == {"AJ_1": "reason AJ_1", "AJ_2": "reason AJ_2"}
        # The INFO line was read but not let through: the logger was at WARNING.
        shown = [r.getMessage() for r in caplog.records if r.name == REFUSAL_LOGGER]
        assert shown == ["rejecting job AJ_2 in room room: refused by tenancy: reason AJ_2"]
        assert logger.level == logging.WARNING
        assert seen not in logger.filters
    finally:
        logger.setLevel(before)
