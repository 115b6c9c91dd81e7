"""The benchmarks' shared table and plot code (benchmarks/tables.py, benchmarks/figures.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from benchmarks import figures, tables


def test_number_formats_a_figure_and_marks_a_missing_one() -> None:
    assert tables.number(3.14159) == "3.1"
    assert tables.number(2048, "{:,.0f}") == "2,048"
    assert tables.number(None) == tables.DASH
    assert tables.number(None, missing="-") == "-"
    assert tables.number(0.0, "{:+.2f} MiB") == "+0.00 MiB"  # zero is a figure, not missing


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0014, "1.4 ms"),
        (0.0099, "9.9 ms"),
        (0.052, "52 ms"),
        (4.321, "4321 ms"),
        (12.34, "12.3 s"),
        (None, "—"),
    ],
)
def test_duration_keeps_two_or_three_significant_figures(seconds: float | None, text: str) -> None:
    assert tables.duration(seconds) == text


def test_mib_and_ratio() -> None:
    assert tables.mib(0.421) == "0.42 MiB"
    assert tables.mib(21.64) == "21.6 MiB"
    assert tables.mib(-12.0) == "-12.0 MiB"
    assert tables.ratio(12.0, 1.0) == "12×"
    assert tables.ratio(0.45, 1.0) == "0.45×"
    assert tables.ratio(1.0, 30.0) == "1/30"
    assert tables.ratio(0.0, 5.0) == "0"
    assert tables.ratio(1.0, 0.0) == tables.DASH  # no reference to compare with
    assert tables.ratio(None, 1.0, missing="-") == "-"


def test_percentiles_are_nearest_rank_values_of_the_input() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100 down to 1, unsorted on purpose
    summary = tables.percentiles(values, (50, 95, 99))
    assert summary == {"n": 100, "p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert list(summary) == ["n", "p50", "p95", "p99", "max"]  # the order columns show them in
    few = tables.percentiles([0.3, 0.1, 0.2])
    assert few == {"n": 3, "p50": 0.2, "p99": 0.3, "max": 0.3}
    assert tables.percentiles([1.23456, 2.34567], (50,), digits=2) == {
        "n": 2,
        "p50": 1.23,
        "max": 2.35,
    }


def test_percentiles_of_nothing_are_none() -> None:
    assert tables.percentiles([]) == {"n": 0, "p50": None, "p99": None, "max": None}
    with pytest.raises(ValueError, match="percentile 0"):
        tables.percentiles([1.0], (0,))


def test_markdown_table_aligns_and_escapes() -> None:
    lines = tables.markdown(["run", "calls", "note"], [["B", "12", "a|b"], ["C", "3", ""]], "<>")
    assert lines == [
        "| run | calls | note |",
        "| --- | ---: | --- |",
        "| B | 12 | a\\|b |",
        "| C | 3 |  |",
    ]


def test_tables_refuse_rows_that_do_not_fit_their_headers() -> None:
    with pytest.raises(ValueError, match="a row of 1 cells under 2 headers"):
        tables.markdown(["a", "b"], [["only one"]])
    with pytest.raises(ValueError, match="a row of 3 cells under 2 headers"):
        tables.terminal(["a", "b"], [["1", "2", "3"]])
    with pytest.raises(ValueError, match="alignment"):
        tables.markdown(["a"], [["1"]], "<>")
    with pytest.raises(ValueError, match="alignment"):
        tables.terminal(["a"], [["1"]], "r")


def test_terminal_table_fits_each_column_to_its_widest_text() -> None:
    lines = tables.terminal(
        ["variant", "N", "+PSS"],
        [["C OpenRTC coroutine", "500", "0.27 MiB"], ["A", "1", "—"]],
        "<>>",
    )
    assert lines == [
        "variant                N      +PSS",
        "-------------------  ---  --------",
        "C OpenRTC coroutine  500  0.27 MiB",
        "A                      1         —",
    ]
    assert tables.terminal(["run", "waves"], []) == ["run  waves", "---  -----"]


def test_figure_is_written_and_closed(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plt = figures.pyplot()
    path = tmp_path / "plot.png"
    with figures.figure(path, size=(4, 3)) as (_, ax):
        ax.plot([1, 2, 3], [3, 1, 2], color=figures.VARIANT_COLORS["C"])
        figures.dress(ax, xlabel="calls", ylabel="MiB", title="memory", grid="both")
        figures.threshold(ax, 2.5, label="target", label_x=1)
        assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("calls", "MiB", "memory")
        assert [text.get_text() for text in ax.texts] == ["target"]
        assert len(ax.lines) == 2  # the series and the target line
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == []


def test_a_figure_that_fails_is_closed_and_not_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plt = figures.pyplot()
    path = tmp_path / "broken.png"
    with pytest.raises(RuntimeError, match="no data"), figures.figure(path, size=(4, 3), rows=2):
        raise RuntimeError("no data")
    assert not path.exists()
    assert plt.get_fignums() == []


def test_each_percentile_is_the_smallest_value_with_that_share_at_or_below_it() -> None:
    rng = random.Random(24)
    for count in (1, 2, 7, 100, 101, 997):
        values = [rng.expovariate(20.0) for _ in range(count)]
        summary = tables.percentiles(values, (50, 95, 99))
        for q in (50, 95, 99):
            found = summary[f"p{q}"]
            assert found in values
            at_or_below = sum(1 for v in values if v <= found)
            below = sum(1 for v in values if v < found)
            assert at_or_below * 100 >= q * count, (count, q)  # covers q% of the values
            assert below * 100 < q * count, (count, q)  # and no smaller value does
        assert summary["max"] == max(values) and summary["n"] == count
