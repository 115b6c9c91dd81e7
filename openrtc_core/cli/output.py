"""How the ``openrtc`` command reports a problem: one ``error:`` or ``warning:`` line."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

err_console = Console(stderr=True)


def print_error(message: str) -> None:
    """One ``error: ...`` line on stderr, never wrapped or read as markup."""
    err_console.print(
        f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True, highlight=False
    )


def print_warning(message: str) -> None:
    err_console.print(
        f"[bold yellow]warning:[/bold yellow] {escape(message)}", soft_wrap=True, highlight=False
    )


def fail(message: str) -> typer.Exit:
    """Print `message` as an error; the exit (status 1) for the caller to raise."""
    print_error(message)
    return typer.Exit(code=1)
