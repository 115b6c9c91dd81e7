"""Reading the raw arguments before typer parses them."""

from __future__ import annotations

from collections.abc import Sequence


def flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of ``--flag VALUE`` or ``--flag=VALUE`` in `args`; the last one wins."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(f"{flag}="):
            value = arg.split("=", 1)[1]
    return value


def global_options(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """The options before the command (openrtc's own), and the command's name."""
    args: list[str] = []
    for arg in argv:
        if not arg.startswith("-") and not (args and args[-1] == "--disable-plugins"):
            return args, arg
        args.append(arg)
    return args, None
