"""The ``watch`` reload strategy: files change, the pool's code is loaded again, checked, swapped
in, and each live session of a changed agent switches at its next turn boundary.

One :class:`WatchReloader` runs in every process that hosts the pool (see
:mod:`.running`): the worker, and with ``process`` isolation each job process,
which switches its own session. Rollback is per process: the process where new code raised
on a session's first turn puts the previous code back for all of its sessions and new calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import watchfiles
from livekit.agents import AgentSession, llm

from openrtc_core import (
    AgentSpec,
    PoolChange,
    PoolState,
    ReloadEvent,
    ReloadKind,
)

from . import loader
from .code import digest, ignored, library_packages
from .loader import CheckFailed, Load
from .running import ReloadContext
from .switch import LiveCode

logger = logging.getLogger("openrtc.reload")
T = TypeVar("T")

DEBOUNCE_MS = 150
"""Changes closer together than this are one save (an editor writes, renames, touches)."""
ARM_STEP_MS = 200
"""How long the watcher waits before it says it watches (then checks for a stop again)."""
ARM_TIMEOUT_S = 10.0
"""How long a start waits for the watcher to watch before it goes on regardless."""


def shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except (OSError, ValueError):
        return str(path)


def _versions_text(
    before: Mapping[str, str], after: Mapping[str, str], agents: Iterable[str]
) -> str:
    return ", ".join(f"{a} {before.get(a, '-')} → {after.get(a, '-')}" for a in agents)


class WatchReloader:
    """Watches the pool's project files and applies each good change (see module doc)."""

    loaded_at: float | None = None
    """When this process (or the supervisor that forked it) imported the pool's code, set
    from prewarm: a worker or job process running code older than its files loads them
    first."""

    def __init__(self, context: ReloadContext) -> None:
        self.pool = context.pool
        self.role = context.role
        self.loaded: Load | None = None
        self.previous: tuple[Load, PoolState] | None = None
        """The code before the last applied change, while that change is on probation."""
        self.bad: list[Mapping[str, str]] = []
        """Versions that were rolled back: the same files saved again are not applied."""
        self.reloaded: set[tuple[str, str]] = set()
        """(agent, version) pairs that came from a reload (a session starting on one is on
        probation until its first turn completes)."""
        self.live: dict[str, LiveCode] = {}
        self._lock = asyncio.Lock()
        self._stop = threading.Event()
        self._armed = threading.Event()
        """Set once the watching thread watches the files (its first wait returned)."""
        self._thread: threading.Thread | None = None
        self._checked_staleness = False
        self._sending_back: set[asyncio.Future[None]] = set()
        self._refused_files: str | None = None
        """While the files on disk are a refused save: a hash of them, so the same files
        are not loaded (and refused, and logged) again."""

    # -- the Reloader protocol -------------------------------------------------------------

    async def start(self) -> None:
        # Listing installed distributions and the process's modules takes a few hundred
        # ms: not in the loop (both only read).
        await in_daemon_thread(library_packages)
        self.loaded = await in_daemon_thread(loader.current, self.pool)
        ACTIVE.append(self)
        self._thread = threading.Thread(
            target=self._watch,
            args=(asyncio.get_running_loop(),),
            name="openrtc-reload-watch",
            daemon=True,
        )
        self._thread.start()
        # Stamped once the files are watched: a save from then on is seen, and one made
        # before makes the files stale, for the catch-up reload to load.
        if not await in_daemon_thread(self._armed.wait, ARM_TIMEOUT_S):
            logger.warning("reload: the file watcher took over %.0f s to start", ARM_TIMEOUT_S)
        if not self._stale():
            # Else the files' versions are not the running code's: the catch-up reload
            # (below for a worker, before the first job in a job process) stamps them.
            self.pool.stamp_versions(self.loaded.code.versions)
        if self.role == "worker":
            await self._catch_up()
        logger.debug(
            "reload: watching %s for %s (%s)",
            ", ".join(sorted(shown(f) for f in self.loaded.code.folders)) or "nothing",
            ", ".join(f"{a} {v}" for a, v in self.loaded.code.versions.items()),
            self.role,
        )

    async def before_job(self) -> None:
        await self._catch_up()
        async with self._lock:
            pass  # a reload under way finishes before the job is built

    async def _catch_up(self) -> None:
        """Load the files afresh, once, when this process runs code imported before their
        last change: a job process started from an older preload, or a worker forked by a
        supervisor (openrtc-workers) that imported the pool before the save."""
        if self._checked_staleness:
            return
        self._checked_staleness = True
        if self._stale():
            where = "job process" if self.role == "job" else "worker"
            await self.reload((), why=f"this {where} loaded its code before the last change")

    async def aclose(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await in_daemon_thread(self._thread.join, 2.0)
        for live in self.live.values():
            live.close()
        self.live.clear()
        if self in ACTIVE:
            ACTIVE.remove(self)

    # -- watching --------------------------------------------------------------------------

    def _stale(self) -> bool:
        if self.loaded is None or WatchReloader.loaded_at is None:
            return False
        for files in self.loaded.code.files.values():
            for path in files:
                try:
                    if path.stat().st_mtime > WatchReloader.loaded_at:
                        return True
                except OSError:
                    return True
        return False

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """The watching thread: waits on the files, hands each save to the loop and waits
        for it to be applied before looking again (a daemon thread of its own, so a job
        process ends without waiting for it).

        It watches the folders of the files the code is made of, each on its own (what is
        below them is never listed: a virtualenv beside the code costs nothing), and lets
        through only changes to those files (see :meth:`_relevant`)."""
        while not self._stop.is_set():
            assert self.loaded is not None
            watched = self.loaded.code.folders
            folders = sorted(f for f in watched if f.is_dir())
            if not folders:
                self._armed.set()  # nothing to watch: nothing to wait for
                return
            for changes in watchfiles.watch(
                *folders,
                stop_event=self._stop,
                debounce=DEBOUNCE_MS,
                step=50,
                watch_filter=self._relevant,
                recursive=False,
                raise_interrupt=False,
                yield_on_timeout=True,
                rust_timeout=ARM_STEP_MS,
            ):
                self._armed.set()
                if not changes:
                    continue  # a timeout: nothing changed
                paths = sorted({Path(path) for _, path in changes})
                try:
                    asyncio.run_coroutine_threadsafe(self.reload(paths), loop).result()
                except (RuntimeError, concurrent.futures.CancelledError):
                    return  # the loop is closing
                except Exception:
                    logger.exception("reload: applying %s failed", ", ".join(map(shown, paths)))
                if self.loaded.code.folders != watched:
                    break  # the code moved into other folders: watch those

    def _relevant(self, change: watchfiles.Change, path: str) -> bool:
        """Whether a change is one of the code's files: a module or data file of the running
        code (the set is read afresh each time: a reload that imports a new module watches
        it from then on), a module file added to the pool's own folder (a new agent of a
        directory target), or, while the files are a refused save, any module file in the
        watched folders (the module the broken import was waiting for)."""
        code = self.loaded.code if self.loaded is not None else None
        if code is None:
            return False
        file = Path(path)
        if file in code.watched:
            return True
        if file.suffix != ".py" or ignored(Path(file.name)):
            return False
        if file.parent == code.home and not file.name.startswith("_"):
            return True
        return self._refused_files is not None and file.parent in code.folders

    def _files_now(self, changed: Iterable[Path]) -> str:
        """A hash of the code's files and `changed` as they are on disk."""
        assert self.loaded is not None
        return digest(sorted({*self.loaded.code.watched, *(Path(p) for p in changed)}))

    # -- reloading -------------------------------------------------------------------------

    async def reload(self, changed: Iterable[Path], *, why: str = "") -> PoolChange | None:
        """Load the pool's code again and apply it if it passes; None when nothing changed
        or the change was refused."""
        changed = tuple(changed)
        files = tuple(shown(p) for p in changed)
        async with self._lock:
            started = time.perf_counter()
            now = self._files_now(changed)
            if now == self._refused_files:
                logger.debug("reload: %s: the files are still the refused save", files)
                return None
            try:
                load = loader.load_fresh(self.pool)
            except CheckFailed as exc:
                self._refused_files = now
                self._refused(files, str(exc))
                return None
            self._refused_files = None
            versions = dict(load.code.versions)
            if versions in self.bad:
                logger.debug("reload: %s is the code that was rolled back; not applied", versions)
                return None
            assert self.loaded is not None
            before = dict(self.pool.view().agent_versions)
            state = self.pool.capture()
            change = self.pool.adopt(load.pool, versions=versions)
            if change.empty:
                self.pool.restore(state)  # the running code and its modules stay together
                logger.debug("reload: %s changed nothing the pool runs", ", ".join(files) or why)
                return None
            self.previous = (self.loaded, state)
            loader.install(load)
            self.loaded = load
            for name in (*change.code_changed, *change.added):
                self.reloaded.add((name, versions[name]))
            switching = self._switch_sessions(change)
            self._applied(change, files or (why,), before, versions, switching, started)
            return change

    def _switch_sessions(self, change: PoolChange) -> list[str]:
        switching = []
        for live in self.live.values():
            agent = live.entry.info.agent
            if agent in change.code_changed:
                live.request(self.pool.get(agent))
                switching.append(live.job_id)
        return switching

    def _refused(self, files: tuple[str, ...], error: str) -> None:
        versions = dict(self.pool.view().agent_versions)
        log = logger.error if self.role == "worker" else logger.debug
        log(
            "reload refused (%s): %s; every session and new call stays on the running code",
            ", ".join(files) or "files changed",
            error,
        )
        self._event(
            ReloadKind.REJECTED, files=files, versions=versions, previous=versions, error=error
        )

    def _applied(
        self,
        change: PoolChange,
        files: tuple[str, ...],
        before: Mapping[str, str],
        versions: Mapping[str, str],
        switching: list[str],
        started: float,
    ) -> None:
        parts = []
        if change.code_changed:
            parts.append("new code: " + _versions_text(before, versions, change.code_changed))
        if change.added:
            parts.append("added: " + ", ".join(f"{a} {versions[a]}" for a in change.added))
        if change.removed:
            parts.append(
                "removed: " + ", ".join(change.removed) + " (new calls to it are refused; live "
                "ones finish on their code)"
            )
        if change.options_changed:
            parts.append("new options for new calls: " + ", ".join(change.options_changed))
        log = logger.info if self.role == "worker" else logger.debug
        log(
            "reload applied in %.0f ms (%s): %s; %d live session(s) switch at their next turn",
            (time.perf_counter() - started) * 1000,
            ", ".join(files),
            "; ".join(parts),
            len(switching),
        )
        if change.needs_restart:
            logger.warning(
                "reload: %s changed in code; a running worker keeps its settings: restart it "
                "to apply them",
                ", ".join(change.needs_restart),
            )
        self._event(
            ReloadKind.APPLIED,
            agents=(*change.code_changed, *change.added, *change.removed, *change.options_changed),
            files=files,
            versions=versions,
            previous=before,
            sessions=tuple(switching),
        )

    def _event(self, kind: ReloadKind, **fields: Any) -> None:
        self.pool.plugins.code_reloaded(ReloadEvent(kind=kind, **fields))

    # -- live sessions ---------------------------------------------------------------------

    def hosts(self, job_id: str) -> bool:
        # The pool closes a session's entry before the session_ended hooks run: a session
        # this reloader tracks is still its own then, to be forgotten.
        return job_id in self.live or self.pool.sessions.get(job_id) is not None

    def track(self, job_id: str, session: AgentSession[Any]) -> None:
        entry = self.pool.sessions.get(job_id)
        if entry is None or job_id in self.live:
            return
        info = entry.info
        self.live[job_id] = LiveCode(
            entry,
            session,
            on_switched=self._switched,
            probation=(info.agent, info.version) in self.reloaded,
        )

    def forget(self, job_id: str) -> None:
        live = self.live.pop(job_id, None)
        if live is not None:
            live.close()

    def _switched(self, live: LiveCode, before: str, after: str) -> None:
        agent = live.entry.info.agent
        logger.info(
            "session %s (agent %s) switched from version %s to %s",
            live.job_id,
            agent,
            before,
            after,
        )
        self._event(
            ReloadKind.SWITCHED,
            agents=(agent,),
            versions={agent: after},
            previous={agent: before},
            sessions=(live.job_id,),
        )

    def fault(self, job_id: str, error: BaseException) -> bool:
        """New code raised on its first turn in session `job_id`: put the previous code back
        for every session and new call. False when the failure is not new code's."""
        live = self.live.get(job_id)
        if live is None:
            return False
        if live.sent_back or self._on_bad_code(live):
            # A turn of code already rolled back failed: the previous code answers it.
            asyncio.get_running_loop().call_soon(_answer, live.session)
            return True
        if not live.probation or self.previous is None:
            return False
        self._roll_back(live, error, entering=_raised_in(error, "on_enter"))
        return True

    def _on_bad_code(self, live: LiveCode) -> bool:
        agent = live.entry.info.agent
        return any(bad.get(agent) == live.version for bad in self.bad)

    def _roll_back(self, live: LiveCode, error: BaseException, *, entering: bool) -> None:
        assert self.loaded is not None and self.previous is not None
        agent = live.entry.info.agent
        bad = dict(self.loaded.code.versions)
        previous_load, previous_state = self.previous
        self.previous = None
        self.bad.append(bad)
        self.pool.restore(previous_state)
        loader.install(previous_load)
        self.loaded = previous_load
        for other in self.live.values():
            other.pending = None
        going_back = [other for other in self.live.values() if self._on_bad_code(other)]
        restored = dict(self.pool.view().agent_versions)
        message = loader.error_line(error, f"agent {agent!r}")
        log = logger.error if self.role == "worker" or self.live else logger.debug
        log(
            "reload rolled back: version %s of agent %s raised on its first turn in session %s: "
            "%s; %d live session(s) and every new call are back on %s",
            bad.get(agent, "?"),
            agent,
            live.job_id,
            message,
            len(going_back),
            _versions_text(bad, restored, [agent]),
        )
        for other in going_back:
            spec = previous_state.agents.get(other.entry.info.agent)
            task = asyncio.ensure_future(
                self._send_back(other, spec, answer=other is live, entering=entering)
            )
            self._sending_back.add(task)
            task.add_done_callback(self._sending_back.discard)
        self._event(
            ReloadKind.ROLLED_BACK,
            agents=(agent,),
            versions=restored,
            previous=bad,
            sessions=tuple(o.job_id for o in going_back),
            error=message,
        )

    async def _send_back(
        self, live: LiveCode, spec: AgentSpec | None, *, answer: bool, entering: bool
    ) -> None:
        try:
            if not await live.revert(spec):
                return
            if answer and entering:
                # The new on_enter failed: the previous one greets the caller instead.
                await live.session.current_agent.on_enter()
        except Exception:
            logger.exception("session %s could not be sent back to its previous code", live.job_id)
            return
        if answer:
            _answer(live.session)


def _answer(session: AgentSession[Any]) -> None:
    """The failed turn left the caller's last words without a reply: answer them now."""
    if _unanswered(session):
        session.generate_reply()


def _raised_in(error: BaseException, function: str) -> bool:
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == function:
            return True
        tb = tb.tb_next
    return False


def _unanswered(session: AgentSession[Any]) -> bool:
    messages = [i for i in session.history.items if isinstance(i, llm.ChatMessage)]
    return bool(messages) and messages[-1].role == "user"


def in_daemon_thread(function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """`function(*args)` in a daemon thread of its own, awaited from the loop: unlike the
    loop's default executor, it never keeps a job process from exiting."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = function(*args)
        except BaseException as exc:
            outcome: tuple[T | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="openrtc-reload", daemon=True).start()
    return future


ACTIVE: list[WatchReloader] = []
"""The reloaders of this process (one per pool that reloads)."""


def reloader_of(job_id: str) -> WatchReloader | None:
    return next((r for r in ACTIVE if r.hosts(job_id)), None)


def code_imported() -> None:
    """Record that this process has just loaded the pool's code (prewarm)."""
    WatchReloader.loaded_at = time.time()
