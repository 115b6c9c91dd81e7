"""The controller: runs generations of workers, promotes a new one when all its workers are
registered, drains the old one call by call.

One thread and a selector, like openrtc-workers' supervisor: the control socket and its
clients, each generation's status pipe and stderr, a signal wake-up pipe. It never forks
workers itself and never connects to LiveKit: each generation is the same command run
again (:attr:`RunContext.command`) as openrtc-workers' supervisor, so it loads the
code now on disk and runs its own prewarm.

At most two generations hold calls at once: a deploy asked for while an old generation
still drains waits for it, and one asked for while a new generation is still starting
replaces it (the starting one is drained, never promoted).

Like PID 1, it stays up whatever happens below it or comes over its socket. A serving
generation whose supervisor dies (SIGKILL, the OOM killer) is replaced at once by the last
good code (the version of the generation that last became ready), with a growing delay when
replacements keep dying (:mod:`.restarts`); if a deploy's generation is already starting
then, that one takes over instead, and the last good code restarts only if it fails. The
dead supervisor's workers become the controller's children (it is their subreaper): they
drain their calls on their own, and the controller waits for them.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import selectors
import signal
import socket
import time
from typing import Any, Final

import attrs

from openrtc_core import (
    DeployVersion,
    OpenRTCError,
    PoolConfigError,
    RunContext,
    exit_reason,
)
from openrtc_workers import GAVE_UP, READY, SignalInbox, WorkerPlan

from .client import control_path, ready_timeout_error
from .control import (
    ACCEPTS_PER_TURN,
    IDLE_TIMEOUT_S,
    MAX_CONNECTIONS,
    Client,
    Request,
    close,
    listen,
    peer_allowed,
    remove,
    turn_away,
)
from .generation import Generation, State, adopt_orphans, spawn
from .restarts import RestartBackoff

logger = logging.getLogger("openrtc.deploy")

READY_TIMEOUT_ENV: Final = "OPENRTC_READY_TIMEOUT"
DEFAULT_READY_TIMEOUT_S: Final = 180.0
HISTORY: Final = 10
"""Generations kept in ``--status`` after they exited."""
PORT_BLOCK_WORKERS: Final = 8
"""Health ports per worker slot a generation may use (its replacements while one drains)."""
_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
_TURNED_AWAY_LOG_S: Final = 10.0
"""At most one warning this often about connections turned away."""


@attrs.define(eq=False)
class Restart:
    """A generation that died while it served (or a replacement that failed to start), and
    the one started in its place."""

    number: int
    """The dead generation's number."""
    died: str
    reason: str
    delay_s: float
    at: float = attrs.field(factory=time.monotonic)
    at_wall: float = attrs.field(factory=time.time)
    replacement: int | None = None
    """The number of the generation started in its place (None until it starts)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "generation": self.number,
            "died": self.died,
            "reason": self.reason,
            "at": self.at_wall,
            "delay_s": self.delay_s,
            "replacement": self.replacement,
        }


@attrs.define(eq=False)
class Deploy:
    """One request for a new generation, and who waits for its outcome."""

    version: str | None
    """The version asked for; None resolves the code on disk when the generation starts."""
    ready_timeout: float
    clients: list[Client] = attrs.field(factory=list)
    wait_drain: list[Client] = attrs.field(factory=list)
    """Clients that also wait for the previous generation's drain to end."""
    generation: Generation | None = None
    drained: list[Generation] = attrs.field(factory=list)
    """The generations this deploy put to draining."""
    restart: Restart | None = None
    """Set when the controller asked for it, to replace a generation that died."""
    not_before: float = 0.0
    """It starts no earlier (a restart's backoff)."""

    def progress(self, text: str) -> None:
        for client in [*self.clients, *self.wait_drain]:
            client.progress(text)

    def answer(self, *, ok: bool, message: str, **fields: Any) -> None:
        for client in [*self.clients, *self.wait_drain]:
            client.answer(ok=ok, message=message, **fields)
        self.clients.clear()
        self.wait_drain.clear()


class DeployController:
    """Runs every ``start`` as generations (see the module's docstring)."""

    def __init__(self, context: RunContext) -> None:
        if "workers" not in context.options:
            raise PoolConfigError(
                "openrtc-deploy runs each generation under openrtc-workers' supervisor, "
                "which is not loaded (is it disabled by OPENRTC_DISABLE_PLUGINS?); enable it, "
                "or disable deploy as well"
            )
        self.context = context
        self.plan = WorkerPlan.from_options(context.options)
        control = context.options.get("control")
        self.path = control_path(None if control is None else str(control))
        raw = os.environ.get(READY_TIMEOUT_ENV, "").strip()
        self.ready_timeout = _seconds(raw, READY_TIMEOUT_ENV) if raw else DEFAULT_READY_TIMEOUT_S
        self.generations: collections.deque[Generation] = collections.deque(maxlen=HISTORY)
        """The live generations and the last ones that exited, oldest first."""
        self._number = 0
        self.pending: Deploy | None = None
        self.deploying: Deploy | None = None
        self._drainers: list[Client] = []
        self._clients: dict[int, Client] = {}
        self._selector = selectors.DefaultSelector()
        self._inbox = SignalInbox(*_STOP_SIGNALS, signal.SIGHUP, signal.SIGCHLD)
        self._stopping = False
        self._forced = False
        self._signalled = False
        """A stop signal came: the next one stops every generation at once."""
        self._failed = False
        self._drain_waits: list[Deploy] = []
        """Deploys whose clients wait for the generations they drained to exit."""
        self.last_good: Generation | None = None
        """The generation that last became ready: what a restart runs again."""
        self.backoff = RestartBackoff()
        self.restarts: collections.deque[Restart] = collections.deque(maxlen=HISTORY)
        self.restart_count = 0
        self.orphaned: list[Generation] = []
        """Dead generations whose workers still drain (kept apart from the history, which
        a crash loop could run through)."""
        self._turned_away_at = -math.inf

    # -- the main loop -------------------------------------------------------------------------

    def run(self) -> int:
        server = listen(self.path)
        logger.info(
            "deploy controller (pid %d) listening on %s: `openrtc deploy --control %s` or "
            "SIGHUP starts a new generation from the code on disk",
            os.getpid(),
            self.path,
            self.path,
        )
        if not adopt_orphans():
            logger.warning(
                "cannot become the subreaper of the generations' workers: when a generation's "
                "supervisor dies, its workers' calls are reported lost at once"
            )
        try:
            with self._inbox.installed(self._selector):
                self._selector.register(server, selectors.EVENT_READ, data=server)
                self.pending = Deploy(version=None, ready_timeout=self.ready_timeout)
                self._advance()
                while self._live() or self.orphaned or self.pending is not None:
                    self._wait()
                    self._handle_signals()
                    self._reap()
                    self._check_deadlines()
                    self._advance()  # a restart whose backoff is over
                    self._check_serving()
                    self._expire_clients()
                    self._flush_clients()
                self._finish_clients()
        finally:
            remove(self.path, server)
        return self._status()

    def _live(self) -> list[Generation]:
        return [g for g in self.generations if g.exited_at is None]

    def _in(self, *states: State) -> list[Generation]:
        return [g for g in self._live() if g.state in states]

    def _status(self) -> int:
        if self._forced or self._failed:
            return 1
        logger.info("every generation has exited; controller exiting")
        return 0

    def _wait(self) -> None:
        deadlines = [g.started_at + self._ready_timeout(g) for g in self._in(State.STARTING)]
        if self.pending is not None and self.pending.not_before:
            deadlines.append(self.pending.not_before)
        deadlines += [at for c in self._clients.values() if (at := c.expires_at()) is not None]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        for key, mask in self._selector.select(timeout):
            data = key.data
            if key.fd == self._inbox.read_fd:
                self._inbox.woke()
            elif isinstance(data, socket.socket):
                self._accept(data)
            elif isinstance(data, Client):
                self._serve(data, mask)
            elif isinstance(data, tuple):
                generation, kind = data
                if kind == "status":
                    self._read_status(generation)
                else:
                    generation.log.read()
                    if generation.log.ended:
                        self._unregister(generation.log.fd)
                        if generation.exited_at is not None:
                            generation.log.close()

    def _ready_timeout(self, generation: Generation) -> float:
        deploy = self.deploying
        if deploy is not None and deploy.generation is generation:
            return deploy.ready_timeout
        return self.ready_timeout

    def _handle_signals(self) -> None:
        for sig in self._inbox.take():
            if sig == signal.SIGHUP:
                logger.info("SIGHUP: deploying the code on disk")
                self.request_deploy(None, None)
            elif sig in _STOP_SIGNALS:
                self.stop(signal.Signals(sig).name, by_signal=True)

    # -- deploys -------------------------------------------------------------------------------

    def request_deploy(
        self,
        version: str | None,
        client: Client | None,
        *,
        ready_timeout: float | None = None,
        wait_drain: bool = False,
    ) -> None:
        """Start a new generation (see the module's docstring for when)."""
        if self._stopping:
            if client is not None:
                client.answer(ok=False, message="the controller is draining; no new deploy")
            return
        deploy = Deploy(version=version, ready_timeout=ready_timeout or self.ready_timeout)
        if client is not None:
            (deploy.wait_drain if wait_drain else deploy.clients).append(client)
        if self.pending is not None:
            self.pending.answer(
                ok=False, message="a later deploy replaced this one", superseded=True
            )
        self.pending = deploy  # first: a generation failed next is not the last hope
        for starting in self._in(State.STARTING):
            self._fail(starting, "a later deploy replaced it before it was ready")
        self._advance()

    def _advance(self) -> None:
        """Start the pending deploy's generation once no generation other than the serving
        one is alive (at most two generations hold calls)."""
        deploy = self.pending
        if deploy is None or self._stopping or deploy.not_before > time.monotonic():
            return
        busy = self._in(State.STARTING)
        if self._in(State.SERVING):  # with none serving, nothing waits for a drain
            busy += [*self._in(State.DRAINING, State.FAILED), *self.orphaned]
        if busy:
            calls = sum(len(g.calls) for g in busy)
            deploy.progress(
                f"waiting for {', '.join(g.name() for g in busy)} to finish ({calls} live "
                "call(s)); at most two generations hold calls at once"
            )
            return
        self.pending = None
        try:
            version = self._version_for(deploy)
        except OpenRTCError as exc:
            deploy.answer(ok=False, message=str(exc))
            if not self._in(State.SERVING):
                logger.error("%s", exc)
                if self.last_good is None:
                    self._failed = True
                else:
                    self._restart(None, f"could not start: {exc}")
            return
        self._number += 1
        generation = spawn(
            self._number, version, self.context.command, port_offset=self._port_offset()
        )
        generation.disk = version.value if version.source in ("git", "content") else None
        if deploy.restart is not None:
            generation.restart_of = deploy.restart.number
            deploy.restart.replacement = generation.number
        self.generations.append(generation)
        deploy.generation = generation
        self.deploying = deploy
        self._selector.register(
            generation.status.fd, selectors.EVENT_READ, data=(generation, "status")
        )
        self._selector.register(generation.log.fd, selectors.EVENT_READ, data=(generation, "log"))
        said = (
            f"{generation.name()} starting (pid {generation.pid}; version from "
            f"{version.source}); the current generation serves until all its workers register"
            if deploy.restart is None
            else f"{generation.name()} starting (pid {generation.pid}) in place of "
            f"{deploy.restart.died}, with the last good code"
        )
        logger.info("%s", said)
        deploy.progress(said)

    def _version_for(self, deploy: Deploy) -> DeployVersion:
        # The first generation runs the version this process resolved (and exported); later
        # ones the code on disk when they start, unless the deploy names one.
        if deploy.restart is not None and self.last_good is not None:
            return self._last_good_version(self.last_good)
        first = self._number == 0 and deploy.version is None
        return self.context.resolve_version(deploy.version, use_env=first)

    def _last_good_version(self, good: Generation) -> DeployVersion:
        """A restart runs the command again, so it loads the code on disk: the last good
        generation's version while the disk still holds that code, else the disk's own
        version (said loudly: the restart runs code that never served)."""
        if good.disk is None:
            return good.version  # named by flag or env: the disk's version is not known
        try:
            now = self.context.resolve_version(None, use_env=False)
        except OpenRTCError:
            return good.version
        if now.value != good.disk:
            logger.warning(
                "the code on disk changed since %s started (%s then, %s now): the restart "
                "runs the code now on disk",
                good.name(),
                good.disk,
                now.value,
            )
            return now
        return good.version

    def _port_offset(self) -> int:
        used = {g.port_offset for g in [*self._live(), *self.orphaned]}
        block = PORT_BLOCK_WORKERS * self.plan.count
        return next(b * block for b in range(len(used) + 1) if b * block not in used)

    def _read_status(self, generation: Generation) -> None:
        for note in generation.read_status():
            if note == READY:
                self._promote(generation)
            elif note == GAVE_UP:
                if generation.state is State.STARTING:
                    self._fail(generation, generation.gave_up)
                else:
                    logger.error("%s: %s", generation.name(), generation.gave_up)
            else:
                logger.debug("%s", note)  # the generation's own supervisor logs it too
                if self.deploying is not None and self.deploying.generation is generation:
                    self.deploying.progress(note)
        if generation.status.ended:
            self._unregister(generation.status.fd)

    def _promote(self, generation: Generation) -> None:
        if generation.state is not State.STARTING:
            return
        generation.state = State.SERVING
        generation.ready_at = time.monotonic()
        self.last_good = generation
        olds = [g for g in self._in(State.SERVING) if g is not generation]
        for old in olds:
            self._drain(old, f"{generation.name()} took over")
        took = generation.ready_at - generation.started_at
        draining = "; ".join(f"{g.name()} drains {g.drain_calls} live call(s)" for g in olds)
        said = f"{generation.name()} is serving, ready in {took:.1f} s" + (
            f"; {draining}" if draining else ""
        )
        replaced = [r for r in self.restarts if r.replacement == generation.number]
        if replaced:
            said += (
                f"; it replaces {replaced[-1].died}, "
                f"{generation.ready_at - replaced[-1].at:.1f} s after that one died"
            )
        logger.info("%s", said)
        deploy = self.deploying
        if deploy is not None and deploy.generation is generation:
            self.deploying = None
            deploy.drained = olds
            for client in deploy.clients:
                client.answer(ok=True, message=said, status=self.status())
            deploy.clients.clear()
            if deploy.wait_drain:
                deploy.progress(said)
                if not olds:
                    deploy.answer(ok=True, message=said, status=self.status())
                else:
                    self._drain_waits.append(deploy)
        self._advance()

    def _drain(self, generation: Generation, why: str) -> None:
        generation.state = State.DRAINING
        generation.drain_started_at = time.monotonic()
        generation.drain_calls = len(generation.calls)
        logger.info(
            "%s drains (%s): %d live call(s) finish on it, no new call reaches it",
            generation.name(),
            why,
            generation.drain_calls,
        )
        generation.signal(signal.SIGTERM)

    def _fail(self, generation: Generation, reason: str) -> None:
        """A starting generation that will never serve: say why and drain it."""
        if generation.state is not State.STARTING:
            return
        generation.state = State.FAILED
        generation.failure = reason
        generation.signal(signal.SIGTERM)
        serving = self._in(State.SERVING)
        if self._stopping:
            keeps = "; every generation drains"
        elif serving:
            keeps = f"; {serving[0].name()} keeps serving"
        else:
            keeps = "; no generation is serving"
        message = f"{generation.name()} failed: {reason}{keeps}"
        logger.error("%s", message)
        deploy = self.deploying
        if deploy is not None and deploy.generation is generation:
            self.deploying = None
            deploy.answer(ok=False, message=message, status=self.status())
        if not serving and self.pending is None and not self._stopping:
            if self.last_good is None:
                self._failed = True  # nothing ever served and nothing comes: the start failed
            else:
                self._restart(generation, f"failed: {reason}")

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for generation in self._in(State.STARTING):
            timeout = self._ready_timeout(generation)
            if now - generation.started_at >= timeout:
                generation.log.read()
                said = generation.log.reason()
                self._fail(
                    generation,
                    f"not ready within {timeout:g} s: {generation.registered_count()} of "
                    f"{self.plan.count} worker(s) registered with LiveKit"
                    + (f"; last error: {said}" if said else ""),
                )

    def _check_serving(self) -> None:
        """Stop when nothing serves and nothing is on its way."""
        if self._stopping or self.pending is not None:
            return
        if not self._in(State.SERVING, State.STARTING):
            self._failed = True
            self.stop("no generation is serving")

    # -- generations that exit -----------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            generation = next((g for g in self._live() if g.pid == pid), None)
            if generation is not None:
                generation.process.returncode = os.waitstatus_to_exitcode(status)
                self._exited(generation, status)
                continue
            orphaned = next((g for g in self.orphaned if pid in g.orphans), None)
            if orphaned is not None:
                self._orphan_exited(orphaned, pid, status)

    def _exited(self, generation: Generation, status: int) -> None:
        was = generation.state
        self._unregister(generation.status.fd)
        generation.read_status()
        generation.log.read()
        if generation.log.ended:
            self._unregister(generation.log.fd)
        if was is State.STARTING:
            self._fail(generation, generation.log.reason() or "it exited before it was ready")
        died = was is State.SERVING and not self._stopping
        generation.exited(status, died=died)
        name, reason = generation.name(), generation.exit
        cut = _calls(generation.cut)
        if generation.orphans:  # killed while its workers lived: they drain on their own
            self.orphaned.append(generation)
        if died:
            logger.error(
                "%s exited unexpectedly (%s)%s%s",
                name,
                reason,
                f"; calls lost with their workers: {_calls(generation.lost)}"
                if generation.lost
                else "",
                f"; {len(generation.orphans)} of its workers drain {len(generation.calls)} "
                "live call(s) on their own"
                if generation.orphans
                else "",
            )
            self._replace(generation)
        elif was in (State.DRAINING, State.SERVING):
            log = logger.error if generation.cut or generation.lost else logger.info
            log(
                "%s finished draining (%s): took %d call(s)%s",
                name,
                reason,
                generation.taken,
                f"; the drain timeout cut {len(generation.cut)}: {cut}" if cut else ", none cut",
            )
            if generation.cut or generation.process.returncode:
                self._failed = self._failed or self._stopping
        else:
            logger.info("%s exited (%s)", name, reason)
        for deploy in [d for d in self._drain_waits if generation in d.drained]:
            if all(g.exited_at is not None for g in deploy.drained):
                self._drain_waits.remove(deploy)
                cut_all = {j: a for g in deploy.drained for j, a in g.cut.items()}
                deploy.answer(
                    ok=not cut_all,
                    message=(
                        f"the previous generation finished draining; cut: {_calls(cut_all)}"
                        if cut_all
                        else "the previous generation finished draining; no call was cut"
                    ),
                    status=self.status(),
                )
        self._advance()

    def _orphan_exited(self, generation: Generation, pid: int, status: int) -> None:
        index = generation.orphans.get(pid, 0)
        lost = generation.orphan_exited(pid, status)
        (logger.error if lost else logger.info)(
            "%s: worker %d (pid %d), left draining when its supervisor died, exited (%s)%s",
            generation.name(),
            index,
            pid,
            exit_reason(os.waitstatus_to_exitcode(status)),
            f"; calls lost: {_calls(lost)}" if lost else "; its calls ended",
        )
        if not generation.orphans:
            self.orphaned.remove(generation)
            self._advance()  # a deploy may have waited for them

    # -- restarts ------------------------------------------------------------------------------

    def _replace(self, dead: Generation) -> None:
        """The serving generation died: what takes its place (see the module's docstring)."""
        starting = self._in(State.STARTING)
        if not starting:
            self._restart(dead, dead.exit)
            return
        # A deploy's generation is on its way: it takes over when ready. Starting the old
        # code beside it would put two starts on a host that may just have run out of memory.
        served = (dead.exited_at or 0.0) - (dead.ready_at or 0.0)
        self.backoff.delay(time.monotonic(), served)
        restart = Restart(
            number=dead.number,
            died=dead.name(),
            reason=dead.exit,
            delay_s=0.0,
            replacement=starting[0].number,
        )
        self.restarts.append(restart)
        self.restart_count += 1
        said = (
            f"{dead.name()} died ({dead.exit}); {starting[0].name()}, starting for a deploy, "
            "takes over when ready (the last good code restarts if it fails)"
        )
        logger.error("%s", said)
        if self.deploying is not None:
            self.deploying.progress(said)

    def _restart(self, dead: Generation | None, reason: str) -> None:
        """Start the last good code again, after the backoff's delay."""
        good = self.last_good
        if good is None or self._stopping:
            return
        now = time.monotonic()
        served = None
        if dead is not None and dead.ready_at is not None:
            served = (dead.exited_at or now) - dead.ready_at
        delay = self.backoff.delay(now, served)
        restart = Restart(
            number=dead.number if dead is not None else 0,
            died=dead.name() if dead is not None else "the deploy",
            reason=reason,
            delay_s=delay,
        )
        self.restarts.append(restart)
        self.restart_count += 1
        when = "at once" if delay == 0 else f"in {delay:g} s"
        if self.pending is not None:
            logger.error("%s (%s); the deploy asked for starts instead", restart.died, reason)
        else:
            self.pending = Deploy(
                version=None,
                ready_timeout=self.ready_timeout,
                restart=restart,
                not_before=now + delay,
            )
            logger.error(
                "%s (%s): starting the last good code (%s) in its place %s",
                restart.died,
                reason,
                good.version.value,
                when,
            )
        if self.backoff.crash_looping(now):
            logger.critical(
                "generations keep dying: %d deaths within %g s; the controller keeps starting "
                "the last good code, waiting up to %g s between tries, until one serves (see "
                "the errors above; `openrtc deploy` with fixed code starts one at once)",
                self.backoff.recent(now),
                self.backoff.window_s,
                self.backoff.max_delay_s,
            )
        self._advance()

    # -- stopping ------------------------------------------------------------------------------

    def stop(self, why: str, *, by_signal: bool = False) -> None:
        """Drain every generation; a second stop signal stops them at once (a drain asked
        over the socket first does not count as one: a preStop hook's drain followed by
        the kubelet's SIGTERM must not cut calls)."""
        if by_signal:
            second, self._signalled = self._signalled, True
            if self._stopping and second and not self._forced:
                self._forced = True
                logger.warning("%s again: stopping every generation at once", why)
                for generation in self._live():
                    # SIGINT, not SIGTERM again: two pending SIGTERMs merge into one.
                    generation.signal(signal.SIGINT)  # its second signal: kill its workers
                for pid in [pid for g in self.orphaned for pid in g.orphans]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGINT)  # our children until reaped: safe
                return
        if self._stopping:
            return
        self._stopping = True
        calls = sum(len(g.calls) for g in self._live())
        logger.info("%s: draining every generation (%d live call(s))", why, calls)
        if self.pending is not None:
            self.pending.answer(ok=False, message=f"the controller is draining ({why})")
            self.pending = None
        for generation in self._in(State.STARTING):
            self._fail(generation, f"the controller is draining ({why})")
        for generation in self._in(State.SERVING):
            self._drain(generation, why)

    # -- the control socket --------------------------------------------------------------------

    def _accept(self, server: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_TURN):  # the rest wait for the next turn
            try:
                conn, _ = server.accept()
            except OSError:
                return
            if not peer_allowed(conn):
                conn.close()
                logger.warning("refused a control connection from another user")
                continue
            if len(self._clients) >= MAX_CONNECTIONS:
                turn_away(
                    conn,
                    f"the controller has {MAX_CONNECTIONS} control connections open; try again",
                )
                now = time.monotonic()
                if now - self._turned_away_at > _TURNED_AWAY_LOG_S:
                    self._turned_away_at = now
                    logger.warning(
                        "turning control connections away: %d are open (the most it keeps)",
                        MAX_CONNECTIONS,
                    )
                continue
            conn.setblocking(False)
            client = Client(conn)
            self._clients[conn.fileno()] = client
            self._selector.register(conn, selectors.EVENT_READ, data=client)

    def _serve(self, client: Client, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            request = client.receive()
            if client.ended:
                self._close(client)
                return
            if request is not None:
                try:
                    self._handle(client, request)
                except Exception:
                    # The controller outlives any request: a bug in serving one fails that one.
                    logger.exception("serving the control request %r failed", request.op)
                    client.answer(
                        ok=False,
                        message=f"the controller failed to serve {request.op!r}; see its log",
                    )
        if mask & selectors.EVENT_WRITE and client.flush():
            self._close(client)

    def _handle(self, client: Client, request: Request) -> None:
        op = request.op
        if op == "status":
            client.answer(ok=True, message="", status=self.status())
        elif op == "ready":
            ready = self.ready()
            client.answer(ok=ready, message=self._readiness())
        elif op == "alive":
            client.answer(ok=True, message=f"controller pid {os.getpid()} answers")
        elif op == "deploy":
            if request.version is not None:
                try:
                    self.context.resolve_version(request.version)
                except OpenRTCError as exc:
                    client.answer(ok=False, message=str(exc))
                    return
            self.request_deploy(
                request.version,
                client,
                ready_timeout=request.ready_timeout,
                wait_drain=request.wait,
            )
        elif op == "drain":
            self._drainers.append(client)
            client.progress(
                f"draining: {sum(len(g.calls) for g in self._live())} live call(s) finish first"
            )
            self.stop("drain asked over the control socket")

    def _expire_clients(self) -> None:
        now = time.monotonic()
        for client in list(self._clients.values()):
            expires = client.expires_at()
            if expires is None or now < expires:
                continue
            if client.asked:
                self._close(client)  # it does not read its answers
            else:
                client.refuse(
                    f"no request line within {IDLE_TIMEOUT_S:g} s: send one JSON object and a "
                    "newline"
                )

    def _close(self, client: Client) -> None:
        self._unregister(client.sock)
        self._clients.pop(client.sock.fileno(), None)
        close(client.sock)

    def _unregister(self, what: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(what)

    def _flush_clients(self) -> None:
        for client in list(self._clients.values()):
            if client.flush():
                self._close(client)
                continue
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.outbox else 0)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.modify(client.sock, wanted, data=client)

    def _finish_clients(self) -> None:
        """Answer those still waiting (drain callers) and send what is queued, briefly."""
        cut = {j: a for g in self.generations for j, a in g.cut.items()}
        for client in self._drainers:
            if not client.closing:
                client.answer(
                    ok=not cut and not self._forced,
                    message=(
                        f"drained; the drain timeout cut {len(cut)} call(s): {_calls(cut)}"
                        if cut
                        else "drained; every call finished"
                    ),
                )
        for deploy in self._drain_waits:
            deploy.answer(ok=False, message="the controller stopped")
        deadline = time.monotonic() + 2.0
        for client in list(self._clients.values()):
            client.sock.setblocking(True)
            client.sock.settimeout(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(OSError):
                client.sock.sendall(client.outbox)
            client.sock.close()
        self._clients.clear()

    # -- what it tells -------------------------------------------------------------------------

    def ready(self) -> bool:
        return not self._stopping and bool(self._in(State.SERVING))

    def _readiness(self) -> str:
        if self._stopping:
            return "not ready: draining"
        serving = self._in(State.SERVING)
        if serving:
            return f"ready: {serving[0].name()} serving"
        return "not ready: no generation has all its workers registered yet"

    def status(self) -> dict[str, Any]:
        serving = bool(self._in(State.SERVING))
        if self._stopping:
            state = "draining"
        elif not serving:
            # the first generation is on its way, or one replaces a generation that died
            state = "starting" if self.last_good is None else "restarting"
        elif self._in(State.STARTING) or self.pending is not None:
            state = "deploying"
        else:
            state = "serving"
        return {
            "controller_pid": os.getpid(),
            "control": str(self.path),
            "state": state,
            "ready": self.ready(),
            "workers_per_generation": self.plan.count,
            "generations": [g.as_dict() for g in self.generations],
            "restarts": self.restart_count,
            "last_restarts": [r.as_dict() for r in self.restarts],
            "next_restart_in_s": None
            if self.pending is None or self.pending.restart is None
            else round(max(0.0, self.pending.not_before - time.monotonic()), 3),
            "orphaned": [g.as_dict() for g in self.orphaned if g not in self.generations],
        }


def _calls(calls: dict[str, str]) -> str:
    return ", ".join(f"{job} ({agent or 'unrouted'})" for job, agent in sorted(calls.items()))


def _seconds(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    wrong = ready_timeout_error(value)
    if wrong:
        raise OpenRTCError(f"{name}={raw!r}: {wrong}")
    return value
