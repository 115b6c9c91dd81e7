from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _openrtc_logs_at_info() -> None:
    logging.getLogger("openrtc").setLevel(logging.INFO)
