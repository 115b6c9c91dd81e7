"""The controller's end of the control socket: a Unix socket only its user may open.

The socket file is created with mode 0600 (and its folder 0700 when the controller creates
it); a connecting process of another user (not root) is refused by its peer credentials as
well. A socket file left by a controller that died is replaced; one that a live controller
answers on is not (two controllers would fight over it).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import struct
import time
from pathlib import Path
from typing import Any, Final

import attrs

from openrtc_core import PoolConfigError

from .client import ready_timeout_error

MAX_REQUEST_BYTES: Final = 64 * 1024
"""A request is one line of at most this many bytes."""
MAX_CONNECTIONS: Final = 64
"""Open control connections at once; one more is answered with an error and closed."""
ACCEPTS_PER_TURN: Final = 16
"""Connections accepted per turn of the controller's loop, so a flood of them cannot hold
the loop away from its generations."""
IDLE_TIMEOUT_S: Final = 10.0
"""A connection that has not sent its request line by then (or does not read its answers
for that long) is answered with an error and closed."""
MAX_OUTBOX_BYTES: Final = 1024 * 1024
"""Answers queued for a client that does not read them; beyond this it is dropped."""
OPS: Final = ("status", "ready", "alive", "deploy", "drain")
_FIELDS: Final = {"deploy": ("version", "ready_timeout", "wait")}
"""The fields each op takes besides ``op`` (the others take none)."""


class RequestError(Exception):
    """A request line that is not a request: the one-line reason its sender gets."""


@attrs.frozen(kw_only=True)
class Request:
    """One request, checked: the op and, for ``deploy``, its options."""

    op: str
    version: str | None = None
    ready_timeout: float | None = None
    wait: bool = False


def parse_request(line: bytes) -> Request:
    """The request in `line` (one JSON object).

    :raises RequestError: anything else, named, whatever the bytes (bad UTF-8 or JSON,
        nesting too deep for the parser, another type, an unknown op or field, a field of
        the wrong type or value).
    """
    try:
        message = json.loads(line)
    except (ValueError, RecursionError) as exc:
        what = "nested too deeply" if isinstance(exc, RecursionError) else "not JSON"
        raise RequestError(
            f'a request is one JSON object on one line, like {{"op": "status"}}; this one is {what}'
        ) from None
    if not isinstance(message, dict):
        raise RequestError(
            f'a request is one JSON object on one line, like {{"op": "status"}}; this one is '
            f"a JSON {type(message).__name__}"
        )
    op = message.get("op")
    if op is None:
        raise RequestError(f"no op: give one of {', '.join(OPS)}")
    if not isinstance(op, str) or op not in OPS:
        shown = _shown(op) if isinstance(op, str) else f"a JSON {type(op).__name__}"
        raise RequestError(f"unknown op {shown}: give one of {', '.join(OPS)}")
    allowed = _FIELDS.get(op, ())
    unknown = sorted(_shown(str(key)) for key in message if key != "op" and key not in allowed)
    if unknown:
        takes = f"takes only {', '.join(allowed)}" if allowed else "takes no other field"
        raise RequestError(f"op {op!r} {takes}; unknown: {', '.join(unknown[:5])}")
    version = message.get("version")
    if version is not None and (not isinstance(version, str) or not version):
        raise RequestError("version: give a non-empty string, like v1.4.2")
    wait = message.get("wait", False)
    if not isinstance(wait, bool):
        raise RequestError("wait: give true or false")
    timeout = message.get("ready_timeout")
    if timeout is not None:
        wrong = ready_timeout_error(timeout)
        if wrong:
            raise RequestError(f"ready_timeout {json.dumps(timeout)[:40]}: {wrong}")
    return Request(
        op=op,
        version=version,
        ready_timeout=None if timeout is None else float(timeout),
        wait=wait,
    )


def _shown(text: str, limit: int = 40) -> str:
    """`text` quoted for an error line, cut to `limit` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def listen(path: Path) -> socket.socket:
    """A non-blocking listening socket at `path`.

    :raises PoolConfigError: another controller answers there, or the path cannot be used.
    """
    folder = path.parent
    if not folder.exists():
        try:
            folder.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise PoolConfigError(f"control socket {path}: cannot create {folder}: {exc}") from None
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise PoolConfigError(
                f"control socket {path}: a file that is not a socket is there; give another "
                "path with --control or OPENRTC_CONTROL"
            )
        if _answers(path):
            raise PoolConfigError(
                f"control socket {path}: another openrtc controller is running there; stop it "
                "or give this one its own path with --control or OPENRTC_CONTROL"
            )
        path.unlink()  # left by a controller that died
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        server.bind(str(path))
    except OSError as exc:
        server.close()
        raise PoolConfigError(f"control socket {path}: cannot listen there: {exc}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    server.listen(MAX_CONNECTIONS)
    server.setblocking(False)
    return server


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def remove(path: Path, server: socket.socket) -> None:
    """Close `server` and remove its file, unless another controller answers there now."""
    server.close()
    if not _answers(path):
        with contextlib.suppress(OSError):
            path.unlink()


def peer_allowed(conn: socket.socket) -> bool:
    """Whether the connecting process runs as this user (or root)."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    _, uid, _ = struct.unpack("3i", creds)
    return uid in (os.getuid(), 0)


@attrs.define(eq=False)
class Client:
    """One connection: one request in, answer lines out, never blocking the controller.

    A connection carries one request (the ``openrtc deploy`` client and the probes send one
    and read until the answer that says ``done``); what its peer sends after the request
    line is not read, so pipelined lines cost one answer, not one each.
    """

    sock: socket.socket
    inbox: bytes = b""
    outbox: bytes = b""
    closing: bool = False
    """Close once the outbox is sent."""
    asked: bool = False
    """Its request line came: nothing more is read from it."""
    ended: bool = False
    """The peer closed (or the connection broke)."""
    connected_at: float = attrs.field(factory=time.monotonic)
    active_at: float = attrs.field(factory=time.monotonic)
    """When it last took bytes of ours."""

    def receive(self) -> Request | None:
        """Read what the peer sent now (one read); its request once the line is complete.

        A line that is not a request is answered with the reason (the connection then
        closes); None until a line is complete, and after the request.
        """
        try:
            data = self.sock.recv(MAX_REQUEST_BYTES + 1)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            self.ended = True
            return None
        if self.asked or self.closing:
            return None
        self.inbox += data
        line, newline, _ = self.inbox.partition(b"\n")
        if len(line) > MAX_REQUEST_BYTES:
            self.refuse(f"a request is one line of at most {MAX_REQUEST_BYTES} bytes")
            return None
        if not newline:
            return None
        self.asked = True
        self.inbox = b""
        try:
            return parse_request(line)
        except RequestError as exc:
            self.refuse(str(exc))
            return None

    def refuse(self, message: str) -> None:
        """Answer that the request cannot be served, and close."""
        self.asked = True
        self.inbox = b""
        self.answer(ok=False, message=message)

    def expires_at(self) -> float | None:
        """When it will have kept the controller waiting too long: its request line not
        complete :data:`IDLE_TIMEOUT_S` after it connected (however slowly it trickles in),
        or answers it has not read for that long; None while it waits on the controller."""
        if not self.asked:
            return self.connected_at + IDLE_TIMEOUT_S
        if self.outbox:
            return self.active_at + IDLE_TIMEOUT_S
        return None

    def progress(self, text: str) -> None:
        self._send({"progress": text})

    def answer(self, *, ok: bool, message: str, **fields: Any) -> None:
        """The last answer; the connection closes once it is sent."""
        if self.closing:
            return  # it had its last answer
        self._send({"done": True, "ok": ok, "message": message, **fields})
        self.closing = True

    def _send(self, payload: dict[str, Any]) -> None:
        if self.closing:
            return
        self.outbox += json.dumps(payload, separators=(",", ":")).encode() + b"\n"
        if len(self.outbox) > MAX_OUTBOX_BYTES:
            self.outbox = b""  # it does not read: drop it rather than hold its answers
            self.closing = True
            return
        self.flush()

    def flush(self) -> bool:
        """Send what the socket takes now; whether the connection is finished."""
        while self.outbox:
            try:
                sent = self.sock.send(self.outbox)
            except BlockingIOError:
                return False
            except OSError:
                self.outbox = b""
                return True
            self.outbox = self.outbox[sent:]
            self.active_at = time.monotonic()
        return self.closing


def turn_away(conn: socket.socket, message: str) -> None:
    """Answer a connection the controller will not serve with `message`, and close it
    (without waiting: what the socket does not take now is dropped)."""
    line = json.dumps({"done": True, "ok": False, "message": message}).encode() + b"\n"
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(line)
    close(conn)


def close(conn: socket.socket) -> None:
    """Close `conn` after discarding what its peer sent and we did not read (a bounded
    amount): closed with unread bytes, a Unix socket resets the peer, which then loses the
    answer it has not read yet."""
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        for _ in range(MAX_OUTBOX_BYTES // MAX_REQUEST_BYTES):
            if not conn.recv(MAX_REQUEST_BYTES):
                break
    conn.close()
