from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from bench_fakes import Faked, fake_run

from benchmarks import density
from benchmarks.run import RunPlan


@pytest.fixture(autouse=True)
def _openrtc_logs_at_info() -> None:
    logging.getLogger("openrtc").setLevel(logging.INFO)


@pytest.fixture
def faked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Faked:
    """The benchmark run and the page writer replaced; default results under tmp_path."""
    record = Faked()

    async def run_once(plan: RunPlan) -> dict[str, Any]:
        record.started.append(plan)
        return fake_run(plan.variant.key, plan.calls, plan.repeat)

    def write_docs(data: dict[str, Any], out: Path) -> None:
        record.pages.append(out)

    monkeypatch.setattr(density, "run_once", run_once)
    monkeypatch.setattr(density, "write_docs", write_docs)
    monkeypatch.setattr(density, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    return record
