"""The garbage-collector set-up of coroutine workers, each case in a fresh interpreter."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import pytest

PROBE = """
import gc, json, sys
from openrtc_core.isolation.coroutine.gctuning import tune_gc
if len(sys.argv) > 1:
    gc.set_threshold(*map(int, sys.argv[1].split(",")))
said = tune_gc()
print(json.dumps({"said": said, "threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def probe(*args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    done = run(*args, env=env)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=True,
    )


def test_worker_heap_is_frozen_and_thresholds_raised() -> None:
    result = probe()
    assert result["threshold"] == [10_000, 10, 10]
    assert isinstance(result["frozen"], int) and result["frozen"] > 1000
    assert "objects frozen" in str(result["said"])


def test_a_threshold_set_by_the_user_is_kept() -> None:
    result = probe("2000,5,5")
    assert result["threshold"] == [2000, 5, 5]
    assert isinstance(result["frozen"], int) and result["frozen"] > 1000


@pytest.mark.parametrize("value", ["python", "Python "])
def test_openrtc_gc_python_leaves_the_collector_alone(value: str) -> None:
    result = probe(env={"OPENRTC_GC": value})
    assert result["threshold"] == [700, 10, 10]
    assert result["frozen"] == 0
    assert "OPENRTC_GC=python" in str(result["said"])


def test_an_unknown_choice_is_named_and_the_collector_tuned() -> None:
    done = run(env={"OPENRTC_GC": "off"})
    assert "OPENRTC_GC='off' is not a choice" in done.stderr
    assert "'tuned'" in done.stderr and "'python'" in done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["threshold"] == [10_000, 10, 10]


def test_full_collections_are_paced_by_ended_calls() -> None:
    from openrtc_core.isolation.coroutine import gctuning

    collector = gctuning.CallGarbage()
    try:
        collector.last_full -= gctuning.QUIET_COLLECT_EVERY_S  # long enough ago
        for _ in range(gctuning.QUIET_COLLECT_AFTER_CALLS - 1):
            collector.call_ended()
        assert not collector.due(calls_live=0)  # too few calls ended yet
        collector.call_ended()
        assert collector.due(calls_live=0)  # quiet: collect now
        assert not collector.due(calls_live=3)  # busy: waits for more garbage
        for _ in range(gctuning.BUSY_COLLECT_AFTER_CALLS - gctuning.QUIET_COLLECT_AFTER_CALLS):
            collector.call_ended()
        assert collector.due(calls_live=3)
        # A fuller worker waits for a quarter as many ended calls as it has live ones.
        assert not collector.due(calls_live=400)
        collector.ended_since = 100
        assert collector.due(calls_live=400)
        collector.collect(calls_live=400)
        assert collector.collections == 1
        # The full collection reset the count and the clock (seen through gc.callbacks).
        assert collector.ended_since == 0
        assert not collector.due(calls_live=0)
    finally:
        collector.close()
    assert collector._on_gc not in gc.callbacks
