"""The soak benchmark's command line and report, without running a soak.

Bad arguments stop the command before any worker starts; the report is rendered from a tiny
results fixture shaped like the file ``python -m benchmarks.soak --json`` writes.
"""

from __future__ import annotations

import asyncio
import gc
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import soak
from benchmarks.soak_report import (
    full_collections,
    internals,
    render_console,
    render_markdown,
    summarize,
)


def fail(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command line, expecting it to stop at once with status 2; its error line."""
    with pytest.raises(SystemExit) as stopped:
        soak.main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    assert "\n" not in err
    return err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--variants", "B,X"], "--variants"),
        (["--variants", "C,C"], "name each variant once"),
        (["--calls", "0"], "--calls"),
        (["--calls", "many"], "--calls"),
        (["--wave", "-3"], "--wave"),
        (["--turns", "0"], "--turns"),
        (["--warmup", "-1"], "--warmup"),
        (["--env", "MALLOC_ARENA_MAX"], "KEY=VALUE"),
        (["--env", "1BAD=2"], "KEY=VALUE"),
        (["--calls", "100", "--wave", "200"], "more than --calls 100"),
        (["--calls", "1000", "--wave", "20", "--concurrency", "50"], "more than a wave"),
        (["--calls", "400", "--wave", "200", "--warmup", "2"], "leave none of the 2 wave"),
    ],
)
def test_bad_arguments_stop_before_anything_runs(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert says in fail(argv, capsys)


def test_output_paths_are_checked_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "soak.md"
    assert "does not exist" in fail(["--out", str(missing)], capsys)
    assert "Markdown" in fail(["--out", str(tmp_path / "soak.txt")], capsys)
    assert "is a directory" in fail(["--json", str(tmp_path)], capsys)
    same = tmp_path / "soak.md"
    assert "same file as --out" in fail(["--out", str(same), "--json", str(same)], capsys)
    assert "cannot read" in fail(["--from-json", str(tmp_path / "absent.json")], capsys)
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    assert "is not JSON" in fail(["--from-json", str(broken)], capsys)


def test_env_pairs_keep_everything_after_the_first_equals_sign() -> None:
    args = soak.build_parser().parse_args(["--env", "A=1", "--env", "OPTS=x=y"])
    assert dict(args.env) == {"A": "1", "OPTS": "x=y"}
    assert args.variants == ("B", "C")
    assert (args.calls, args.wave, args.turns, args.warmup) == (20_000, 200, 3, 2)


def _wave(number: int, pss: float, *, anon: float | None = None) -> dict[str, Any]:
    return {
        "wave": number,
        "calls": number * 100,
        "dispatched": 100,
        "completed": 100,
        "failures": 0,
        "errors": {},
        "calls_per_s": 20.0,
        "pss_mb": pss,
        "pss_anon_mb": pss - 20 if anon is None else anon,
        "worker": {
            "jobs": 0,
            "gc_objects": 1000 * number,
            "gc_collections": [10, 2, 1],
            "mallinfo2": {
                "arena": 50 * 2**20,
                "uordblks": 40 * 2**20,
                "fordblks": 10 * 2**20,
                "hblkhd": 200 * 2**20,
            },
            "pymalloc": {"arenas_current": 60, "arena_bytes": 60 * 2**20},
        },
    }


def results(runs: list[dict[str, Any]], *, warmup: int = 1) -> dict[str, Any]:
    return {
        "command": "python -m benchmarks.soak --calls 400 --wave 100 --warmup 1",
        "machine": {"cpus": 2, "python": "3.11", "livekit-agents": "1.8.9"},
        "settings": {
            "variants": ["B", "C"],
            "calls": 400,
            "wave": 100,
            "concurrency": 50,
            "turns": 3,
            "warmup": warmup,
            "env": {},
            "target_pct": 5.0,
        },
        "complete": True,
        "runs": runs,
    }


def _run(variant: str, name: str, pss: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "variant": variant,
        "name": name,
        "config": "test",
        "env": {},
        "status": "ok",
        "note": "",
        "ready": {"pss_mb": pss[0] - 10, "pss_anon_mb": pss[0] - 30},
        "waves": [_wave(i + 1, p) for i, p in enumerate(pss)],
        **extra,
    }


RELEASED = {
    "collect": {"collected": 123_456, "seconds": 0.8},
    "pss_after_collect_mb": 345.0,
    "anon_after_collect_mb": 320.0,
    "trim": {"trimmed": True},
    "pss_after_trim_mb": 340.0,
    "anon_after_trim_mb": 315.0,
}
FLAT = _run("B", "livekit thread", [300.0, 310.0, 312.0, 311.0], released=RELEASED)
GROWING = _run(
    "C", "OpenRTC coroutine", [300.0, 310.0, 330.0, 350.0], env={"MALLOC_ARENA_MAX": "2"}
)


def test_verdict_judges_waves_after_warm_up() -> None:
    flat = summarize(FLAT, warmup=1)
    assert flat["flat"] is True
    assert flat["first_mb"] == 310.0 and flat["last_mb"] == 311.0 and flat["max_mb"] == 312.0
    assert flat["verdict"].startswith("flat")
    growing = summarize(GROWING, warmup=1)
    assert growing["flat"] is False
    assert growing["growth_mb"] == pytest.approx(40.0)
    assert growing["rise_pct"] == pytest.approx(40 / 310 * 100)
    assert growing["mib_per_1000"] == pytest.approx(200.0)  # 20 MiB per 100 calls
    assert summarize({**FLAT, "waves": FLAT["waves"][:1]}, warmup=1)["flat"] is None
    hung = {**FLAT, "waves": [*FLAT["waves"], {**_wave(5, 400.0), "jobs_left": None}]}
    assert summarize(hung, warmup=1)["max_mb"] == 312.0  # no idle sample: not judged


def test_internals_are_in_mib() -> None:
    inside = internals(_wave(3, 300.0))
    assert inside["malloc_free_mib"] == 10.0
    assert inside["pymalloc_arenas_mib"] == 60.0
    assert inside["gc_objects"] == 3000
    assert internals({"pss_mb": 1.0})["malloc_in_use_mib"] is None


def test_report_renders_from_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    first = tmp_path / "b.json"
    second = tmp_path / "c.json"
    first.write_text(json.dumps(results([FLAT])), encoding="utf-8")
    second.write_text(json.dumps(results([GROWING])), encoding="utf-8")
    out = tmp_path / "soak.md"
    code = soak.main(["--from-json", str(first), "--from-json", str(second), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "B livekit thread" in printed and "C OpenRTC coroutine (MALLOC_ARENA_MAX=2)" in printed
    assert "flat: max +0.6% vs 5% target" in printed
    assert "grows: max +12.9% vs 5% target" in printed
    page = out.read_text(encoding="utf-8")
    assert "![idle PSS after each wave](soak.png)" in page
    assert page.count("python -m benchmarks.soak") >= 2
    assert "| B livekit thread | 4 | 400 | 0 |" in page
    assert out.with_suffix(".png").stat().st_size > 0
    assert "## Given back at the end" in page
    assert "| B livekit thread | 311.0 | 345.0 | 340.0 | 291.0 → 315.0 | 123,456 | 0.80 s |" in page
    assert "+1.6% (grows)" not in page and "(flat)" in page


def test_console_and_markdown_of_a_partial_run() -> None:
    partial = {**GROWING, "status": "crashed", "note": "the worker exited with code -9"}
    data = {**results([partial]), "complete": False}
    assert "crashed, 3 waves judged" in render_console(data)
    page = render_markdown(data, "x.png")
    assert "did not finish" in page
    assert "the worker exited with code -9" in page


def test_from_json_refuses_a_file_with_no_wave(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(results([{**FLAT, "waves": []}])), encoding="utf-8")
    assert "no run in it finished a wave" in fail(["--from-json", str(empty)], capsys)


PYMALLOC_SAMPLE = """\
Small block threshold = 512, in 32 size classes.

class   size   num pools   blocks in use  avail blocks
-----   ----   ---------   -------------  ------------
    0     16           1             255             0

# arenas allocated total           =                1,234
# arenas reclaimed                 =                1,100
# arenas highwater mark            =                  140
# arenas allocated current         =                  134
134 arenas * 1048576 bytes/arena   =          140,509,184

# bytes in allocated blocks        =          117,371,936
# bytes in available blocks        =            2,010,224
12 unused pools * 16384 bytes      =              196,608
# bytes lost to pool headers       =              410,304
# bytes lost to quantization       =            1,234,567
# bytes lost to arena alignment    =                    0
Total                              =          140,509,184
"""


def test_pymalloc_stats_are_parsed() -> None:
    found = soak.parse_pymalloc_stats(PYMALLOC_SAMPLE)
    assert found["arenas_current"] == 134
    assert found["arena_bytes"] == 140_509_184
    assert found["allocated_bytes"] == 117_371_936
    assert found["unused_pool_bytes"] == 196_608
    assert found["total_bytes"] == 140_509_184


def test_worker_stats_are_json_ready() -> None:
    async def collect() -> dict[str, Any]:
        return soak.worker_stats(object())

    stats = asyncio.run(collect())
    assert stats["jobs"] == -1  # no job pool: not a server
    assert stats["gc_objects"] > 0
    json.dumps(stats)
    if stats["mallinfo2"] is not None:  # glibc
        assert stats["mallinfo2"]["uordblks"] > 0


def test_caller_turns_repeat_the_workload_lines() -> None:
    assert len(soak.caller_turns(5)) == 5
    assert soak.caller_turns(4)[3] == soak.caller_turns(1)[0]


def test_gc_clock_sums_pauses_per_generation_and_resets() -> None:
    clock = soak.GcClock()
    clock._on_gc("start", {"generation": 2})
    clock._on_gc("stop", {"generation": 2})
    clock._on_gc("start", {"generation": 0})
    clock._on_gc("stop", {"generation": 0})
    taken = clock.take()
    assert taken["2"]["count"] == 1 and taken["0"]["count"] == 1
    assert taken["2"]["max_s"] >= 0
    assert 0 <= taken["2"]["cpu_max_s"] <= taken["2"]["cpu_total_s"]
    assert clock.take() == {}


def test_garbage_census_counts_cycles_by_type() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    # As the worker does: earlier garbage gone, the collector off while the cycles are made
    # (tests run before this one leave garbage of their own that would crowd the top types).
    gc.collect()
    gc.disable()
    for _ in range(50):
        Node()
    census = soak.garbage_census()
    assert gc.isenabled()
    counted = dict(census["types"])
    assert counted.get(f"{__name__}.{Node.__qualname__}", 0) >= 50
    assert not gc.garbage


def test_full_collections_are_counted_with_mean_longest_and_cpu() -> None:
    def paused(wave: dict[str, Any], count: int, total: float, most: float, **cpu: float) -> None:
        full = {"count": count, "total_s": total, "max_s": most, **cpu}
        wave["worker"]["gc_pauses"] = {"0": {"count": 9, "total_s": 0.1, "max_s": 0.02}, "2": full}

    run = _run("C", "OpenRTC coroutine", [300.0, 301.0])
    paused(run["waves"][0], 2, 0.1, 0.06, cpu_total_s=0.08, cpu_max_s=0.05)
    paused(run["waves"][1], 2, 0.3, 0.2, cpu_total_s=0.1, cpu_max_s=0.06)
    figures = full_collections(run)
    assert figures is not None
    assert figures["count"] == 4 and figures["waves_over_100ms"] == 1
    assert round(figures["mean_ms"]) == 100 and round(figures["max_ms"]) == 200
    assert round(figures["cpu_mean_ms"]) == 45 and round(figures["cpu_max_ms"]) == 60
    data = results([run])
    assert "OpenRTC coroutine | 4 | 100 ms | 200 ms | in 1 wave(s) | 45 ms | 60 ms" in (
        render_markdown(data, "x.png")
    )
    # Files written before the CPU figures existed render with a dash for them.
    paused(run["waves"][0], 2, 0.1, 0.06)
    paused(run["waves"][1], 2, 0.3, 0.2)
    assert "| in 1 wave(s) | – | – |" in render_markdown(results([run]), "x.png")
    assert full_collections(_run("B", "livekit thread", [300.0])) is None
    assert "gc_pauses" not in FLAT["waves"][0]["worker"]


class _Session:
    """Something a live session holds: counted by type, module and where it was made."""

    def __init__(self) -> None:
        async def waiting() -> None:
            pass

        self.coroutine = waiting()

    def close(self) -> None:
        self.coroutine.close()


def test_live_census_counts_what_full_collections_walk_with_calls_live(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(soak, "CENSUS_TOP", 100_000)  # the test process's heap is crowded
    jobs = [0]
    census = soak.LiveCensus(lambda: jobs[0])
    census.start()
    sessions = [_Session() for _ in range(300)]
    try:
        gc.collect()  # no job live: not counted
        jobs[0] = 3
        gc.collect(1)  # not a full collection: not counted
        gc.collect()
        gc.collect()
        gc.collect()  # beyond the detailed ones: counted, not detailed
        taken = census.take()
    finally:
        census.stop()
        for session in sessions:
            session.close()
    assert census._on_gc not in gc.callbacks
    assert [jobs for jobs, _ in taken["points"]] == [3, 3, 3]
    assert all(tracked >= 300 for _, tracked in taken["points"])
    assert len(taken["detailed"]) == soak.LIVE_CENSUS_DETAILED
    detail = taken["detailed"][0]
    assert detail["jobs"] == 3 and detail["references"] >= detail["tracked"] // 2
    name = f"{__name__}.{_Session.__qualname__}"
    assert dict(detail["types"]).get(name, 0) >= 300
    assert dict(detail["modules"]).get(__name__, 0) >= 300
    made_by = dict(detail["made_by"])
    assert any(
        place.startswith("coroutine _Session.__init__.<locals>.waiting") and count >= 300
        for place, count in made_by.items()
    ), made_by
    json.dumps(taken)
    assert census.take()["points"] == []


def test_live_census_is_asked_of_the_worker_through_its_environment() -> None:
    parser = soak.build_parser()
    assert parser.parse_args(["--live-census"]).live_census
    assert not parser.parse_args([]).live_census
