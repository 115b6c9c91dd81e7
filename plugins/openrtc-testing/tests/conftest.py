"""Fixtures the voice-mode tests share."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture
def espeak_ng() -> str:
    """The real espeak-ng (sox is there too); the test is skipped without them, unless
    ``OPENRTC_REQUIRE_VOICE=1`` (CI sets it), when it fails."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        message = f"{' and '.join(missing)} not installed (apt-get install {' '.join(missing)})"
        if os.environ.get("OPENRTC_REQUIRE_VOICE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return str(shutil.which("espeak-ng"))
