"""Metadata that is not a JSON object is treated as absent, with one warning."""

from __future__ import annotations

import logging

import pytest

from openrtc_core.metadata import MAX_METADATA_BYTES, parse_metadata


def test_json_object_is_read() -> None:
    assert parse_metadata('{"agent": "sales", "n": 1}', source="job metadata") == {
        "agent": "sales",
        "n": 1,
    }


def test_empty_is_absent_without_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert parse_metadata("", source="job metadata") == {}
    assert parse_metadata("   ", source="job metadata") == {}
    assert not caplog.records


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("{not json", "is not valid JSON"),
        ('["agent"]', "is JSON list, not an object"),
        ('"support"', "is JSON str, not an object"),
        ("42", "is JSON int, not an object"),
        ("[" * 100_000 + "]" * 100_000, "byte limit"),
        ('{"agent": "' + "x" * MAX_METADATA_BYTES + '"}', "byte limit"),
    ],
)
def test_malformed_is_absent_with_one_warning(
    raw: str, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="openrtc.metadata"):
        assert parse_metadata(raw, source="room metadata", job_id="AJ_1") == {}
    assert len(caplog.records) == 1
    assert problem in caplog.records[0].getMessage()
    assert "room metadata" in caplog.records[0].getMessage()


def test_deeply_nested_json_within_the_limit_does_not_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = "[" * 20_000 + "]" * 20_000
    assert len(raw) < MAX_METADATA_BYTES
    assert parse_metadata(raw, source="job metadata") == {}
