"""Our verbs never print livekit 1.8.9's notices telling the user to run another tool (its
Go ``lk``) for what ``openrtc dev|console|download-files`` does."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from openrtc_core import _livekit
from openrtc_core.cli import quiet_livekit_notices
from openrtc_testing import LoopbackDispatchServer

ROOT = Path(__file__).resolve().parent.parent
RELOAD_INSTALLED = bool(importlib.metadata.entry_points(group="openrtc.plugins", name="reload"))


async def test_dev_registers_without_pointing_at_another_tool() -> None:
    async with LoopbackDispatchServer() as lk:
        env = {**os.environ, "OPENRTC_HTTP_PORT": "0", "COLUMNS": "200"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "openrtc_core",
            "dev",
            "examples/pool.py",
            # Without openrtc-reload, --reload is an error (tests/test_cli_reload.py).
            *(["--reload"] if RELOAD_INSTALLED else []),
            *lk.worker_args(),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            worker = await lk.wait_for_worker(timeout=90)
            proc.send_signal(signal.SIGTERM)
            await worker.wait_closed(timeout=60)
            await asyncio.wait_for(proc.wait(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            output = (await proc.stdout.read()).decode() if proc.stdout else ""
    assert "lk agent" not in output, output
    assert "deprecated" not in output.lower(), output
    # --reload is ours (livekit's flag is not passed on, so livekit says nothing about it):
    # the worker watches the pool's files.
    if RELOAD_INSTALLED:
        assert "reload: watching" in output, output
    assert "openrtc-reload" not in output, output
    assert "Traceback" not in output, output


def test_download_files_is_ours() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "openrtc_core", "download-files"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "deprecated" not in output.lower(), output
    assert "lk " not in output and "livekit.agents module" not in output, output


def test_the_filter_lasts_for_the_verb_only(caplog: pytest.LogCaptureFixture) -> None:
    lk_logger = logging.getLogger("livekit.agents")
    notice = "dev mode is deprecated and will be removed; use `lk agent dev` instead"
    with caplog.at_level(logging.WARNING, logger="livekit.agents"):
        with quiet_livekit_notices("dev"):
            lk_logger.warning(notice)
            lk_logger.warning("worker started")
        lk_logger.warning(notice)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["worker started", notice]


def test_console_asks_livekit_module_to_hide_its_notice(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(
        _livekit, "hide_console_deprecation", lambda: calls.append("hidden"), raising=False
    )
    with quiet_livekit_notices("console"):
        pass
    with quiet_livekit_notices("start"):
        pass
    assert calls == ["hidden"]
