"""Generate docs/hooks.md, the hook reference, from the code it documents.

    python docs/gen_hooks.py            rewrite docs/hooks.md
    python docs/gen_hooks.py --check    exit 1 when docs/hooks.md is not what this renders

The hooks come from ``openrtc_core.hookspecs``, in source order, grouped by the banner comments
of that module; each hook's signature comes from ``inspect``, its flags from the options the
``HookspecMarker`` stored on the function, and its text from its docstring (``:param:`` and
``:return:`` fields become a list; ``Called:``, ``Order:`` and ``Failure:`` paragraphs keep
their label). The values section at the end comes from the attrs classes of
``openrtc_core.models``. To change the page, change those docstrings and run this script.
"""

from __future__ import annotations

import ast
import enum
import inspect
import itertools
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import attrs
from generated_page import write_or_check

import openrtc_core
from openrtc_core import hookspecs, models

DOCS: Final = Path(__file__).resolve().parent
PAGE: Final = DOCS / "hooks.md"
COMMAND: Final = "python docs/gen_hooks.py"

SPEC_OPTIONS: Final = f"{hookspecs.PROJECT}_spec"
"""The attribute pluggy's ``HookspecMarker`` sets on each spec function (its options)."""

VALUE_CLASSES: Final[tuple[type, ...]] = (
    models.JobView,
    models.PoolView,
    models.RouteDecision,
    models.Verdict,
    models.TenantContext,
    models.SessionInfo,
    models.SessionOutcome,
    models.Outcome,
    models.SessionLaunch,
    models.AgentContext,
)
"""The values documented at the end of the page, in this order."""

FLAG_MEANINGS: Final = {
    "firstresult": (
        "calling stops at the first implementation that returns something other than "
        "`None`; that value is the hook's result"
    ),
    "historic": "the call is remembered and replayed to plugins registered after it",
}

SEE_ALSO: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "openrtc_route_job": (
        ("Routing", "routing.md"),
        ("Writing a strategy", "routing.md#writing-a-strategy"),
    ),
    "openrtc_register_isolation_backends": (
        ("Writing a backend", "isolation.md#writing-a-backend"),
    ),
    "openrtc_resolve_tenant": (("The request handler", "architecture.md#2-the-request-handler"),),
    "openrtc_admit_job": (
        ("The request handler", "architecture.md#2-the-request-handler"),
        ("Outcomes", "routing.md#outcomes"),
    ),
    "openrtc_session_options": (
        ("Session options", "pool.md#session-options"),
        ("Shared VAD", "pool.md#shared-vad"),
    ),
    "openrtc_start_session": (
        ("Starting the session", "architecture.md#5-starting-the-session"),
        ("Simulated calls", "testing.md#simulated-calls"),
    ),
    "openrtc_worker_started": (("Building the server", "architecture.md#1-building-the-server"),),
    "openrtc_session_started": (("Live sessions", "pool.md#live-sessions"),),
    "openrtc_session_ended": (("How a session ends", "architecture.md#6-how-a-session-ends"),),
    "openrtc_drain_started": (("Drain", "isolation.md#drain"),),
    "openrtc_prewarm": (
        ("Shared VAD", "pool.md#shared-vad"),
        ("Choosing a backend", "isolation.md#choosing-a-backend"),
    ),
    "openrtc_register_commands": (("Adding commands", "cli.md#adding-commands"),),
    "openrtc_add_run_options": (
        ("Adding options to the verbs", "plugins.md#adding-options-to-the-verbs"),
    ),
    "openrtc_take_over_run": (
        ("Taking over a run", "plugins.md#taking-over-a-run"),
        ("Several workers", "architecture.md#several-workers"),
        ("Workers", "workers.md"),
    ),
    "openrtc_describe_run": (("Taking over a run", "plugins.md#taking-over-a-run"),),
    "openrtc_log_fields": (("Deployment version", "cli.md#deployment-version"),),
}
"""Hand-kept links under each hook to the pages that explain it in context."""

VALUE_SEE_ALSO: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "JobView": (("Metadata", "routing.md#metadata"),),
    "AgentContext": (("Factories and AgentContext", "pool.md#factories-and-agentcontext"),),
    "SessionInfo": (("Live sessions", "pool.md#live-sessions"),),
    "SessionOutcome": (("How a session ends", "architecture.md#6-how-a-session-ends"),),
}

_BANNER_RULE = re.compile(r"^# -{20,}\s*$")
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):`(~?)([^`]+)`")
_FIELD = re.compile(r"^:(param|parameter|arg|return|returns)(?:\s+(\w+))?:\s*(.*)$")
_HOOK_LABEL = re.compile(r"^([A-Z][a-z]+):\s+(.*)$", re.DOTALL)
_MODULE_LABEL = re.compile(r"^([A-Z][^:.\n]{0,60}):\s+(.*)$", re.DOTALL)


# -- reading the code -------------------------------------------------------------------------


@attrs.frozen
class Family:
    """A banner section of hookspecs.py: ``# routing: which agent takes a job``."""

    name: str
    about: str

    @property
    def title(self) -> str:
        return f"{self.name}: {self.about}" if self.about else self.name


@attrs.frozen
class Field:
    """One ``:param name:`` or ``:return:`` field of a docstring."""

    kind: str  # "param" | "return"
    name: str
    text: str


@attrs.frozen
class Hook:
    name: str
    family: Family
    flags: tuple[str, ...]
    signature: str
    doc: str
    contract: hookspecs.HookContract


def banners(source: str) -> list[tuple[int, Family]]:
    """The banner sections of `source`, each with the line number of its title."""
    lines = source.splitlines()
    found: list[tuple[int, Family]] = []
    i = 0
    while i + 2 < len(lines):
        title = lines[i + 1]
        if _BANNER_RULE.match(lines[i]) and _BANNER_RULE.match(lines[i + 2]) and title[:2] == "# ":
            name, _, about = title[2:].strip().partition(": ")
            found.append((i + 2, Family(name=name, about=about)))
            i += 3
        else:
            i += 1
    return found


def annotation(value: Any) -> str:
    """An annotation as written (the specs' annotations are strings: postponed evaluation)."""
    if value is inspect.Parameter.empty:
        return ""
    if isinstance(value, str):
        return value
    return inspect.formatannotation(value)


def default_literal(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def parameters(signature: inspect.Signature, *, drop_self: bool = False) -> list[str]:
    """Each parameter as source text, with the ``/`` and ``*`` markers where they belong."""
    parts: list[str] = []
    keyword_only_marked = False
    params = list(signature.parameters.values())
    if drop_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    for index, param in enumerate(params):
        if param.kind is inspect.Parameter.KEYWORD_ONLY and not keyword_only_marked:
            parts.append("*")
            keyword_only_marked = True
        text = param.name
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            text, keyword_only_marked = f"*{text}", True
        elif param.kind is inspect.Parameter.VAR_KEYWORD:
            text = f"**{text}"
        if param.annotation is not inspect.Parameter.empty:
            text += f": {annotation(param.annotation)}"
        if param.default is not inspect.Parameter.empty:
            text += f" = {default_literal(param.default)}"
        parts.append(text)
        is_last_positional_only = param.kind is inspect.Parameter.POSITIONAL_ONLY and (
            index + 1 == len(params) or params[index + 1].kind is not param.kind
        )
        if is_last_positional_only:
            parts.append("/")
    return parts


def returns(signature: inspect.Signature) -> str:
    ret = annotation(signature.return_annotation)
    return f" -> {ret}" if ret else ""


def spec_signature(function: Callable[..., Any], flags: dict[str, Any]) -> str:
    """The spec as a stub: decorator with its flags, then the def, wrapped like ruff would."""
    set_flags = [f"{name}=True" for name in FLAG_MEANINGS if flags.get(name)]
    decorator = f"@hookspec({', '.join(set_flags)})" if set_flags else "@hookspec"
    signature = inspect.signature(function)
    params = parameters(signature)
    one_line = f"def {function.__name__}({', '.join(params)}){returns(signature)}: ..."
    if len(one_line) <= 100:
        return f"{decorator}\n{one_line}"
    body = "".join(f"    {param},\n" for param in params)
    return f"{decorator}\ndef {function.__name__}(\n{body}){returns(signature)}: ..."


def aliases(source: str) -> dict[str, str]:
    """Module-level ``Name = <type expression>`` assignments of `source`, as written."""
    found: dict[str, str] = {}
    for node in ast.parse(source).body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Subscript)
        ):
            segment = ast.get_source_segment(source, node.value) or ""
            # A forward reference in quotes reads as the type it names; a Literal's strings
            # keep theirs.
            literal = segment.startswith("Literal[")
            found[node.targets[0].id] = segment if literal else segment.replace('"', "")
    return found


def hooks() -> list[Hook]:
    """Every hook spec of openrtc_core.hookspecs, in source order, with its banner section."""
    source = inspect.getsource(hookspecs)
    sections = banners(source)
    found: list[tuple[int, Hook]] = []
    for name, function in vars(hookspecs).items():
        options = getattr(function, SPEC_OPTIONS, None)
        if not (name.startswith("openrtc_") and inspect.isfunction(function) and options):
            continue
        line = function.__code__.co_firstlineno
        family = next(
            (fam for at, fam in reversed(sections) if at < line), Family(name="other", about="")
        )
        found.append(
            (
                line,
                Hook(
                    name=name,
                    family=family,
                    flags=tuple(flag for flag in FLAG_MEANINGS if options.get(flag)),
                    signature=spec_signature(function, options),
                    doc=inspect.getdoc(function) or "",
                    contract=hookspecs.contract_of(name) or hookspecs.HookContract(),
                ),
            )
        )
    return [hook for _, hook in sorted(found, key=lambda item: item[0])]


# -- docstrings to Markdown -------------------------------------------------------------------


def inline(text: str) -> str:
    """reST inline markup as Markdown: roles and double backticks become code spans."""

    def role(match: re.Match[str]) -> str:
        target = match.group(2)
        return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"

    return _ROLE.sub(role, text).replace("``", "`")


def paragraphs(doc: str) -> list[str]:
    return [part for part in re.split(r"\n[ \t]*\n", doc.strip()) if part.strip()]


def fields(paragraph: str) -> list[Field] | None:
    """The fields of a ``:param x:`` / ``:return:`` paragraph, or None for any other one."""
    lines = paragraph.splitlines()
    if not _FIELD.match(lines[0]):
        return None
    found: list[list[str]] = []
    for line in lines:
        match = _FIELD.match(line)
        if match:
            kind = "param" if match.group(1) in ("param", "parameter", "arg") else "return"
            found.append([kind, match.group(2) or "", match.group(3).strip()])
        else:
            found[-1][2] = f"{found[-1][2]} {line.strip()}".strip()
    return [Field(kind=kind, name=name, text=text) for kind, name, text in found]


def render_fields(found: Sequence[Field]) -> list[str]:
    params = [f for f in found if f.kind == "param"]
    results = [f for f in found if f.kind == "return"]
    lines: list[str] = []
    if params:
        lines.append("- **Parameters:**")
        lines += [f"    - `{f.name}`: {inline(f.text)}" for f in params]
    lines += [f"- **Returns:** {inline(f.text)}" for f in results]
    return lines


def render_doc(doc: str, label: re.Pattern[str] = _HOOK_LABEL) -> list[str]:
    """A docstring as Markdown blocks (each a string, separated by blank lines on output)."""
    blocks: list[str] = []
    literal = False
    for paragraph in paragraphs(doc):
        lines = paragraph.splitlines()
        if literal and all(line.startswith((" ", "\t")) for line in lines):
            code = inspect.cleandoc(paragraph)
            if blocks and blocks[-1].startswith("```python\n"):
                blocks[-1] = blocks[-1][: -len("\n```")] + f"\n\n{code}\n```"
            else:
                blocks.append(f"```python\n{code}\n```")
            continue
        literal = paragraph.rstrip().endswith("::")
        if literal:
            paragraph = paragraph.rstrip()[:-1]
        found = fields(paragraph)
        if found is not None:
            blocks.append("\n".join(render_fields(found)))
            continue
        text = "\n".join(line.strip() for line in paragraph.splitlines())
        match = label.match(text)
        if match:
            text = f"**{match.group(1)}:** {match.group(2)}"
        blocks.append(inline(text))
    return blocks


# -- values -----------------------------------------------------------------------------------


def attribute_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (a string right after ``name: type = ...``) in `cls`'s source."""
    try:
        tree = ast.parse(inspect.getsource(cls).strip())
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    found: dict[str, str] = {}
    for statement, following in itertools.pairwise(body):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            found[statement.target.id] = " ".join(inspect.cleandoc(following.value.value).split())
    return found


def field_default(field: attrs.Attribute[Any]) -> str:
    default = field.default
    if default is attrs.NOTHING:
        return "required"
    factory = getattr(default, "factory", None)
    if factory is not None and hasattr(default, "takes_self"):  # an attrs.Factory
        empty = {dict: "{}", list: "[]", tuple: "()", set: "set()", frozenset: "frozenset()"}
        if factory in empty:
            return f"`{empty[factory]}`"
        return f"`{factory.__module__}.{factory.__qualname__}()` when built"
    if isinstance(default, MappingProxyType) and not default:
        return "`{}`"
    return f"`{default_literal(default)}`"


def field_notes(field: attrs.Attribute[Any], docs: dict[str, str]) -> str:
    notes: list[str] = []
    if getattr(field.validator, "min_length", None) == 1:
        notes.append("non-empty")
    if field.name in docs:
        notes.append(inline(docs[field.name]))
    return "; ".join(notes)


def cell(text: str) -> str:
    """`text` for a table cell: pipes escaped, except in code spans (the tables extension
    already leaves those alone, and would show the backslash)."""
    parts = text.split("`")
    return "`".join(p if i % 2 else p.replace("|", "\\|") for i, p in enumerate(parts))


def methods(cls: type) -> list[str]:
    """The public methods `cls` defines itself, as list items with their summary."""
    items: list[str] = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        function = member.__func__ if isinstance(member, classmethod | staticmethod) else member
        if not inspect.isfunction(function):
            continue
        signature = inspect.signature(function)
        params = ", ".join(parameters(signature, drop_self=not isinstance(member, staticmethod)))
        owner = f"{cls.__name__}." if isinstance(member, classmethod | staticmethod) else ""
        item = f"- `{owner}{name}({params}){returns(signature)}`"
        doc = inspect.getdoc(function)
        if doc:
            item += f": {inline(' '.join(paragraphs(doc)[0].split()))}"
        items.append(item)
    return items


def render_value(cls: type) -> list[str]:
    blocks = [f"### {cls.__name__}"]
    own_doc = cls.__dict__.get("__doc__")
    if isinstance(own_doc, str) and own_doc.strip():
        blocks += render_doc(inspect.cleandoc(own_doc))
    if issubclass(cls, enum.Enum):
        members = ", ".join(f"`{m.name}` (`{default_literal(m.value)}`)" for m in cls)
        blocks.append(f"An enum: {members}.")
    elif attrs.has(cls):
        docs = attribute_docs(cls)
        table = [
            [
                f"`{field.name}`",
                cell(f"`{annotation(field.type)}`"),
                cell(field_default(field)),
                cell(field_notes(field, docs)),
            ]
            for field in attrs.fields(cls)
        ]
        header = ["Field", "Type", "Default", "Notes"]
        if not any(row[3] for row in table):  # no notes: no empty column
            header, table = header[:3], [row[:3] for row in table]
        rows = [header, ["---"] * len(header), *table]
        blocks.append("\n".join(f"| {' | '.join(row)} |" for row in rows))
    else:
        raise SystemExit(f"{cls.__qualname__} is neither an attrs class nor an enum")
    items = methods(cls)
    if items:
        blocks.append("\n".join(items))
    blocks += see_also(VALUE_SEE_ALSO.get(cls.__name__, ()))
    return blocks


# -- the page ---------------------------------------------------------------------------------


def see_also(links: Sequence[tuple[str, str]]) -> list[str]:
    if not links:
        return []
    return ["**See also:** " + ", ".join(f"[{text}]({target})" for text, target in links) + "."]


def first_clause(text: str) -> str:
    """The first clause of a ``Called:`` paragraph: where the hook runs."""
    return re.split(r"[,;:.]\s", " ".join(text.split()) + " ", maxsplit=1)[0].strip()


def summary_row(hook: Hook) -> str:
    parts = paragraphs(hook.doc)
    purpose = " ".join(parts[0].split()) if parts else ""
    called = next((first_clause(p[len("Called:") :]) for p in parts if p.startswith("Called:")), "")
    flags = ", ".join(f"`{flag}`" for flag in hook.flags)
    policy = f"`{hook.contract.on_failure.value}`"
    return (
        f"| [`{hook.name}`](#{hook.name}) | {cell(hook.family.name)} | {flags} | {policy} | "
        f"{cell(inline(called))} | {cell(inline(purpose))} |"
    )


def contract_line(contract: hookspecs.HookContract) -> str:
    """The hook's declared result and failure policy, as one paragraph."""
    result = contract.result
    if result is None:
        returns = "anything (not checked)"
    else:
        names = result if isinstance(result, tuple) else (result,)
        kinds = " or ".join(f"`{t.__name__}`" for t in names)
        returns = (
            f"an awaitable resolving to {kinds} or `None`"
            if contract.awaited
            else (f"{kinds} or `None`")
        )
    policy = contract.on_failure.value
    return f"**Contract:** returns {returns}; on failure `{policy}`: {contract.describe()}."


def render_hook(hook: Hook, source_aliases: dict[str, str]) -> list[str]:
    used = [
        f"{name} = {value}"
        for name, value in source_aliases.items()
        if re.search(rf"\b{re.escape(name)}\b", hook.signature)
    ]
    code = "\n".join([*used, *(["", ""] if used else []), hook.signature])
    if hook.flags:
        flags = "; ".join(f"`{flag}=True`: {FLAG_MEANINGS[flag]}" for flag in hook.flags)
    else:
        flags = "none: every implementation is called"
    return [
        f"## {hook.name}",
        f"*{hook.family.title[:1].upper()}{hook.family.title[1:]}.*",
        f"```python\n{code}\n```",
        f"**Spec flags:** {flags}.",
        contract_line(hook.contract),
        *render_doc(hook.doc),
        *see_also(SEE_ALSO.get(hook.name, ())),
    ]


def intro() -> list[str]:
    module_doc = inspect.getdoc(hookspecs) or ""
    conventions = [
        block for block in render_doc(module_doc, _MODULE_LABEL) if block.startswith("**")
    ]
    return [
        "# Hook reference",
        "<!-- Generated by `python docs/gen_hooks.py` from openrtc_core/hookspecs.py and "
        "openrtc_core/models.py: edit their docstrings and run it, not this file. -->",
        "Every hook OpenRTC defines, generated from `openrtc_core/hookspecs.py`. A plugin "
        "implements any subset of them: a function or method named after the hook, decorated "
        "with `openrtc_core.hookimpl`, and taking any subset of the hook's parameters, by "
        "name ([Writing plugins](plugins.md)). A hook's arguments are never renamed or "
        "removed once released; new ones are only ever appended, so an implementation "
        "written for an older release keeps working.",
        *conventions,
        "**Order** is pluggy's call order ([Call order](plugins.md#call-order)). Every hook "
        "is called through pluggy, so `wrapper=True` and `hookwrapper=True` implementations "
        "([Hook wrappers](plugins.md#hook-wrappers)) and `OPENRTC_TRACE_HOOKS=1` "
        "([Tracing hook calls](plugins.md#tracing-hook-calls)) work on all of them.",
        "Where each hook is called during one call, from the job request to the session's "
        "end, is drawn in [Architecture](architecture.md). The values hooks receive are "
        "described [at the end](#values-passed-to-hooks).",
    ]


def values_intro() -> list[str]:
    exported = set(openrtc_core.__all__)
    missing = [cls.__name__ for cls in VALUE_CLASSES if cls.__name__ not in exported]
    if missing:
        raise SystemExit(f"not exported from openrtc_core: {', '.join(missing)}")
    lead = " ".join((inspect.getdoc(models) or "").split())
    return [
        "## Values passed to hooks",
        f"{lead} Each is importable from `openrtc_core`. The classes are frozen `attrs` "
        "classes with keyword-only constructors: derive a changed copy with `attrs.evolve`. "
        "Mappings inside them are read-only.",
    ]


def render() -> str:
    all_hooks = hooks()
    source_aliases = aliases(inspect.getsource(hookspecs))
    table = [
        "| Hook | Family | Spec flags | On failure | Called | Purpose |",
        "| --- | --- | --- | --- | --- | --- |",
        *(summary_row(hook) for hook in all_hooks),
    ]
    blocks: list[str] = [*intro(), "\n".join(table)]
    for hook in all_hooks:
        blocks += render_hook(hook, source_aliases)
    blocks += values_intro()
    for cls in VALUE_CLASSES:
        blocks += render_value(cls)
    return "\n\n".join(blocks) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    return write_or_check(
        argv,
        description="Generate the hook reference page.",
        page=PAGE,
        render=render,
        command=COMMAND,
    )


if __name__ == "__main__":
    sys.exit(main())
