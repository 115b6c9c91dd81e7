"""Talking to a running controller over its control socket: where it is, and one request.

The standard library only, so that a probe (``python -m openrtc_deploy.probe``) starts in
milliseconds. The protocol: the client sends one JSON object on one line (``{"op": ...}``);
the controller answers with JSON lines, zero or more ``{"progress": "..."}`` and a last one
with ``"done": true``, ``"ok"`` and ``"message"``.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

CONTROL_ENV: Final = "OPENRTC_CONTROL"
"""The control socket's path (the same name as ``openrtc_core.CONTROL_ENV``)."""
SOCKET_NAME: Final = "control.sock"
MAX_READY_TIMEOUT_S: Final = 86400.0
"""The longest ready timeout a deploy may ask for (a day)."""


class ControlError(Exception):
    """No controller answers at the path, or it broke off."""


def default_control_path() -> Path:
    """``OPENRTC_CONTROL``, else ``$XDG_RUNTIME_DIR/openrtc/control.sock``, else
    ``<tmp>/openrtc-<uid>/control.sock``: private to the user either way."""
    configured = os.environ.get(CONTROL_ENV, "").strip()
    if configured:
        return Path(configured)
    runtime = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "openrtc" / SOCKET_NAME
    return Path(tempfile.gettempdir()) / f"openrtc-{os.getuid()}" / SOCKET_NAME


def ready_timeout_error(value: object) -> str:
    """What is wrong with `value` as a ready timeout in seconds ("" when nothing is): it must
    be a number above 0, finite, and at most :data:`MAX_READY_TIMEOUT_S`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "give a number of seconds"
    if math.isnan(value) or value <= 0 or value > MAX_READY_TIMEOUT_S:
        return f"give a number of seconds, more than 0 and at most {MAX_READY_TIMEOUT_S:g}"
    return ""


def control_path(given: str | os.PathLike[str] | None) -> Path:
    """`given`, else the default."""
    return Path(given) if given else default_control_path()


def request(
    path: Path, message: Mapping[str, Any], *, timeout: float | None = None
) -> Iterator[dict[str, Any]]:
    """Send `message` to the controller at `path`; its answers, the last one with ``done``.

    :raises ControlError: nothing listens at `path`, or the answer ended early or late.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ControlError(
                f"no control socket at {path}: is `openrtc start` running with openrtc-deploy? "
                f"(give --control PATH or set {CONTROL_ENV} to where it listens)"
            ) from None
        except (ConnectionRefusedError, PermissionError) as exc:
            raise ControlError(f"cannot connect to the control socket {path}: {exc}") from None
        sock.sendall(json.dumps(dict(message)).encode() + b"\n")
        with sock.makefile("rb") as answers:
            for raw in answers:
                try:
                    answer = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(answer, dict):
                    continue
                yield answer
                if answer.get("done"):
                    return
    except TimeoutError:
        raise ControlError(f"the controller at {path} did not answer within {timeout} s") from None
    except OSError as exc:
        raise ControlError(f"the connection to {path} broke: {exc}") from None
    finally:
        sock.close()
    raise ControlError(f"the controller at {path} closed the connection before it finished")


def final(
    path: Path, message: Mapping[str, Any], *, timeout: float | None = None
) -> dict[str, Any]:
    """The controller's last answer to `message` (progress lines skipped)."""
    last: dict[str, Any] = {}
    for answer in request(path, message, timeout=timeout):
        last = answer
    return last
