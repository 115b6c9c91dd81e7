"""The density benchmark's command line and report, without running a benchmark.

Runs are faked (``run_once`` replaced) or given as a small results fixture; the one real
run is tests/test_benchmarks_smoke.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bench_fakes import Faked, all_variants, fake_run, results

from benchmarks import density
from benchmarks.report import below_resolution, render_console, render_markdown
from benchmarks.run import CallRecord, RunPlan, memory_figures, supervised_figures
from benchmarks.sampling import PSS_FLOOR_MB, PssSample

ROOT = Path(__file__).resolve().parents[1]


# -- the Markdown report only on request ------------------------------------------------------


def test_a_sweep_without_out_writes_no_markdown_and_keeps_raw_json_outside_the_repo(
    faked: Faked, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = density.main(["--variants", "C", "--sizes", "1", "--repeats", "1"])

    assert code == 0
    assert len(faked.started) == 1
    assert faked.pages == []
    saved = list((tmp_path / "results").glob("density-*.json"))
    assert len(saved) == 1
    assert json.loads(saved[0].read_text())["complete"] is True
    out, err = capsys.readouterr()
    assert "C OpenRTC coroutine" in out  # the tables went to the terminal
    assert str(saved[0]) in err  # and it says where the raw figures went


def test_default_settings_name_no_page_and_a_results_file_outside_the_repo() -> None:
    settings = density.settings_from(density.build_parser().parse_args([]))
    assert settings.out is None
    assert not settings.json_path.resolve().is_relative_to(ROOT)
    assert not settings.logs_dir.resolve().is_relative_to(ROOT)


def test_help_says_how_to_refresh_the_committed_page() -> None:
    text = " ".join(density.build_parser().format_help().split())
    assert "--out docs/benchmarks.md refreshes the committed page" in text


# -- every argument checked before anything runs -----------------------------------------------


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--out", "{tmp}/missing/bm.md"], "--out"),
        (["--out", "{tmp}"], "--out"),
        (["--out", "{file}/bm.md"], "--out"),
        (["--json", "{tmp}/missing/density.json"], "--json"),
        (["--json", "{file}/density.json"], "--json"),
        (["--json", "{tmp}/same.md", "--out", "{tmp}/same.md"], "--json"),
        (["--logs", "{file}/logs"], "--logs"),
        (["--sizes", "1,x"], "--sizes"),
        (["--sizes", "0,10"], "--sizes"),
        (["--variants", "A,Z"], "--variants"),
        (["--repeats", "0"], "--repeats"),
        (["--large-repeats", "x"], "--large-repeats"),
        (["--hold", "-1"], "--hold"),
        (["--time-bound", "0"], "--time-bound"),
        (["--pace", "slow"], "--pace"),
        (["--from-json", "{tmp}/missing.json"], "--from-json"),
        (["--from-json", "{file}"], "--from-json"),
    ],
)
def test_a_bad_argument_is_one_error_line_before_any_run(
    argv: list[str],
    flag: str,
    faked: Faked,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    argv = [arg.format(tmp=tmp_path, file=a_file) for arg in argv]

    with pytest.raises(SystemExit) as exited:
        density.main(argv)

    assert exited.value.code == 2
    assert faked.started == []
    assert faked.pages == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: argument {flag}"), err


def test_from_json_checks_out_before_rendering(
    faked: Faked, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "density.json"
    saved.write_text(json.dumps(results(all_variants())))
    with pytest.raises(SystemExit) as exited:
        density.main(["--from-json", str(saved), "--out", str(tmp_path / "no" / "bm.md")])
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("error: argument --out:")
    assert faked.pages == []


def test_an_unwritable_out_directory_is_refused(
    faked: Faked, capsys: pytest.CaptureFixture[str]
) -> None:
    # /proc takes no new files, for root too (CI runs as root; a chmod would not stop it).
    with pytest.raises(SystemExit):
        density.main(["--out", "/proc/bm.md"])
    assert capsys.readouterr().err.startswith("error: argument --out:")
    assert faked.started == []


# -- raw results written as each run ends -------------------------------------------------------


def test_results_are_written_after_every_run_and_an_interrupted_sweep_renders(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "density.json"
    seen: list[int] = []

    async def run_once(plan: RunPlan) -> dict[str, Any]:
        seen.append(len(json.loads(saved.read_text())["runs"]))
        if len(seen) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the third run
        return fake_run(plan.variant.key, plan.calls, plan.repeat)

    monkeypatch.setattr(density, "run_once", run_once)
    argv = ["--variants", "B,C", "--sizes", "1,10", "--repeats", "1"]
    code = density.main([*argv, "--json", str(saved), "--logs", str(tmp_path / "logs")])

    assert code == 130
    assert seen == [0, 1, 2]  # the file held every finished run when the next one began
    data = json.loads(saved.read_text())
    assert data["complete"] is False
    assert [(r["variant"], r["calls"]) for r in data["runs"]] == [("B", 1), ("C", 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["density.json"]  # no temp files
    assert "2 finished run(s) kept in" in capsys.readouterr().err

    page = tmp_path / "page" / "bm.md"
    page.parent.mkdir()
    assert density.main(["--from-json", str(saved), "--out", str(page)]) == 0
    text = page.read_text()
    assert "The sweep did not finish" in text
    assert "| C OpenRTC coroutine | ok ×1 |" in text
    assert "did not finish" in capsys.readouterr().out


def test_the_results_file_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "density.json"
    density.write_json_atomically(path, {"runs": [1]})
    density.write_json_atomically(path, {"runs": [1, 2]})
    assert json.loads(path.read_text()) == {"runs": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["density.json"]


# -- variants named in every table ----------------------------------------------------------------


def test_tables_name_each_variant_with_its_letter(tmp_path: Path) -> None:
    data = results(all_variants())
    console = render_console(data)
    page = render_markdown(data, [], tmp_path / "bm.md")
    for title in ("A livekit process", "B livekit thread", "C OpenRTC coroutine"):
        assert any(line.startswith(title) for line in console.splitlines()), console
        assert f"| {title} | ok ×1 |" in page  # the per-N table
        assert f"| {title} | " in page.split("### Targets")[0]  # the headline
    assert "| D OpenRTC process |" in page


def test_old_results_without_names_get_them_from_the_variants(tmp_path: Path) -> None:
    runs = all_variants()
    for run in runs:
        del run["name"]
    assert "B livekit thread" in render_console(results(runs))


# -- added PSS below the resolution ------------------------------------------------------------


def test_a_negative_added_pss_is_shown_as_below_resolution(tmp_path: Path) -> None:
    runs = [
        fake_run("A", 1, added=24.4, resolution=0.4),
        fake_run("C", 1, added=-1.59, resolution=0.4),
    ]
    data = results(runs)
    console = render_console(data)
    row = next(line for line in console.splitlines() if line.startswith("C OpenRTC"))
    assert "< resolution" in row
    assert "-1.59" not in row
    assert "24.4 MiB" in console
    page = render_markdown(data, [], tmp_path / "bm.md")
    assert "| C OpenRTC coroutine | ok ×1 | < resolution (0.40 MiB) |" in page
    assert "-1.59" not in page
    assert runs[1]["added_pss_per_session_mb"] == -1.59  # the raw figure stays in the JSON


def test_a_figure_smaller_than_the_idle_noise_over_n_is_below_resolution(
    tmp_path: Path,
) -> None:
    runs = [
        fake_run("C", 1, added=0.3, resolution=1.0),  # 0.3 < 1.0 / 1
        fake_run("C", 10, added=0.15, resolution=1.0),  # 0.15 > 1.0 / 10
    ]
    page = render_markdown(results(runs), [], tmp_path / "bm.md")
    assert "| C OpenRTC coroutine | ok ×1 | < resolution (1.00 MiB) |" in page
    assert "| C OpenRTC coroutine | ok ×1 | 0.15 MiB |" in page


def test_runs_without_idle_samples_use_the_fixed_floor(tmp_path: Path) -> None:
    below = fake_run("C", 1, added=PSS_FLOOR_MB / 2, resolution=None)
    above = fake_run("C", 10, added=PSS_FLOOR_MB / 2, resolution=None)
    console = render_console(results([below, above]))
    rows = [line for line in console.splitlines() if line.startswith("C OpenRTC")]
    assert "< resolution" in rows[0]
    assert "0.05 MiB" in rows[1]


def test_progress_line_shows_below_resolution() -> None:
    line = density._progress(fake_run("C", 1, added=-1.59, resolution=0.4))
    assert "< resolution" in line
    assert "-1.59" not in line
    assert line.startswith("[C OpenRTC coroutine N=1 r1]")


def test_memory_figures_keep_the_raw_figure_and_its_resolution() -> None:
    call = CallRecord(dispatched_at=0.0, started_at=10.0, duration_s=5.0, outcome="completed")
    samples = [PssSample(at=at, pss_mb=355.5, processes=1) for at in (11.0, 12.0, 13.0)]
    idle = [357.0, 357.2, 357.1, 357.1, 357.0]

    figures = memory_figures([call], samples, idle)

    assert figures["added_pss_per_session_mb"] == pytest.approx(-1.6)
    assert figures["pss_resolution_mb"] == pytest.approx(0.4)  # twice the idle spread
    assert figures["added_pss_resolution_mb"] == pytest.approx(0.4)


def test_a_jump_while_all_sessions_are_live_widens_the_resolution() -> None:
    call = CallRecord(dispatched_at=0.0, started_at=10.0, duration_s=5.0, outcome="completed")
    levels = (357.2, 357.2, 357.2, 366.4, 366.4)  # another process ended at 13.5 s
    samples = [PssSample(at=11.0 + i, pss_mb=mb, processes=1) for i, mb in enumerate(levels)]
    idle = [357.0, 357.0, 357.1, 357.0, 357.0]

    figures = memory_figures([call], samples, idle)

    assert figures["added_pss_per_session_mb"] == pytest.approx(0.2)
    assert figures["pss_resolution_mb"] == pytest.approx(9.2)  # the jump, not 2 x 0.1 idle
    assert below_resolution(0.2, figures["added_pss_resolution_mb"])


# -- variant E: one worker per core under the supervisor -------------------------------------


def fake_worker(index: int, calls: int, *, lag: float, held: float) -> dict[str, Any]:
    """One of E's workers as run.supervised_figures records it."""
    return {
        "worker": index,
        "pid": 1000 + index,
        "calls": calls,
        "completed": calls,
        "turns": 3 * calls,
        "turn_p50_s": 0.45,
        "turn_p95_s": 0.5,
        "turn_p99_s": 0.55,
        "idle_pss_mb": 125.0,
        "live_pss_mb": 125.0 + 0.2 * calls,
        "live_sessions": calls,
        "added_pss_per_session_mb": 0.2,
        "loop_lag": {"samples": 10, "p50_s": 0.001, "p99_s": lag, "max_s": lag},
        "loop_lag_all_live": {"live_sessions": 2 * calls, "samples": 5, "p99_s": held},
    }


def supervised_run(calls: int, **extra: Any) -> dict[str, Any]:
    workers = [
        fake_worker(1, calls // 2, lag=0.012, held=0.004),
        fake_worker(2, calls - calls // 2, lag=0.031, held=0.007),
    ]
    return fake_run(
        "E",
        calls,
        workers=workers,
        worker_processes=2,
        supervisor={"pid": 999, "idle_pss_mb": 170.0, "live_pss_mb": 171.0},
        loop_lag={**workers[1]["loop_lag"], "worker": 2},
        loop_lag_all_live={**workers[1]["loop_lag_all_live"], "worker": 2},
        **extra,
    )


def test_variants_selection_takes_e_and_runs_it_beside_c(
    faked: Faked, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(density, "supervisor_installed", lambda: True)
    monkeypatch.setattr(density, "usable_cores", lambda: 2)
    assert density.main(["--variants", "C,E", "--sizes", "1", "--repeats", "1"]) == 0
    assert [plan.variant.key for plan in faked.started] == ["C", "E"]
    variant = faked.started[1].variant
    assert variant.supervised
    assert variant.env(100)["OPENRTC_BENCH_MAX_SESSIONS"] == "110"  # each worker, as C
    assert "forked workers" in variant.describe(100)


def test_e_without_openrtc_workers_is_refused_before_any_run(
    faked: Faked, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(density, "supervisor_installed", lambda: False)
    with pytest.raises(SystemExit) as exited:
        density.main(["--variants", "C,E", "--sizes", "1"])
    assert exited.value.code == 2
    assert faked.started == []
    err = capsys.readouterr().err
    assert err.startswith("error: argument --variants: E runs openrtc-workers' supervisor")
    assert err.count("\n") == 1


def test_the_default_sweep_includes_e() -> None:
    settings = density.settings_from(density.build_parser().parse_args([]))
    assert "E" in settings.variants


def test_the_soak_does_not_offer_the_supervised_variant() -> None:
    from benchmarks import soak

    with pytest.raises(SystemExit):
        soak.build_parser().parse_args(["--variants", "E"])


def test_burst_throughput_shows_e_against_c_and_a(tmp_path: Path) -> None:
    runs = [
        fake_run("A", 100, turns_per_s=40.0),
        fake_run("C", 100, turns_per_s=100.0),
        supervised_run(100, turns_per_s=180.0),
    ]
    data = results(runs)
    console = render_console(data)
    assert "N=100: A 40.0/s, C 100/s, E 180/s, E/C 1.80×, E/A 4.50×" in console
    page = render_markdown(data, [], tmp_path / "bm.md")
    assert "| N | A | C | E | E / C | E / A |" in page
    assert "| 100 | 40.0/s | 100/s | 180/s | 1.80× | 4.50× |" in page


def test_e_is_shown_per_worker_with_the_worst_worker_in_the_tables(tmp_path: Path) -> None:
    runs = [fake_run("C", 1), supervised_run(1), fake_run("C", 10), supervised_run(10)]
    data = results(runs)
    console = render_console(data)
    row = next(line for line in console.splitlines() if line.startswith("E OpenRTC workers"))
    assert "31 ms" in row  # worker 2's, the worst
    assert "supervisor PSS 170.0 MiB idle, 171.0 MiB with all calls live" in console
    assert "worker 2: 5 calls, turn p95 500 ms, lag p99 31 ms (all live 7.0 ms)" in console

    page = render_markdown(data, [], tmp_path / "bm.md")
    assert "## Per worker" in page
    assert "| supervisor | — | — | — | — | 170.0 MiB | 171.0 MiB | — |" in page
    assert "| worker 1 | 5 | 500 ms | 12 ms | 4.0 ms | 125.0 MiB | 126.0 MiB | +0.20 MiB |" in page
    target = next(line for line in page.splitlines() if line.startswith("| E loop lag p99"))
    assert "every worker while holding N=10" in target
    assert "worker 2: 7.0 ms while all 10 are live" in target
    assert target.endswith("| met |")
    assert "- **E**: C's pool" in page  # its method


def test_a_page_without_e_has_no_e_sections(tmp_path: Path) -> None:
    page = render_markdown(results(all_variants()), [], tmp_path / "bm.md")
    assert "## Per worker" not in page
    assert "- **E**" not in page
    assert "Completed turns per second (burst pace)" not in page


def test_supervised_figures_name_each_worker_and_the_worst() -> None:
    def call(worker: int, start: float) -> CallRecord:
        return CallRecord(
            dispatched_at=start - 0.1,
            accepted=True,
            started_at=start,
            duration_s=5.0,
            outcome="completed",
            turn_latencies_s=[0.4, 0.5, 0.6],
            worker=worker,
        )

    calls = [call(1, 10.0), call(2, 10.0)]
    parts = {1: 170.0, 11: 125.0, 12: 126.0}
    idle = [PssSample(at=5.0, pss_mb=421.0, processes=3, parts=parts)]
    live_parts = {1: 171.0, 11: 125.5, 12: 127.0}
    samples = [PssSample(at=at, pss_mb=423.5, processes=3, parts=live_parts) for at in (11, 12)]

    def lag(index: int, pid: int, values: list[float]) -> dict[str, Any]:
        return {
            "worker": index,
            "pid": pid,
            "p99_s": max(values),
            "series": [[11.0 + i * 0.5, v] for i, v in enumerate(values)],
        }

    lags = {1: lag(1, 11, [0.002, 0.003]), 2: lag(2, 12, [0.001, 0.04])}

    figures = supervised_figures(calls, samples, idle, lags, supervisor_pid=1)

    assert figures["supervisor"] == {"pid": 1, "idle_pss_mb": 170.0, "live_pss_mb": 171.0}
    one, two = figures["workers"]
    assert (one["worker"], one["calls"], one["turns"]) == (1, 1, 3)
    assert one["added_pss_per_session_mb"] == pytest.approx(0.5)
    assert two["added_pss_per_session_mb"] == pytest.approx(1.0)
    assert "series" not in two["loop_lag"]  # cut into phases, then dropped
    assert two["loop_lag_all_live"]["max_s"] == pytest.approx(0.04)
    assert figures["loop_lag"]["worker"] == 2
    assert figures["loop_lag_all_live"]["worker"] == 2
    assert figures["calls_without_worker"] == 0
