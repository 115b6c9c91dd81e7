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
from pathlib import Path
from typing import Any

import attrs

from openrtc_core import PoolConfigError

MAX_REQUEST_BYTES = 64 * 1024


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
    server.listen(16)
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
    """One connection: requests in, answer lines out, never blocking the controller."""

    sock: socket.socket
    inbox: bytes = b""
    outbox: bytes = b""
    closing: bool = False
    """Close once the outbox is sent."""

    def requests(self) -> list[dict[str, Any]] | None:
        """The complete requests read now; None when the peer closed or sent garbage."""
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return []
        except OSError:
            return None
        if not data:
            return None
        self.inbox += data
        if len(self.inbox) > MAX_REQUEST_BYTES:
            return None
        *lines, self.inbox = self.inbox.split(b"\n")
        found = []
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if not isinstance(message, dict):
                self.answer(ok=False, message="a request is one JSON object on one line")
                continue
            found.append(message)
        return found

    def progress(self, text: str) -> None:
        self._send({"progress": text})

    def answer(self, *, ok: bool, message: str, **fields: Any) -> None:
        """The last answer; the connection closes once it is sent."""
        self._send({"done": True, "ok": ok, "message": message, **fields})
        self.closing = True

    def _send(self, payload: dict[str, Any]) -> None:
        self.outbox += json.dumps(payload, separators=(",", ":")).encode() + b"\n"
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
        return self.closing
