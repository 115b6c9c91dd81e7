"""Generate docs/cli-reference.md, the command reference, from the ``openrtc`` typer app.

    python docs/gen_cli.py            rewrite docs/cli-reference.md
    python docs/gen_cli.py --check    exit 1 when docs/cli-reference.md is not what this renders

Every command comes from ``openrtc_core.cli.build_app()`` with the commands of the plugins
this repository ships (``openrtc_core.cli.PLUGIN_COMMANDS``: ``simulate`` from
openrtc-testing, which must be installed), so a plugin installed only on one machine does not
change the page. Each command's usage line, arguments and options are read from its click
command; the livekit verbs also list the options livekit's own CLI takes, read from the
installed livekit-agents (``openrtc_core.cli.livekit_options``), which ``openrtc`` passes
through unchanged. To change the page, change the help texts in the code and run this script.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import typer
from generated_page import write_or_check
from rich.text import Text

from openrtc_core import cli
from openrtc_core.plugins import PluginHost

DOCS: Final = Path(__file__).resolve().parent
PAGE: Final = DOCS / "cli-reference.md"
COMMAND: Final = "python docs/gen_cli.py"
PROG: Final = "openrtc"

HEADER: Final = ("Option", "Type", "Default", "Environment", "Description")


# -- reading the app --------------------------------------------------------------------------


def openrtc_group() -> Any:
    """The ``openrtc`` click group: built-in commands and those of this repository's plugins."""
    app = cli.build_app()
    host = PluginHost(strict=False, disabled=frozenset())
    host.load_entry_points()
    host.register_commands(app)
    group: Any = typer.main.get_command(app)
    known = set(cli.command_names(cli.build_app())) | set(cli.PLUGIN_COMMANDS)
    missing = sorted(set(cli.PLUGIN_COMMANDS) - set(group.commands))
    if missing:
        raise SystemExit(
            f"{', '.join(missing)} not registered: install "
            + ", ".join(sorted({cli.PLUGIN_COMMANDS[name].distribution for name in missing}))
        )
    for name in list(group.commands):
        if name not in known:
            del group.commands[name]
    return group


def context(command: Any, name: str, parent: Any = None) -> Any:
    return command.make_context(name, [], parent=parent, resilient_parsing=True)


def plain(text: str | None) -> str:
    """Help text as the terminal shows it: rich markup read, lines joined."""
    if not text:
        return ""
    return " ".join(Text.from_markup(text).plain.split())


def usage(command: Any, ctx: Any) -> str:
    """The usage line; a required argument typer writes as ``{target}`` reads ``TARGET``."""
    pieces = [
        piece[1:-1].upper() if piece.startswith("{") and piece.endswith("}") else piece
        for piece in command.collect_usage_pieces(ctx)
    ]
    return " ".join([ctx.command_path, *pieces])


# -- rendering --------------------------------------------------------------------------------


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def code(text: str) -> str:
    return f"`{text}`" if text else ""


def names(param: Any) -> str:
    shown = ", ".join(code(opt) for opt in param.opts)
    if param.secondary_opts:
        shown += " / " + ", ".join(code(opt) for opt in param.secondary_opts)
    return shown


def type_of(param: Any, ctx: Any) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    shown: str = param.display_type(ctx)
    if shown.startswith("<") and shown.endswith(">"):
        shown = shown[1:-1]
    if "|" in shown:
        return "one of " + ", ".join(code(choice) for choice in shown.split("|"))
    return shown


def default_of(param: Any, ctx: Any) -> str:
    if param.required:
        return "required"
    default = param.get_default(ctx, call=False)
    if getattr(param, "is_flag", False):
        on = bool(default)
        if param.secondary_opts:
            return code(param.opts[0] if on else param.secondary_opts[0])
        return "on" if on else "off"
    if default is None or callable(default):
        return ""
    return code(str(getattr(default, "value", default)))


def envvar_of(param: Any) -> str:
    envvar = param.envvar
    if not envvar:
        return ""
    return ", ".join(code(e) for e in ([envvar] if isinstance(envvar, str) else envvar))


def option_rows(params: Sequence[Any], ctx: Any) -> list[str]:
    table = [
        (
            names(param),
            type_of(param, ctx),
            default_of(param, ctx),
            envvar_of(param),
            plain(param.help),
        )
        for param in params
    ]
    # No Environment column when no option of the table reads one.
    keep = [
        i for i, title in enumerate(HEADER) if title != "Environment" or any(r[i] for r in table)
    ]
    rows = [[HEADER[i] for i in keep], ["---"] * len(keep)]
    rows += [[cell(row[i]) for i in keep] for row in table]
    return [f"| {' | '.join(row)} |" for row in rows]


def argument_rows(params: Sequence[Any], ctx: Any) -> list[str]:
    rows = ["| Argument | Type | Description |", "| --- | --- | --- |"]
    for param in params:
        name = param.metavar or param.name.upper()
        help_text = plain(param.help)
        if param.required:
            help_text = f"Required. {help_text}"
        rows.append(f"| {code(name)} | {cell(type_of(param, ctx))} | {cell(help_text)} |")
    return rows


def visible(params: Sequence[Any], kind: str) -> list[Any]:
    return [
        p
        for p in params
        if p.param_type_name == kind and not getattr(p, "hidden", False) and p.name != "help"
    ]


def render_command(name: str, command: Any, parent: Any) -> list[str]:
    ctx = context(command, name, parent)
    blocks = [f"## openrtc {name}", f"```text\n{usage(command, ctx)}\n```", plain(command.help)]
    if name in cli.PLUGIN_COMMANDS:
        known = cli.PLUGIN_COMMANDS[name]
        blocks.append(
            f"Added by the `{known.distribution}` distribution (plugin `{known.entry_point}`); "
            "listed only when it is installed and not disabled."
        )
    arguments = visible(command.params, "argument")
    if arguments:
        blocks.append("\n".join(argument_rows(arguments, ctx)))
    options = visible(command.params, "option")
    if options:
        blocks.append("\n".join(option_rows(options, ctx)))
    if isinstance(command, cli.VerbCommand):
        passed = list(cli.livekit_options(command.verb))
        if passed:
            blocks.append(
                f"livekit's `{command.verb}` options, passed through unchanged (read from the "
                "installed livekit-agents):"
            )
            blocks.append("\n".join(option_rows(passed, ctx)))
    if command.epilog:
        blocks.append(plain(command.epilog))
    return blocks


def render() -> str:
    group = openrtc_group()
    root = context(group, PROG)
    blocks = [
        "# Command reference",
        f"<!-- Generated by `{COMMAND}` from openrtc_core/cli/ and the plugins' commands: "
        "edit their help texts and run it, not this file. -->",
        "Every command of `openrtc` (and `python -m openrtc_core`), its arguments and options, "
        "generated from the command line itself. The [Command line](cli.md) page explains "
        "them; `openrtc COMMAND --help` prints the same for the installed versions. Every "
        "command also takes `--help`.",
        "## openrtc",
        f"```text\n{usage(group, root)}\n```",
        plain(group.help),
        "Global options go before the command.",
        "\n".join(option_rows(visible(group.params, "option"), root)),
        "| Command | Does |\n| --- | --- |\n"
        + "\n".join(
            f"| [`{name}`](#openrtc-{anchor(name)}) | "
            f"{cell(plain(group.commands[name].get_short_help_str(limit=200)))} |"
            for name in group.list_commands(root)
        ),
    ]
    for name in group.list_commands(root):
        blocks += render_command(name, group.commands[name], root)
    return "\n\n".join(block for block in blocks if block) + "\n"


def anchor(name: str) -> str:
    return re.sub(r"[^a-z0-9-]", "", name.lower())


# -- the script -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    return write_or_check(
        argv,
        description="Generate the command reference page.",
        page=PAGE,
        render=render,
        command=COMMAND,
    )


if __name__ == "__main__":
    sys.exit(main())
