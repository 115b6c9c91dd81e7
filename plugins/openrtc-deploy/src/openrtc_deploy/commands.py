"""``openrtc deploy``: start a new generation, show the generations, or drain, over the
running controller's control socket."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .client import CONTROL_ENV, ControlError, control_path, ready_timeout_error, request

FAILED = 1
"""Exit status: the deploy failed (the previous generation keeps serving), or calls were cut."""
UNREACHABLE = 2
"""Exit status: no controller answered."""


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy_command)


def deploy_command(
    control: Annotated[
        str | None,
        typer.Option(
            "--control",
            metavar="PATH",
            envvar=CONTROL_ENV,
            help="The controller's control socket (default: $XDG_RUNTIME_DIR/openrtc/"
            "control.sock, else <tmp>/openrtc-<uid>/control.sock).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        str | None,
        typer.Option(
            "--deploy-version",
            "--version",
            help="The new generation's deploy version (default: the git commit of the code, "
            "with -dirty, else a content hash). --version is its former spelling.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            help="Give the new generation up when its workers are not all registered by then "
            "(default: OPENRTC_READY_TIMEOUT, else 180).",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Also wait until the previous generation has drained."),
    ] = False,
    status: Annotated[
        bool, typer.Option("--status", help="Show the generations instead of deploying.")
    ] = False,
    drain: Annotated[
        bool,
        typer.Option(
            "--drain",
            help="Drain every generation and stop the controller, waiting until the calls "
            "end (a preStop hook).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --status: print JSON.")] = False,
) -> None:
    """Deploy the code on disk with no call cut: a new generation of workers takes the calls
    once every one is registered; the previous one drains.

    Talks to the running `openrtc start` (with openrtc-deploy installed) over its control
    socket. Exit status 1 when the new generation failed (the previous one keeps serving)
    or a drain cut calls; 2 when no controller answers.
    """
    if sum((status, drain)) > 1 or (status and (version or wait)) or (drain and version):
        _fail(
            "give one of: a deploy (with --deploy-version/--timeout/--wait), --status, --drain", 2
        )
    wrong = "" if timeout is None else ready_timeout_error(timeout)
    if wrong:
        _fail(f"--timeout {timeout:g}: {wrong}", 2)
    path = control_path(control)
    if status:
        raise typer.Exit(_show_status(path, as_json))
    message: dict[str, Any] = {"op": "drain"} if drain else {"op": "deploy", "wait": wait}
    if version:
        message["version"] = version
    if timeout is not None:
        message["ready_timeout"] = timeout
    raise typer.Exit(_follow(path, message))


def _follow(path: Path, message: dict[str, Any]) -> int:
    start = time.monotonic()
    try:
        for answer in request(path, message):
            elapsed = time.monotonic() - start
            if "progress" in answer:
                typer.echo(f"[{elapsed:6.1f}s] {answer['progress']}")
            elif answer.get("done"):
                text = answer.get("message", "")
                if answer.get("ok"):
                    typer.echo(f"[{elapsed:6.1f}s] {text}")
                    return 0
                typer.echo(f"error: {text}", err=True)
                return FAILED
    except ControlError as exc:
        typer.echo(f"error: {exc}", err=True)
        return UNREACHABLE
    return FAILED


def _show_status(path: Path, as_json: bool) -> int:
    try:
        answers = list(request(path, {"op": "status"}, timeout=10.0))
    except ControlError as exc:
        typer.echo(f"error: {exc}", err=True)
        return UNREACHABLE
    status = answers[-1].get("status", {}) if answers else {}
    if as_json:
        typer.echo(json.dumps(status, indent=2))
        return 0
    typer.echo(format_status(status))
    return 0


def format_status(status: dict[str, Any]) -> str:
    """The controller's status in a few lines."""
    lines = [
        f"controller pid {status.get('controller_pid')} at {status.get('control')}: "
        f"{status.get('state')} ({'ready' if status.get('ready') else 'not ready'}), "
        f"{status.get('workers_per_generation')} worker(s) per generation"
    ]
    for gen in status.get("generations", []):
        workers = gen.get("workers", [])
        registered = sum(1 for w in workers if w.get("registered"))
        line = (
            f"  generation {gen['generation']} {gen['version']} ({gen['version_source']}): "
            f"{gen['state']}, pid {gen['pid']}, {registered}/{len(workers)} worker(s) "
            f"registered, {gen['live_calls']} live call(s), {gen['calls_taken']} taken"
        )
        drain = gen.get("drain")
        if drain:
            line += (
                f"; draining for {drain['for_s']:.0f} s, {drain['calls_left']} of "
                f"{drain['calls_at_start']} call(s) left"
            )
        if gen.get("cut"):
            line += f"; cut: {', '.join(gen['cut'])}"
        if gen.get("failure"):
            line += f"; failed: {gen['failure']}"
        if gen.get("exit"):
            line += f"; {gen['exit']}"
        if gen.get("restart_of"):
            line += f"; started in place of generation {gen['restart_of']}"
        orphans = gen.get("orphans") or []
        if orphans:
            line += (
                f"; {len(orphans)} worker(s) left by its dead supervisor drain "
                f"{sum(o['live_calls'] for o in orphans)} call(s)"
            )
        lines.append(line)
    restarts = status.get("restarts") or 0
    if restarts:
        last = (status.get("last_restarts") or [{}])[-1]
        line = (
            f"  restarts: {restarts}; last: {last.get('died')} ({last.get('reason')}), "
            f"replaced after {last.get('delay_s', 0):g} s"
        )
        if status.get("next_restart_in_s") is not None:
            line += f"; the next try in {status['next_restart_in_s']:.1f} s"
        lines.append(line)
    return "\n".join(lines)


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
