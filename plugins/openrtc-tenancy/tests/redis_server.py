"""pytest fixtures for tests that need a real Redis server (no mocks, no fakeredis).

``redis_url`` (session scope) is, in order of preference:

* ``OPENRTC_TEST_REDIS_URL`` when it is set (CI starts a server and sets it). The database it
  names is flushed before every test that uses ``redis_client``: point it at a throwaway one.
  Under pytest-xdist each worker process takes a database of its own on that server (worker
  ``gwN`` the one N + 1 above the URL's), so one worker's flush never wipes another's keys; the
  URL's own database stays to tests that only touch keys of their own (the tenancy benchmark);
* a private ``redis-server`` this fixture starts on a free loopback port, with no persistence,
  in a temporary directory, and stops at the end of the session (one per xdist worker);
* otherwise the test is skipped, unless ``OPENRTC_REQUIRE_REDIS=1`` (CI sets it), when it fails:
  CI must never skip these tests silently.

``redis_client`` (function scope) is a fresh `redis.asyncio.Redis` on a flushed database.

``private_redis`` (function scope) is a `PrivateRedis`: a redis-server of the test's own, with
no persistence, that the test may restart (its data gone) or pause, to rehearse outages.

A conftest.py imports these names to make them available to the tests beside it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import redis.asyncio as aioredis

__all__ = ["PrivateRedis", "private_redis", "redis_client", "redis_url"]

MISSING = "redis-server is not installed: apt install redis-server (CI installs it)"
START_TIMEOUT_S = 10.0
DATABASES = 16
"""redis-server's default number of databases (``databases`` in its config)."""


def worker_database(url: str, worker: str | None) -> str:
    """`url` on the database of pytest-xdist worker `worker` (``gwN``): N + 1 above the one
    `url` names; `url` itself outside xdist (`worker` None)."""
    if not worker:
        return url
    parts = urlsplit(url)
    base = parts.path.strip("/") or "0"
    if not worker.removeprefix("gw").isdecimal() or not base.isdecimal():
        raise ValueError(f"cannot pick a database for xdist worker {worker!r} on {url!r}")
    database = int(base) + 1 + int(worker.removeprefix("gw"))
    if database >= DATABASES:
        raise ValueError(
            f"xdist worker {worker} would need Redis database {database}, past the server's "
            f"{DATABASES}: run fewer workers (-n) or name a lower database in the URL"
        )
    return urlunsplit(parts._replace(path=f"/{database}"))


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _start_server(
    executable: str, workdir: Path, port: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start redis-server and wait for PING; retry on a new port if the chosen one was taken
    (on `port` itself, if given, as the old server's socket may take a moment to go)."""
    problems: list[str] = []
    for attempt in range(3):
        port = _free_loopback_port() if port is None else port
        log = workdir / f"redis-{attempt}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    executable,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(workdir),
                ],
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + START_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            if _answers_ping(url):
                return process, url
            time.sleep(0.05)
        _stop_server(process)
        problems.append(f"port {port}: {log.read_text(errors='replace').strip()[-2000:]}")
    raise RuntimeError("redis-server did not answer PING:\n" + "\n".join(problems))


def _stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _executable() -> str:
    executable = shutil.which("redis-server")
    if executable is None:
        if os.environ.get("OPENRTC_REQUIRE_REDIS") == "1":
            pytest.fail(MISSING, pytrace=False)
        pytest.skip(MISSING)
    return executable


class PrivateRedis:
    """A redis-server of one test's own, on one port for its life, with no persistence."""

    def __init__(self, executable: str, workdir: Path) -> None:
        self.executable = executable
        self.workdir = workdir
        self.process, self.url = _start_server(executable, workdir)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def restart(self) -> None:
        """Stop the server and start a new one on the same port: every key is gone."""
        _stop_server(self.process)
        self.process, _ = _start_server(self.executable, self.workdir, port=self.port)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing answers."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        _stop_server(self.process)


@pytest.fixture
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A `PrivateRedis` for this test, stopped after it."""
    server = PrivateRedis(_executable(), tmp_path_factory.mktemp("private-redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real Redis server for this test session (see the module docstring)."""
    configured = os.environ.get("OPENRTC_TEST_REDIS_URL")
    if configured:
        yield worker_database(configured, os.environ.get("PYTEST_XDIST_WORKER"))
        return
    process, url = _start_server(_executable(), tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        _stop_server(process)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A new client on ``redis_url``'s database, flushed first; closed after the test."""
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()
