"""Fake density-benchmark results for the tests of its command line and reports: runs as
``run.run_once`` records them and results files as ``--json`` holds them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from benchmarks.run import RunPlan
from benchmarks.variants import VARIANTS


def fake_run(
    variant: str,
    calls: int,
    repeat: int = 1,
    *,
    added: float = 0.15,
    resolution: float | None = 0.1,
    **extra: Any,
) -> dict[str, Any]:
    """One run's result as run.run_once records it; `resolution` is the tree's, in MiB."""
    run: dict[str, Any] = {
        "variant": variant,
        "label": VARIANTS[variant].label,
        "name": VARIANTS[variant].name,
        "config": VARIANTS[variant].describe(calls),
        "calls": calls,
        "repeat": repeat,
        "hold_s": 2.0,
        "pause_s": [4.0, 10.0],
        "status": "ok",
        "note": "",
        "completed": calls,
        "failures": 0,
        "errors": {},
        "redispatches": 0,
        "wall_s": 20.0,
        "turns": 3 * calls,
        "expected_turns": 3 * calls,
        "cpu_s": 0.09 * calls,
        "cpu_per_turn_s": 0.03,
        "start_p50_s": 0.010,
        "start_p95_s": 0.012,
        "start_p99_s": 0.013,
        "first_reply_p50_s": 0.46,
        "first_reply_p95_s": 0.47,
        "first_reply_p99_s": 0.47,
        "turn_p50_s": 0.45,
        "turn_p95_s": 0.46,
        "turn_p99_s": 0.47,
        "start_max_s": 0.013,
        "idle_pss_mb": 357.0,
        "max_live_sessions": calls,
        "live_pss_mb": 357.0 + added * calls,
        "added_pss_per_session_mb": added,
        "pss_samples": [[1.0, 357.0, 1]],
        "loop_lag": {"samples": 10, "p50_s": 0.001, "p99_s": 0.003, "max_s": 0.004},
        "loop_lag_all_live": {
            "live_sessions": calls,
            "samples": 10,
            "p50_s": 0.001,
            "p99_s": 0.003,
            "max_s": 0.004,
        },
        "process_init": {"count": 0, "p50_s": None, "max_s": None},
        "worker_exit_code": 0,
    }
    if resolution is not None:
        run["idle_pss_samples_mb"] = [357.0, 357.0 + resolution / 2, 357.0, 357.0, 357.0]
        run["pss_resolution_mb"] = resolution
        run["added_pss_resolution_mb"] = resolution / calls
    run.update(extra)
    return run


def results(runs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A results file (--json) holding `runs`."""
    data: dict[str, Any] = {
        "command": "python -m benchmarks.density --quick",
        "started_at": 1_790_000_000.0,
        "duration_s": 60.0,
        "machine": {
            "cpus": 2,
            "cpu_model": "test CPU",
            "memory_gib": 8.0,
            "kernel": "6.0",
            "python": "3.11.7",
            "livekit-agents": "1.8.9",
            "livekit": "1.1.21",
            "openrtc-core": "0.1.0",
            "openrtc-testing": "0.1.0",
            "revision": "abc1234",
        },
        "settings": {
            "sizes": sorted({r["calls"] for r in runs}),
            "repeats": 1,
            "large_repeats": 1,
            "large_n": 200,
            "variants": list(dict.fromkeys(r["variant"] for r in runs)),
            "hold_s": 2.0,
            "pace": "human",
            "pause_s": [4.0, 10.0],
            "time_bound_s": 240.0,
            "memory_floor_mb": 2048.0,
            "quick": True,
        },
        "workload": {
            "caller_turns": ["a", "b", "c"],
            "reply": "word " * 15,
            "reply_words": 15,
            "first_token_delay_s": 0.15,
            "token_delay_s": 0.02,
        },
        "variants": {r["variant"]: r["label"] for r in runs},
        "runs": runs,
    }
    data.update(extra)
    return data


def all_variants(calls: int = 10) -> list[dict[str, Any]]:
    return [
        fake_run("A", calls, added=23.9),
        fake_run("B", calls, added=0.26),
        fake_run("C", calls, added=0.15),
        fake_run("D", calls, added=25.3),
    ]


@attrs.define
class Faked:
    started: list[RunPlan] = attrs.field(factory=list)
    """The plans of the runs the sweep started."""
    pages: list[Path] = attrs.field(factory=list)
    """Where it wrote a Markdown page."""
