"""livekit's options for each verb, read from livekit's own app and listed in the verb's help."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any, ClassVar, Final

import typer
from typer.core import TyperCommand

from .. import _livekit

LIVEKIT_PANEL: Final = "livekit options (passed through)"


@cache
def _livekit_command(verb: str) -> Any:
    """livekit's click command for `verb`, from its own app (bound to a throwaway server)."""
    from livekit.agents import AgentServer

    # typer vendors its own click, so the command is read duck-typed.
    group: Any = typer.main.get_command(_livekit.build_livekit_cli(AgentServer()))
    commands: dict[str, Any] = getattr(group, "commands", {})
    return commands.get(verb) or commands.get(verb.replace("-", "_"))


@cache
def livekit_options(verb: str) -> tuple[Any, ...]:
    """The options livekit's CLI takes for `verb` (click parameters), as passed through.

    ``dev --reload`` is left out: livekit 1.8.9 removed in-process reload, and ``openrtc dev``
    strips the flag (see :func:`run_livekit`).
    """
    command = _livekit_command(verb)
    if command is None:
        return ()
    options = []
    for param in command.params:
        if getattr(param, "param_type_name", "") != "option" or getattr(param, "hidden", False):
            continue
        if verb == "dev" and param.name == "reload":
            continue
        clone = copy.copy(param)
        clone.rich_help_panel = LIVEKIT_PANEL
        options.append(clone)
    return tuple(options)


class VerbCommand(TyperCommand):
    """A livekit verb: its help lists livekit's options in a panel of their own.

    They are added only while the help is written, never to what is parsed: the verb takes
    any extra arguments and hands them to livekit untouched.
    """

    verb: ClassVar[str] = ""
    _describing: bool = False

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)
        if self._describing:
            params = [*params, *livekit_options(self.verb)]
        return params

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._describing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._describing = False

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        # typer writes a required argument as {TARGET}; the usage line says TARGET.
        pieces = [
            piece[1:-1] if piece.startswith("{") and piece.endswith("}") else piece
            for piece in super().collect_usage_pieces(ctx)
        ]
        return [*pieces, "[LIVEKIT OPTIONS]..."] if livekit_options(self.verb) else pieces
