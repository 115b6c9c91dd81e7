"""Hot reload through the real worker: calls in flight, the agent's files edited on disk."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from reload_project import make_project, recorded, save, wait_until

from openrtc_core import AgentPool, load_pool, prewarm_before_fork
from openrtc_reload.reloader import ACTIVE
from openrtc_testing import LoopbackDispatchServer
from openrtc_testing.trees import virtualenv_like
from openrtc_testing.worker import (
    dispatch_until_accepted,
    simulate_call,
    simulated_call_metadata,
)

PAUSE_S = 1.0


@pytest.fixture(autouse=True)
def _fresh_import_time() -> Iterator[None]:
    """When this process imported "the" pool's code is process-wide (one pool per worker in
    production); each test's pool is new, so no test inherits an earlier one's."""
    from openrtc_reload.reloader import WatchReloader

    WatchReloader.loaded_at = None
    yield
    WatchReloader.loaded_at = None


async def started(pool: AgentPool) -> str:
    """Wait for the reloader to stamp versions; the support agent's."""
    await wait_until(lambda: "support" in pool.view().agent_versions, what="the reloader")
    return pool.view().agent_versions["support"]


async def calls(
    dispatch: LoopbackDispatchServer, count: int, *, turns: int = 3, prefix: str = "call"
) -> list[asyncio.Task[Any]]:
    return [
        asyncio.create_task(
            simulate_call(
                dispatch,
                f"{prefix}-{i}",
                agent="support",
                turns=[f"line {n}" for n in range(turns)],
                pause_s=PAUSE_S,
                timeout=60,
            )
        )
        for i in range(count)
    ]


async def test_live_calls_switch_at_their_next_turn(
    tmp_path: Path, openrtc_dispatch: LoopbackDispatchServer, openrtc_worker: Any
) -> None:
    project = make_project(tmp_path)
    pool = project.load()
    recorder = recorded(pool)
    async with openrtc_worker(pool, reload=True):
        first = await started(pool)
        tasks = await calls(openrtc_dispatch, 5)
        await wait_until(lambda: len(pool.sessions) == 5, what="5 live sessions")
        await asyncio.sleep(PAUSE_S + 0.3)  # every call has had its first turn
        project.edit("support.py", lambda s: s.replace('TAG = "v1"', 'TAG = "v2"'))
        applied = await recorder.wait_for("applied")
        reports = [report for _, report in await asyncio.gather(*tasks)]
        # Ended calls are let go of: the reloader keeps no session past its end.
        await wait_until(lambda: not any(r.live for r in ACTIVE), what="sessions forgotten")
    second = pool.view().agent_versions["support"]
    assert second != first and applied.versions["support"] == second
    assert applied.previous["support"] == first
    assert sorted(applied.sessions) == sorted(r["job_id"] for r in reports)
    for report in reports:
        assert report["outcome"] == "completed", report
        turns = report["turns"]
        assert turns[0]["reply"].startswith("v1 turn 1 heard 1 entered 1")
        assert turns[0]["version"] == first
        # The last turn ran the new code, on the same agent instance: its counters and the
        # chat history went on, on_enter did not run again.
        assert turns[-1]["reply"].startswith("v2 turn 3 heard 3 entered 1"), turns
        assert turns[-1]["version"] == second
        assert report["greeting"] == []
    # Sessions of the other agent were not touched; nothing else was reloaded.
    assert recorder.kinds().count("switched") == 5
    assert {e.agents for e in recorder.events if e.kind.value == "switched"} == {("support",)}


BAD_SAVES: dict[str, tuple[Callable[[str], str], str, str]] = {
    # kind: (the edit, the line the error must point at, what the error says)
    "syntax error": (
        lambda s: s.replace("class Support(Agent):", "class Support(Agent)"),
        "class Support(Agent)",
        "SyntaxError",
    ),
    "import error": (
        lambda s: s.replace("helpers import tag", "helpers import nope"),
        "helpers import nope",
        "ImportError: cannot import name 'nope'",
    ),
    "exception at import": (
        lambda s: s.replace('TAG = "v1"', 'TAG = "v2"\nraise RuntimeError("half-saved")'),
        'raise RuntimeError("half-saved")',
        "RuntimeError: half-saved",
    ),
    "class removed": (
        lambda s: s.replace("class Support(Agent):", "class Helper(Agent):"),
        "",
        "ImportError: cannot import name 'Support'",
    ),
    "constructor raising": (
        lambda s: s.replace("self.turns = 0", "self.turns = 0\n        1 / 0"),
        "1 / 0",
        "ZeroDivisionError: division by zero",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_SAVES))
async def test_a_bad_save_changes_nothing_and_says_where(
    kind: str,
    tmp_path: Path,
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    edit, line, says = BAD_SAVES[kind]
    project = make_project(tmp_path)
    pool = project.load()
    recorder = recorded(pool)
    async with openrtc_worker(pool, reload=True):
        first = await started(pool)
        tasks = await calls(openrtc_dispatch, 2)
        await wait_until(lambda: len(pool.sessions) == 2, what="2 live sessions")
        caplog.clear()
        project.edit(
            "support.py",
            lambda s: edit(s.replace(project.package, "{pkg}")).replace("{pkg}", project.package),
        )
        rejected = await recorder.wait_for("rejected")
        reports = [report for _, report in await asyncio.gather(*tasks)]
        # A new call after the bad save runs the old code too.
        _, late = await simulate_call(
            openrtc_dispatch, "late", agent="support", turns=["hello"], timeout=60
        )
    lines = project.read("support.py").splitlines()
    where = f"support.py:{lines.index(next(x for x in lines if line in x)) + 1}: " if line else ""
    assert f"{where}" in rejected.error and says in rejected.error, rejected.error
    errors = [r for r in caplog.records if r.name == "openrtc.reload" and r.levelname == "ERROR"]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert where in errors[0].getMessage() and says in errors[0].getMessage()
    assert pool.view().agent_versions["support"] == first
    for report in [*reports, late]:
        assert report["outcome"] == "completed", report
        assert all(t["reply"].startswith("v1 ") for t in report["turns"]), report["turns"]
        assert {t["version"] for t in report["turns"]} == {first}
    assert "applied" not in recorder.kinds()


async def test_new_code_failing_its_first_turn_is_rolled_back_for_everyone(
    tmp_path: Path,
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    project = make_project(tmp_path)
    pool = project.load()
    recorder = recorded(pool)
    async with openrtc_worker(pool, reload=True):
        first = await started(pool)
        tasks = await calls(openrtc_dispatch, 3, turns=4)
        await wait_until(lambda: len(pool.sessions) == 3, what="3 live sessions")
        await asyncio.sleep(PAUSE_S + 0.3)
        caplog.clear()
        project.edit(
            "support.py",
            lambda s: s.replace('TAG = "v1"', 'TAG = "v2"').replace(
                "self.turns += 1", 'self.turns += 1\n        raise KeyError("bad turn")'
            ),
        )
        await recorder.wait_for("applied")
        rolled = await recorder.wait_for("rolled_back")
        reports = [report for _, report in await asyncio.gather(*tasks)]
        # The same broken file saved again (touched) is not applied again...
        project.edit("support.py", lambda s: s + "\n")
        await asyncio.sleep(1.0)
        # ...a good save is.
        project.edit("support.py", lambda s: s.replace('raise KeyError("bad turn")', "pass"))
        await recorder.wait_for("applied", count=2)
    assert "support.py" in rolled.error and "KeyError: 'bad turn'" in rolled.error, rolled.error
    assert rolled.versions["support"] == first
    errors = [r for r in caplog.records if r.name == "openrtc.reload" and r.levelname == "ERROR"]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    for report in reports:
        # No call was dropped: each went back to the code that worked and finished on it.
        assert report["outcome"] == "completed", report
        assert [t["version"] for t in report["turns"]][-1] == first
        assert report["turns"][-1]["reply"].startswith("v1 "), report["turns"]
    assert recorder.kinds().count("applied") == 2


async def test_a_helper_or_a_prompt_edit_switches_only_the_agents_that_use_it(
    tmp_path: Path, openrtc_dispatch: LoopbackDispatchServer, openrtc_worker: Any
) -> None:
    project = make_project(tmp_path)
    pool = project.load()
    recorder = recorded(pool)
    async with openrtc_worker(pool, reload=True):
        first = await started(pool)
        sales_version = pool.view().agent_versions["sales"]
        support = await calls(openrtc_dispatch, 2, turns=4)
        sales = asyncio.create_task(
            simulate_call(
                openrtc_dispatch,
                "sales-call",
                agent="sales",
                turns=["a", "b", "c", "d"],
                pause_s=PAUSE_S,
                timeout=60,
            )
        )
        await wait_until(lambda: len(pool.sessions) == 3, what="3 live sessions")
        await asyncio.sleep(PAUSE_S + 0.3)
        project.edit("helpers.py", lambda s: s.replace("helper-1", "helper-2"))
        await recorder.wait_for("applied")
        after_helper = pool.view().agent_versions["support"]
        await asyncio.sleep(PAUSE_S + 0.3)
        (project.folder / "prompt.txt").write_text("prompt-2\n")
        await recorder.wait_for("applied", count=2)
        after_prompt = pool.view().agent_versions["support"]
        support_reports = [r for _, r in await asyncio.gather(*support)]
        _, sales_report = await sales
        # A call that starts now gets the new instructions from its first turn.
        _, late = await simulate_call(
            openrtc_dispatch, "late", agent="support", turns=["hi"], timeout=60
        )
    assert len({first, after_helper, after_prompt}) == 3
    for report in support_reports:
        replies = [t["reply"] for t in report["turns"]]
        assert "helper-1 prompt-1" in replies[0]
        assert "helper-2 prompt-2" in replies[-1], replies
        assert report["turns"][-1]["version"] == after_prompt
    assert late["turns"][0]["version"] == after_prompt
    assert "helper-2 prompt-2" in late["turns"][0]["reply"]
    # The sales agent imports neither: its version and its live call were left alone.
    assert pool.view().agent_versions["sales"] == sales_version
    assert {t["version"] for t in sales_report["turns"]} == {sales_version}
    assert all(e.agents == ("support",) for e in recorder.events if e.kind.value == "switched")


DIRECTORY_AGENT = """
from livekit.agents import Agent

from openrtc_testing import ScriptedLLM


class {cls}(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="{name}", llm=ScriptedLLM())

    async def llm_node(self, chat_ctx, tools, model_settings):
        yield "{name} {tag}"
"""


def agent_file(folder: Path, name: str, tag: str = "v1") -> None:
    text = DIRECTORY_AGENT.format(cls=name.title(), name=name, tag=tag)
    aside = folder / f".{name}.tmp"
    aside.write_text(text)
    aside.replace(folder / f"{name}.py")


async def test_agent_files_added_to_and_deleted_from_a_directory_target(
    tmp_path: Path, openrtc_dispatch: LoopbackDispatchServer, openrtc_worker: Any
) -> None:
    folder = tmp_path / f"agents_{tmp_path.name[-6:]}"
    folder.mkdir()
    for name in ("support", "sales"):
        agent_file(folder, name)
    pool = load_pool(str(folder))
    recorder = recorded(pool)
    async with openrtc_worker(pool, reload=True):
        await started(pool)
        live_sales = asyncio.create_task(
            simulate_call(
                openrtc_dispatch,
                "sales-live",
                agent="sales",
                turns=["a", "b", "c"],
                pause_s=PAUSE_S,
                timeout=60,
            )
        )
        await wait_until(lambda: len(pool.sessions) == 1, what="the sales call")
        agent_file(folder, "billing")
        added = await recorder.wait_for("applied")
        _, billing = await simulate_call(
            openrtc_dispatch, "billing-1", agent="billing", turns=["hi"], timeout=60
        )
        (folder / "sales.py").unlink()
        removed = await recorder.wait_for("applied", count=2)
        refused = await openrtc_dispatch.dispatch("sales-late", job_metadata='{"agent": "sales"}')
        _, sales = await live_sales
    assert "billing" in added.agents and "billing" in pool.agents
    assert billing["outcome"] == "completed" and billing["turns"][0]["reply"] == "billing v1"
    assert "sales" in removed.agents and "sales" not in pool.agents
    # A new call for the deleted agent is refused, and another worker may still take it.
    assert not refused.accepted and refused.rejected_by and not refused.terminate
    # The live call of the deleted agent finished on its code.
    assert sales["outcome"] == "completed"
    assert [t["reply"] for t in sales["turns"]] == ["sales v1"] * 3


async def test_process_isolation_switches_the_session_in_its_job_process(
    tmp_path: Path,
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
) -> None:
    # The job processes note each turn in project.turns_log (outside the watched project).
    project = make_project(tmp_path, isolation="process")
    turns_log = project.turns_log
    pool = project.load()
    recorder = recorded(pool)
    async with openrtc_worker(pool, reload=True):
        first = await started(pool)
        dispatched = [
            await dispatch_until_accepted(
                openrtc_dispatch,
                f"proc-{i}",
                job_metadata=simulated_call_metadata(
                    "support", turns=["a", "b", "c", "d"], pause_s=PAUSE_S
                ),
            )
            for i in range(2)
        ]
        await wait_until(
            lambda: turns_log.exists() and turns_log.read_text().count("v1 1") == 2,
            timeout=90,
            what="each call's first turn",
        )
        project.edit("support.py", lambda s: s.replace('TAG = "v1"', 'TAG = "v2"'))
        await recorder.wait_for("applied")
        second = pool.view().agent_versions["support"]
        reports = [await openrtc_dispatch.wait_for_report(d.job_id, timeout=90) for d in dispatched]
        # A job process started after the save runs the new code from its first turn.
        _, late = await simulate_call(
            openrtc_dispatch, "late", agent="support", turns=["hi"], timeout=90
        )
    assert second != first
    for report in reports:
        assert report["outcome"] == "completed", report
        versions = [t["version"] for t in report["turns"]]
        assert versions[0] == first and versions[-1] == second, versions
        assert report["turns"][-1]["reply"].startswith("v2 turn 4 heard 4 entered 1")
        assert report["pid"] != os.getpid()
    assert late["turns"][0]["version"] == second
    assert late["turns"][0]["reply"].startswith("v2 turn 1")


async def test_a_session_carries_its_code_version_in_attributes_and_logs(
    tmp_path: Path,
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="openrtc")
    pool = make_project(tmp_path).load()
    async with openrtc_worker(pool, reload=True):
        version = await started(pool)
        d, report = await simulate_call(
            openrtc_dispatch, "versioned", agent="support", turns=["hi"], timeout=60
        )
    assert d.participant_attributes["openrtc.version"] == version
    assert report["version"] == version and report["turns"][0]["version"] == version
    started_lines = [r for r in caplog.records if r.getMessage() == "session started"]
    assert [getattr(r, "version", None) for r in started_lines] == [version]


async def test_options_edited_in_the_pool_module_apply_to_new_calls(
    tmp_path: Path, openrtc_dispatch: LoopbackDispatchServer, openrtc_worker: Any
) -> None:
    project = make_project(tmp_path)
    pool = project.load()
    recorder = recorded(pool)
    async with openrtc_worker(pool, reload=True):
        await started(pool)
        _, before = await simulate_call(
            openrtc_dispatch, "before", agent="sales", turns=["hi"], timeout=60
        )
        text = project.app.read_text().replace("greeting=None", 'greeting="Say hello."')
        save_app = project.app.with_name(".app.tmp")
        save_app.write_text(text)
        save_app.replace(project.app)
        applied = await recorder.wait_for("applied")
        _, after = await simulate_call(
            openrtc_dispatch, "after", agent="sales", turns=["hi"], timeout=60
        )
    assert "sales" in applied.agents
    assert before["greeting"] == []
    assert [g["text"] for g in after["greeting"]] == ["sales v1"]


async def test_a_new_on_enter_that_raises_is_rolled_back_and_the_old_one_runs(
    tmp_path: Path, openrtc_dispatch: LoopbackDispatchServer, openrtc_worker: Any
) -> None:
    project = make_project(tmp_path)
    pool = project.load()
    recorder = recorded(pool)
    async with openrtc_worker(pool, reload=True):
        first = await started(pool)
        project.edit(
            "support.py",
            lambda s: s.replace(
                "self.entered += 1", 'self.entered += 1\n        raise OSError("no greeting")'
            ),
        )
        await recorder.wait_for("applied")
        _, report = await simulate_call(
            openrtc_dispatch, "entering", agent="support", turns=["hi"], timeout=60
        )
        rolled = await recorder.wait_for("rolled_back")
    assert "OSError: no greeting" in rolled.error
    assert report["outcome"] == "completed", report
    # Back on the previous code, whose on_enter ran (once more, after the failed one).
    assert report["turns"][0]["version"] == first
    assert report["turns"][0]["reply"].startswith("v1 turn 1 heard 1 entered 2")


async def test_a_worker_forked_from_code_older_than_its_files_loads_them_first(
    tmp_path: Path, openrtc_dispatch: LoopbackDispatchServer, openrtc_worker: Any
) -> None:
    # What a supervisor's replacement worker sees (openrtc-workers): the supervisor imported
    # and prewarmed the pool, the files changed, then it forked the worker.
    project = make_project(tmp_path)
    pool = project.load()
    prewarm_before_fork(pool)
    await asyncio.sleep(0.05)
    project.edit("support.py", lambda s: s.replace('TAG = "v1"', 'TAG = "v2"'))
    recorder = recorded(pool)
    async with openrtc_worker(pool, reload=True):
        version = await started(pool)
        _, report = await simulate_call(
            openrtc_dispatch, "after-fork", agent="support", turns=["hi"], timeout=60
        )
    applied = [e for e in recorder.events if e.kind.value == "applied"]
    assert len(applied) == 1 and applied[0].versions["support"] == version
    assert "loaded its code before the last change" in applied[0].files[0]
    assert report["turns"][0]["reply"].startswith("v2"), report
    assert report["turns"][0]["version"] == version


@pytest.fixture
def reload_lines(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """What the reloader said, down to its debug lines, since the log was last cleared: one
    line per load it tried (refused, applied, changed nothing, not tried again)."""
    caplog.set_level("DEBUG", logger="openrtc.reload")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "openrtc.reload"]


async def test_files_the_code_does_not_name_never_reload_it(
    tmp_path: Path,
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    caplog: pytest.LogCaptureFixture,
    reload_lines: Callable[[], list[str]],
) -> None:
    # The worker's own log written into the project's folders: each "reload refused" line
    # must not be a change that loads the refused code again (and logs it again).
    project = make_project(tmp_path)
    logs = [
        logging.FileHandler(tmp_path / "worker.log"),
        logging.FileHandler(project.file("a.log")),
    ]
    for handler in logs:
        logging.getLogger("openrtc").addHandler(handler)
    pool = project.load()
    recorder = recorded(pool)
    try:
        async with openrtc_worker(pool, reload=True):
            await started(pool)
            caplog.clear()
            project.edit("support.py", lambda s: s.replace("(Agent):", "(Agent)"))
            await recorder.wait_for("rejected")
            save(project.file("support.py"), project.read("support.py"))  # saved again as is
            # Meanwhile the app writes its own files all over its folder.
            (tmp_path / "out").mkdir()
            for n in range(20):
                for k in range(25):
                    (tmp_path / "out" / f"{n}-{k}.json").write_text("{}")
                (tmp_path / f"notes-{n}.md").write_text("notes")
                project.file(f"cache-{n}.json").write_text("{}")
                with project.file("a.log").open("a") as log:
                    log.write(f"line {n}\n")
                await asyncio.sleep(0.05)
            project.edit(
                "support.py", lambda s: s.replace("(Agent)", "(Agent):").replace("v1", "v2")
            )
            applied = await recorder.wait_for("applied")
    finally:
        for handler in logs:
            logging.getLogger("openrtc").removeHandler(handler)
            handler.close()
    assert recorder.kinds() == ["rejected", "applied"]
    assert [Path(f).name for f in applied.files] == ["support.py"], applied.files
    # One refusal; the same files saved again are not loaded again; no other load was tried.
    lines = reload_lines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("reload refused") and lines[2].startswith("reload applied")
    assert "the files are still the refused save" in lines[1]


async def test_a_helper_and_a_data_file_the_code_names_reload_it_and_their_neighbours_do_not(
    tmp_path: Path,
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    caplog: pytest.LogCaptureFixture,
    reload_lines: Callable[[], list[str]],
) -> None:
    project = make_project(tmp_path)
    (project.folder / "tools").mkdir()
    project.write("tools/__init__.py", "")
    project.write(
        "tools/lookup.py",
        """
        from pathlib import Path

        ROOT = Path(__file__).resolve().parents[2]


        def setting() -> str:
            return "lookup-1 " + (ROOT / "config/agent.toml").read_text().strip()
        """,
    )
    project.edit(
        "helpers.py",
        lambda s: s.replace(
            "from pathlib import Path",
            f"from pathlib import Path\n\nfrom {project.package}.tools.lookup import setting",
        ).replace(".read_text().strip()", '.read_text().strip() + " " + setting()'),
    )
    config = tmp_path / "config"
    config.mkdir()
    (config / "agent.toml").write_text('mood = "calm"\n')
    (config / "other.toml").write_text("unused = 1\n")
    pool = project.load()
    recorder = recorded(pool)
    async with openrtc_worker(pool, reload=True):
        first = await started(pool)
        caplog.clear()
        (config / "other.toml").write_text("unused = 2\n")  # no code names it
        (config / "agent.toml").write_text('mood = "cheerful"\n')
        by_data = await recorder.wait_for("applied")
        project.edit("tools/lookup.py", lambda s: s.replace("lookup-1", "lookup-2"))
        by_helper = await recorder.wait_for("applied", count=2)
        _, late = await simulate_call(
            openrtc_dispatch, "late", agent="support", turns=["hi"], timeout=60
        )
    assert [Path(f).name for f in by_data.files] == ["agent.toml"], by_data.files
    assert [Path(f).name for f in by_helper.files] == ["lookup.py"], by_helper.files
    assert by_data.agents == by_helper.agents == ("support",)
    assert first != by_data.versions["support"] != by_helper.versions["support"]
    assert 'lookup-2 mood = "cheerful"' in late["turns"][0]["reply"], late
    assert len(reload_lines()) == 2, reload_lines()


async def test_a_module_the_code_starts_importing_is_watched_and_one_it_drops_is_not(
    tmp_path: Path,
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    caplog: pytest.LogCaptureFixture,
    reload_lines: Callable[[], list[str]],
) -> None:
    project = make_project(tmp_path)
    pool = project.load()
    recorder = recorded(pool)
    uses_extra = f"from {project.package}.extra import EXTRA\nTAG = EXTRA"
    async with openrtc_worker(pool, reload=True):
        await started(pool)
        caplog.clear()
        # Saved before the module it imports exists: refused, until that module is written.
        project.edit("support.py", lambda s: s.replace('TAG = "v1"', uses_extra))
        await recorder.wait_for("rejected")
        project.write("extra.py", 'EXTRA = "x1"\n')
        await recorder.wait_for("applied")
        project.edit("extra.py", lambda s: s.replace("x1", "x2"))
        edited = await recorder.wait_for("applied", count=2)
        project.edit("support.py", lambda s: s.replace(uses_extra, 'TAG = "v3"'))
        await recorder.wait_for("applied", count=3)
        project.edit("extra.py", lambda s: s.replace("x2", "x3"))  # no longer imported
        project.edit("helpers.py", lambda s: s.replace("helper-1", "helper-2"))
        last = await recorder.wait_for("applied", count=4)
        _, late = await simulate_call(
            openrtc_dispatch, "late", agent="support", turns=["hi"], timeout=60
        )
    assert [Path(f).name for f in edited.files] == ["extra.py"], edited.files
    assert [Path(f).name for f in last.files] == ["helpers.py"], last.files
    assert recorder.kinds() == ["rejected", *["applied"] * 4]
    assert len(reload_lines()) == 5, reload_lines()
    assert late["turns"][0]["reply"].startswith("v3 ") and "helper-2" in late["turns"][0]["reply"]


UNRELATED_FILES = 50_000


async def test_a_virtualenv_in_the_project_folder_is_neither_watched_nor_listed(
    tmp_path: Path,
    openrtc_dispatch: LoopbackDispatchServer,
    openrtc_worker: Any,
    caplog: pytest.LogCaptureFixture,
    reload_lines: Callable[[], list[str]],
) -> None:
    project = make_project(tmp_path)
    venv = virtualenv_like(tmp_path, UNRELATED_FILES)
    packages = sorted((venv / "lib" / "python3.11" / "site-packages").iterdir())
    pool = project.load()
    recorder = recorded(pool)

    def write_into_the_venv(text: str) -> None:
        for package in packages[::10]:
            (package / "module_00.py").write_text(text)
            (package / "new_module.py").write_text(text)
        (venv / "pyvenv.cfg").write_text(text)

    async with openrtc_worker(pool, reload=True):
        await started(pool)
        watching = reload_lines()
        caplog.clear()
        write_into_the_venv("# 1\n")
        project.edit("helpers.py", lambda s: s.replace("helper-1", "helper-2"))
        await recorder.wait_for("applied")
        write_into_the_venv("# 2\n")  # the watcher is surely running by now
        project.edit("support.py", lambda s: s.replace('TAG = "v1"', 'TAG = "v2"'))
        applied = await recorder.wait_for("applied", count=2)
        _, late = await simulate_call(
            openrtc_dispatch, "late", agent="support", turns=["hi"], timeout=60
        )
    assert [Path(f).name for f in applied.files] == ["support.py"], applied.files
    assert len(reload_lines()) == 2, reload_lines()
    assert watching and not any("venv" in line for line in watching), watching
    assert late["turns"][0]["reply"].startswith("v2 ") and "helper-2" in late["turns"][0]["reply"]
