"""A small project on disk for reload tests: a pool module, agent modules, a helper, a prompt.

Each project gets a package name of its own, so the modules of one test never meet another's
in ``sys.modules``. Files are replaced the way editors save them (write aside, rename).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from openrtc_core import AgentPool, ReloadEvent, hookimpl, load_pool

# Job processes (process isolation) fork from livekit's forkserver, which keeps the
# environment of when it started: set before any test runs (at collection), not by a test.
TURNS_DIR = Path(tempfile.gettempdir()) / f"openrtc-reload-turns-{os.getpid()}"
TURNS_DIR.mkdir(exist_ok=True)
os.environ["RELOAD_TEST_TURNS_DIR"] = str(TURNS_DIR)

APP = """
from openrtc_core import AgentPool
from openrtc_testing import ScriptedLLM

from {pkg}.support import Support
from {pkg}.sales import Sales

pool = AgentPool(llm=ScriptedLLM(), isolation="{isolation}", max_sessions=200)
pool.add("support", Support, default=True)
pool.add("sales", Sales, greeting=None)
"""

SUPPORT = """
import os

from livekit.agents import Agent

from {pkg}.helpers import tag

TAG = "v1"


class Support(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Help with support. " + tag())
        self.turns = 0
        self.entered = 0

    async def on_enter(self) -> None:
        self.entered += 1

    async def llm_node(self, chat_ctx, tools, model_settings):
        self.turns += 1
        if os.environ.get("RELOAD_TEST_TURNS_DIR"):  # where a test watches turns happen
            turns = os.path.join(os.environ["RELOAD_TEST_TURNS_DIR"], "{pkg}.log")
            with open(turns, "a") as log:
                log.write(f"{{TAG}} {{self.turns}}\\n")
        users = [i for i in chat_ctx.items if getattr(i, "role", "") == "user"]
        yield (
            f"{{TAG}} turn {{self.turns}} heard {{len(users)}} entered {{self.entered}} "
            f"[{{self.instructions}}]"
        )
"""

SALES = """
from livekit.agents import Agent


class Sales(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Sell.")

    async def llm_node(self, chat_ctx, tools, model_settings):
        yield "sales v1"
"""

HELPERS = """
from pathlib import Path


def tag() -> str:
    return "helper-1 " + (Path(__file__).parent / "prompt.txt").read_text().strip()
"""


def save(path: Path, text: str) -> None:
    """Replace `path` as an editor does: write a new file beside it, then rename."""
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    aside.write_text(text)
    os.replace(aside, path)


@attrs.define
class Project:
    root: Path
    package: str

    @property
    def folder(self) -> Path:
        return self.root / self.package

    @property
    def app(self) -> Path:
        return self.root / "app.py"

    def file(self, name: str) -> Path:
        return self.folder / name

    def read(self, name: str) -> str:
        return self.file(name).read_text()

    def edit(self, name: str, change: Callable[[str], str]) -> None:
        before = self.read(name)
        after = change(before)
        assert after != before, f"the edit of {name} changed nothing"
        save(self.file(name), after)

    def write(self, name: str, text: str) -> None:
        save(self.file(name), textwrap.dedent(text).format(pkg=self.package))

    @property
    def turns_log(self) -> Path:
        """Where the project's support agent notes each turn (any process)."""
        return TURNS_DIR / f"{self.package}.log"

    def load(self) -> AgentPool:
        return load_pool(str(self.app))


def make_project(root: Path, *, isolation: str = "coroutine") -> Project:
    package = f"proj_{uuid.uuid4().hex[:8]}"
    project = Project(root, package)
    project.folder.mkdir(parents=True)
    (project.folder / "__init__.py").write_text("")
    project.app.write_text(textwrap.dedent(APP).format(pkg=package, isolation=isolation))
    project.write("support.py", SUPPORT)
    project.write("sales.py", SALES)
    project.write("helpers.py", HELPERS)
    (project.folder / "prompt.txt").write_text("prompt-1\n")
    return project


class Recorder:
    """A plugin that keeps every reload event."""

    def __init__(self) -> None:
        self.events: list[ReloadEvent] = []

    @hookimpl
    def openrtc_code_reloaded(self, event: ReloadEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind.value for e in self.events]

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 20.0) -> ReloadEvent:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events if e.kind.value == kind]
            if len(found) >= count:
                return found[count - 1]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {count} {kind!r} event(s) within {timeout} s: {self.kinds()}")


def recorded(pool: AgentPool) -> Recorder:
    """A Recorder registered on `pool`: it keeps the pool's reload events."""
    recorder = Recorder()
    pool.plugins.register(recorder)
    return recorder


async def wait_until(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or check}")
