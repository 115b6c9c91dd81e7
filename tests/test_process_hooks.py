"""The process-lifecycle hooks: what a plugin runs beside the jobs, in each process hosting the
pool (the worker; with process isolation, each job process too), given the pool itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hosting_pools import COROUTINE_POOL, PROCESS_POOL, noted

from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.worker import running_worker, simulate_call


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "hosting.jsonl"


async def test_the_worker_hosts_the_pool_and_each_job_waits_for_before_job(log: Path) -> None:
    async with (
        LoopbackDispatchServer() as server,
        running_worker(COROUTINE_POOL, server, hosting_log=str(log)),
    ):
        dispatch, report = await simulate_call(server, "room-1", turns=["hello"])
        assert report["outcome"] == "completed", report  # the broken before_job was skipped
    notes = noted(log)
    assert [n["hook"] for n in notes] == ["process_started", "before_job", "worker_closing"]
    assert all(n["pid"] == os.getpid() and n["same_pool"] for n in notes), notes
    assert notes[0]["role"] == notes[1]["role"] == "worker"
    assert notes[1]["job"] == dispatch.job_id


async def test_a_job_process_hosts_the_pool_with_the_workers_run_options(log: Path) -> None:
    async with (
        LoopbackDispatchServer() as server,
        running_worker(PROCESS_POOL, server, hosting_log=str(log)),
    ):
        dispatch, report = await simulate_call(server, "room-2", turns=["hello"])
        assert report["outcome"] == "completed", report
        assert report["pid"] != os.getpid()
    # create_server(hosting_log=...) exported nothing: the job process wrote to the file
    # because the worker's run options crossed into it with the entrypoint.
    notes = noted(log)
    in_job = [n for n in notes if n["pid"] == report["pid"]]
    assert [n["hook"] for n in in_job] == ["process_started", "before_job"], notes
    assert all(n["role"] == "job" and n["same_pool"] for n in in_job), in_job
    assert in_job[1]["job"] == dispatch.job_id
    in_worker = [n["hook"] for n in notes if n["pid"] == os.getpid()]
    assert in_worker == ["process_started", "worker_closing"], notes
