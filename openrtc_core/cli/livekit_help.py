"""livekit's options for each verb, read from livekit's own app and listed in the verb's help."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from functools import cache
from typing import Annotated, Any, ClassVar, Final

import typer
from typer.core import TyperCommand

from .. import _livekit
from ..runoptions import Declared

LIVEKIT_PANEL: Final = "livekit options (passed through)"
CORE_DISTRIBUTION: Final = "openrtc-core"


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

    livekit's own ``dev`` reload flag is left out: livekit 1.8.9 removed in-process reload,
    and ``openrtc dev`` always switches it off (see :func:`run_livekit`).
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


def run_option_params(declared: Sequence[Declared]) -> tuple[Any, ...]:
    """Click parameters that show `declared` run options in a verb's help, each in a panel
    named after the distribution that adds it (the core's own in the verb's main panel).

    typer builds them from a signature made here, so they render like the verb's own.
    """
    parameters = []
    for item in declared:
        option = item.option
        panel = None
        if item.distribution != CORE_DISTRIBUTION:
            panel = f"{item.distribution or item.plugin} options"
        flags = f"{option.flag}/--no-{option.flag[2:]}" if option.switch else option.flag
        default = option.default if not callable(option.default) else None
        shown = option.help
        if callable(option.default):
            shown += " Default: depends on the verb."
        kind: Any = bool | None if option.switch else str | None
        annotation = Annotated[  # built at run time, from the declaration
            kind,
            typer.Option(
                flags,
                help=shown,
                envvar=option.env or None,
                show_envvar=bool(option.env),
                show_default=default is not None,
                metavar=None if option.switch else option.metavar,
                rich_help_panel=panel,
            ),
        ]
        parameters.append(
            inspect.Parameter(
                option.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )

    def describe(**_: Any) -> None:
        """Only described, never run."""

    describe.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    describe.__annotations__ = {p.name: p.annotation for p in parameters}
    app = typer.Typer(add_completion=False)
    app.command()(describe)
    command: Any = typer.main.get_command(app)
    return tuple(command.params)


class VerbCommand(TyperCommand):
    """A livekit verb: its help lists livekit's options in a panel of their own.

    They are added only while the help is written, never to what is parsed: the verb takes
    any extra arguments and hands them to livekit untouched.
    """

    verb: ClassVar[str] = ""
    run_options: ClassVar[tuple[Declared, ...]] = ()
    _describing: bool = False

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)
        if self._describing:
            params = [*params, *self.described_options()]
        return params

    def described_options(self) -> tuple[Any, ...]:
        """What the help lists besides the verb's own: the run options, then livekit's."""
        return (*run_option_params(self.run_options), *livekit_options(self.verb))

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
