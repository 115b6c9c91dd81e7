"""The shared Redis of CI split between pytest-xdist workers: one database each."""

from __future__ import annotations

import pytest
from redis_server import worker_database

URL = "redis://:secret@127.0.0.1:6379/0"


def test_outside_xdist_the_url_is_used_as_it_is() -> None:
    assert worker_database(URL, None) == URL
    assert worker_database(URL, "") == URL


def test_each_xdist_worker_takes_a_database_above_the_urls_own() -> None:
    assert worker_database(URL, "gw0") == "redis://:secret@127.0.0.1:6379/1"
    assert worker_database(URL, "gw1") == "redis://:secret@127.0.0.1:6379/2"
    assert worker_database("redis://127.0.0.1:6379/3", "gw2") == "redis://127.0.0.1:6379/6"
    assert worker_database("redis://127.0.0.1:6379", "gw0") == "redis://127.0.0.1:6379/1"


def test_more_workers_than_databases_is_an_error_that_says_what_to_do() -> None:
    with pytest.raises(ValueError, match=r"gw15 would need Redis database 16.*fewer workers"):
        worker_database(URL, "gw15")
    with pytest.raises(ValueError, match="cannot pick a database for xdist worker 'master'"):
        worker_database(URL, "master")
