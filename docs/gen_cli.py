"""Generate docs/cli-reference.md, the command reference, from the ``openrtc`` typer app.

    python docs/gen_cli.py            rewrite docs/cli-reference.md
    python docs/gen_cli.py --check    exit 1 when docs/cli-reference.md is not what this renders

Every command comes from ``openrtc_core.cli.build_app(host)`` with the commands and the run
options of the plugins this repository ships (``openrtc_core.cli.PLUGIN_COMMANDS``, such as
``simulate`` from openrtc-testing; the run options of the core and of the distributions in
``plugins/``; all must be installed), so a plugin installed only on one machine does not
change the page. Each command's usage line, arguments and options are read from its click
command; the livekit verbs also list the run options plugins add (``openrtc_add_run_options``),
with the plugin that adds each, and the options livekit's own CLI takes, read from the
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

from openrtc_core import cli, hints
from openrtc_core.cli.livekit_help import CORE_DISTRIBUTION, run_option_params
from openrtc_core.plugins import PluginHost
from openrtc_core.runoptions import Declared

DOCS: Final = Path(__file__).resolve().parent
PAGE: Final = DOCS / "cli-reference.md"
COMMAND: Final = "python docs/gen_cli.py"
PROG: Final = "openrtc"

HEADER: Final = ("Option", "Type", "Default", "Environment", "Description")
RUN_OPTION_HEADER: Final = (
    "Option",
    "Value",
    "Default",
    "Environment",
    "Keyword",
    "Added by",
    "Description",
)
SHIPPED: Final = frozenset(
    {CORE_DISTRIBUTION, *(p.name for p in (DOCS.parent / "plugins").glob("openrtc-*"))}
)
"""The distributions whose run options the page lists: the core and this repository's
plugins."""


# -- reading the app --------------------------------------------------------------------------


def openrtc_group() -> Any:
    """The ``openrtc`` click group: built-in commands and those of this repository's plugins,
    its verbs with the run options of the core and of this repository's plugins."""
    host = PluginHost(strict=False, disabled=frozenset())
    host.load_entry_points()
    check_run_options(host.run_options())
    app = cli.build_app(host)
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


def check_run_options(declared: dict[str, Declared]) -> None:
    """Stop when a flag this repository's plugins add is missing: the page would lack it."""
    flags = {flag for d in declared.values() for flag in d.option.flags}
    missing = sorted(
        {hint.distribution for hint in hints.HINTS for flag in hint.flags if flag not in flags}
    )
    if missing:
        raise SystemExit(f"run options missing: install {', '.join(missing)}")


def shipped(declared: Sequence[Declared]) -> list[Declared]:
    """The run options of the core and of this repository's plugins, in declaration order."""
    return [d for d in declared if d.distribution in SHIPPED]


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


def option_cells(param: Any, ctx: Any) -> tuple[str, str, str, str]:
    """Option, Type, Default and Environment of `param`."""
    return names(param), type_of(param, ctx), default_of(param, ctx), envvar_of(param)


def table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    # No Environment column when no option of the table reads one.
    keep = [
        i for i, title in enumerate(header) if title != "Environment" or any(r[i] for r in body)
    ]
    rows = [[header[i] for i in keep], ["---"] * len(keep)]
    rows += [[cell(row[i]) for i in keep] for row in body]
    return [f"| {' | '.join(row)} |" for row in rows]


def option_rows(params: Sequence[Any], ctx: Any) -> list[str]:
    return table(HEADER, [(*option_cells(p, ctx), plain(p.help)) for p in params])


def added_by(item: Declared) -> str:
    plugin = f"plugin {code(item.plugin)}"
    return f"{code(item.distribution)} ({plugin})" if item.distribution else plugin


def run_option_default(item: Declared, verb: str) -> str:
    """The option's default for `verb` (a default may depend on the verb)."""
    option = item.option
    value = option.default_for(verb)
    if option.switch:
        return code(option.flags[0] if value else option.flags[1])
    return "" if value is None else code(str(value))


def run_option_rows(declared: Sequence[Declared], verb: str) -> list[str]:
    """One row per run option: its flags, its value's placeholder, its default for `verb`,
    its variable, its ``pool.run(...)`` keyword and who adds it."""
    body = []
    for item in declared:
        (param,) = run_option_params((item,))
        option = item.option
        body.append(
            (
                names(param),
                "flag" if option.switch else option.metavar,
                run_option_default(item, verb),
                envvar_of(param),
                code(f"{option.name}="),
                added_by(item),
                plain(option.help),
            )
        )
    return table(RUN_OPTION_HEADER, body)


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


def render_command(name: str, command: Any, parent: Any, level: int = 2) -> list[str]:
    """`command`'s section (``## openrtc NAME``), then one for each of its subcommands."""
    ctx = context(command, name, parent)
    title = f"{'#' * level} {ctx.command_path}"
    blocks = [title, f"```text\n{usage(command, ctx)}\n```", plain(command.help)]
    if level == 2 and name in cli.PLUGIN_COMMANDS:
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
        declared = shipped(command.run_options)
        if declared:
            blocks.append(
                f"Run options `{command.verb}` takes, added by plugins (the core's own "
                "included); each is also a keyword of `pool.run(...)`. See "
                "[Adding options to the verbs](plugins.md#adding-options-to-the-verbs)."
            )
            blocks.append("\n".join(run_option_rows(declared, command.verb)))
        passed = list(cli.livekit_options(command.verb))
        if passed:
            blocks.append(
                f"livekit's `{command.verb}` options, passed through unchanged (read from the "
                "installed livekit-agents):"
            )
            blocks.append("\n".join(option_rows(passed, ctx)))
    if command.epilog:
        blocks.append(plain(command.epilog))
    for sub in getattr(command, "list_commands", lambda _: [])(ctx):
        blocks += render_command(sub, command.commands[sub], ctx, level + 1)
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
