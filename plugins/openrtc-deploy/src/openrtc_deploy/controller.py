"""The controller: runs generations of workers, promotes a new one when all its workers are
registered, drains the old one call by call.

One thread and a selector, like openrtc-workers' supervisor: the control socket and its
clients, each generation's status pipe and stderr, a signal wake-up pipe. It never forks
workers itself and never connects to LiveKit: each generation is the same command run
again (:attr:`SupervisorContext.command`) as openrtc-workers' supervisor, so it loads the
code now on disk and runs its own prewarm.

At most two generations hold calls at once: a deploy asked for while an old generation
still drains waits for it, and one asked for while a new generation is still starting
replaces it (the starting one is drained, never promoted).
"""

from __future__ import annotations

import collections
import contextlib
import logging
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
    SupervisorContext,
    resolve_deploy_version,
)
from openrtc_workers import GAVE_UP, READY, SignalInbox

from .client import control_path
from .control import Client, listen, peer_allowed, remove
from .generation import GENERATION_SUPERVISOR, Generation, State, spawn

logger = logging.getLogger("openrtc.deploy")

READY_TIMEOUT_ENV: Final = "OPENRTC_READY_TIMEOUT"
DEFAULT_READY_TIMEOUT_S: Final = 180.0
HISTORY: Final = 10
"""Generations kept in ``--status`` after they exited."""
PORT_BLOCK_WORKERS: Final = 8
"""Health ports per worker slot a generation may use (its replacements while one drains)."""
_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


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

    def progress(self, text: str) -> None:
        for client in [*self.clients, *self.wait_drain]:
            client.progress(text)

    def answer(self, *, ok: bool, message: str, **fields: Any) -> None:
        for client in [*self.clients, *self.wait_drain]:
            client.answer(ok=ok, message=message, **fields)
        self.clients.clear()
        self.wait_drain.clear()


class DeployController:
    """The ``deploy`` supervisor (see the module's docstring)."""

    supervises_every_start: Final = True
    """Run ``start`` even with one worker: every start gets generations."""

    def __init__(self, context: SupervisorContext) -> None:
        if GENERATION_SUPERVISOR not in context.pool.plugins.supervisors():
            raise PoolConfigError(
                f"openrtc-deploy runs each generation under openrtc-workers' supervisor "
                f"{GENERATION_SUPERVISOR!r}, which is not loaded (is it disabled by "
                "OPENRTC_DISABLE_PLUGINS?); enable it, or disable deploy as well"
            )
        self.context = context
        self.path = control_path(context.plan.control)
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
        try:
            with self._inbox.installed(self._selector):
                self._selector.register(server, selectors.EVENT_READ, data=server)
                self.pending = Deploy(version=None, ready_timeout=self.ready_timeout)
                self._advance()
                while self._live() or self.pending is not None:
                    self._wait()
                    self._handle_signals()
                    self._reap()
                    self._check_deadlines()
                    self._check_serving()
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
        if deploy is None or self._stopping:
            return
        busy = self._in(State.STARTING, State.DRAINING, State.FAILED)
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
                self._failed = True
            return
        self._number += 1
        generation = spawn(
            self._number, version, self.context.command, port_offset=self._port_offset()
        )
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
        )
        logger.info("%s", said)
        deploy.progress(said)

    def _version_for(self, deploy: Deploy) -> DeployVersion:
        # The first generation runs the version this process resolved (and exported); later
        # ones the code on disk when they start, unless the deploy names one.
        first = self._number == 0 and deploy.version is None
        return resolve_deploy_version(self.context.pool, deploy.version, use_env=first)

    def _port_offset(self) -> int:
        used = {g.port_offset for g in self._live()}
        block = PORT_BLOCK_WORKERS * self.context.plan.count
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
        olds = [g for g in self._in(State.SERVING) if g is not generation]
        for old in olds:
            self._drain(old, f"{generation.name()} took over")
        took = generation.ready_at - generation.started_at
        draining = "; ".join(f"{g.name()} drains {g.drain_calls} live call(s)" for g in olds)
        said = f"{generation.name()} is serving, ready in {took:.1f} s" + (
            f"; {draining}" if draining else ""
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
            self._failed = True  # nothing serves and nothing comes: the start failed

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
                    f"{self.context.plan.count} worker(s) registered with LiveKit"
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
        by_pid = {g.pid: g for g in self._live()}
        while by_pid:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            generation = by_pid.pop(pid, None)
            if generation is not None:
                generation.process.returncode = os.waitstatus_to_exitcode(status)
                self._exited(generation, status)

    def _exited(self, generation: Generation, status: int) -> None:
        was = generation.state
        for fd in (generation.status.fd, generation.log.fd):
            self._unregister(fd)
        generation.read_status()
        generation.log.read()
        if was is State.STARTING:
            self._fail(generation, generation.log.reason() or "it exited before it was ready")
        generation.exited(status)
        name, reason = generation.name(), generation.exit
        cut = _calls(generation.cut)
        if was is State.SERVING and not self._stopping:
            self._failed = True
            logger.error(
                "%s exited unexpectedly (%s)%s", name, reason, cut and f"; calls cut: {cut}"
            )
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
                    generation.signal(signal.SIGTERM)  # its second signal: kill its workers
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
        while True:
            try:
                conn, _ = server.accept()
            except BlockingIOError:
                return
            except OSError:
                return
            if not peer_allowed(conn):
                conn.close()
                logger.warning("refused a control connection from another user")
                continue
            conn.setblocking(False)
            client = Client(conn)
            self._clients[conn.fileno()] = client
            self._selector.register(conn, selectors.EVENT_READ, data=client)

    def _serve(self, client: Client, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            requests = client.requests()
            if requests is None:
                self._close(client)
                return
            for message in requests:
                self._handle(client, message)
        if mask & selectors.EVENT_WRITE and client.flush():
            self._close(client)

    def _handle(self, client: Client, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "status":
            client.answer(ok=True, message="", status=self.status())
        elif op == "ready":
            ready = self.ready()
            client.answer(ok=ready, message=self._readiness())
        elif op == "alive":
            client.answer(ok=True, message=f"controller pid {os.getpid()} answers")
        elif op == "deploy":
            version = message.get("version")
            timeout = message.get("ready_timeout")
            self.request_deploy(
                str(version) if version else None,
                client,
                ready_timeout=float(timeout) if isinstance(timeout, (int, float)) else None,
                wait_drain=bool(message.get("wait")),
            )
        elif op == "drain":
            self._drainers.append(client)
            client.progress(
                f"draining: {sum(len(g.calls) for g in self._live())} live call(s) finish first"
            )
            self.stop("drain asked over the control socket")
        else:
            client.answer(
                ok=False, message=f"unknown op {op!r}: status, ready, alive, deploy, drain"
            )

    def _close(self, client: Client) -> None:
        self._unregister(client.sock)
        self._clients.pop(client.sock.fileno(), None)
        client.sock.close()

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
            state = "starting"  # the first generation is on its way
        elif self._in(State.STARTING) or self.pending is not None:
            state = "deploying"
        else:
            state = "serving"
        return {
            "controller_pid": os.getpid(),
            "control": str(self.path),
            "state": state,
            "ready": self.ready(),
            "workers_per_generation": self.context.plan.count,
            "generations": [g.as_dict() for g in self.generations],
        }


def _calls(calls: dict[str, str]) -> str:
    return ", ".join(f"{job} ({agent or 'unrouted'})" for job, agent in sorted(calls.items()))


def _seconds(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise OpenRTCError(f"{name}={raw!r}: give a number of seconds, more than 0")
    return value
