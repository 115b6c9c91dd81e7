"""Options plugins add to the run verbs, to ``pool.run(...)`` and to ``AgentPool(...)``.

A plugin declares each option once (``openrtc_add_run_options``): its flag, the verbs that
take it, its environment variable, its help, how its text becomes a value. The core then
shows it in each verb's help and the command reference, takes it out of the command line
before livekit's CLI sees the rest, and resolves one value per option for the run, highest
first:

1. the command line (``--replicas 4``; the last one given wins);
2. code: ``pool.run(replicas=4)``, then ``AgentPool(replicas=4)`` for options that accept it;
3. the option's environment variable (``OPENRTC_REPLICAS``);
4. its default (which may depend on the verb).

The values are parsed once, in the process the command started; the processes it starts
(forked workers, job processes) read them from :data:`RUN_OPTIONS_ENV`, so a job process
sees the same values without parsing anything.
"""

from __future__ import annotations

import json
import keyword
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, Protocol

import attrs

from .deployment import DeployVersion
from .errors import PoolConfigError
from .models import PoolView

logger = logging.getLogger("openrtc.options")

RUN_VERBS: Final = ("dev", "start", "console", "connect")
"""The verbs that run a worker, and so take run options."""
RUN_OPTIONS_ENV: Final = "OPENRTC_RUN_OPTIONS"
"""The run's resolved options, as JSON, for the processes it starts."""

Value = str | int | float | bool | None
"""What an option's value may be: it crosses into job processes as JSON."""


def _flag(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if not (value.startswith("--") and len(value) > 2 and " " not in value):
        raise ValueError(
            f"{attribute.name} {value!r}: a flag is '--' and a name, e.g. '--replicas'"
        )


@attrs.frozen(kw_only=True)
class RunOption:
    """One option a plugin adds (see the module's docstring for where its value comes from)."""

    name: str
    """Its keyword in ``pool.run(...)`` (and ``AgentPool(...)`` with `pool_keyword`), and its
    key in :class:`RunOptions`: a Python identifier."""
    flag: str = attrs.field(validator=_flag)
    """The command-line flag, e.g. ``--replicas``. A `switch` also takes ``--no-`` + name."""
    help: str
    parse: Callable[[str], Value] = str
    """Turns the text of a flag, a variable or a code value into the value; raises
    ``ValueError`` with what to give instead (the message is shown after the flag)."""
    verbs: tuple[str, ...] = RUN_VERBS
    """The verbs that take it; given to another run verb, it is an error."""
    env: str = ""
    """The environment variable read when neither the command line nor code gives it."""
    switch: bool = False
    """An on/off option: ``--flag`` and ``--no-flag``; values True and False."""
    default: Value | Callable[[str], Value] = None
    """The value when nothing gives one, or a function of the verb ("" outside a verb:
    ``pool.create_server()``)."""
    pool_keyword: bool = False
    """``AgentPool(name=...)`` accepts it too (a pool's own choice, below the command line)."""
    metavar: str = "VALUE"
    old_flags: tuple[str, ...] = ()
    """Former spellings of the flag: still taken, with a note to use `flag`."""
    old_env: tuple[str, ...] = ()
    """Former names of the variable: still read, with a note to use `env`."""
    old_names: tuple[str, ...] = ()
    """Former keywords of ``pool.run(...)``: still taken, with a note to use `name`."""

    def __attrs_post_init__(self) -> None:
        if not self.name.isidentifier() or keyword.iskeyword(self.name):
            raise ValueError(f"run option name {self.name!r}: use a Python identifier")
        unknown = sorted(set(self.verbs) - set(RUN_VERBS))
        if unknown or not self.verbs:
            raise ValueError(
                f"run option {self.flag}: verbs {', '.join(unknown) or '(none)'}: use some of "
                f"{', '.join(RUN_VERBS)}"
            )

    @property
    def flags(self) -> tuple[str, ...]:
        """Every spelling the command line takes."""
        negated = (f"--no-{self.flag[2:]}",) if self.switch else ()
        return (self.flag, *negated, *self.old_flags)

    def default_for(self, verb: str) -> Value:
        return self.default(verb) if callable(self.default) else self.default

    def value_of(self, text: str, given: str) -> Value:
        """`text` (as `given`: a flag, a variable, a keyword) as this option's value."""
        if given.startswith("--"):
            shown = f"{given} {text!r}"
        elif given.endswith("=)"):
            shown = f"{given[:-1]}{text!r})"
        else:
            shown = f"{given}={text!r}"
        if self.switch:
            truth = {"1": True, "true": True, "yes": True, "on": True}
            truth |= {"0": False, "false": False, "no": False, "off": False, "": False}
            found = truth.get(text.strip().lower())
            if found is None:
                raise PoolConfigError(f"{shown}: give true or false (1 or 0)")
            return found
        try:
            value = self.parse(text)
        except ValueError as exc:
            raise PoolConfigError(f"{shown}: {exc}") from None
        if not isinstance(value, str | int | float | bool | type(None)):
            raise PoolConfigError(
                f"{shown}: the plugin's parser returned a {type(value).__name__}; an option's "
                "value is a string, number, true/false or nothing"
            )
        return value


@attrs.frozen
class Declared:
    """A run option and the plugin that added it."""

    option: RunOption
    plugin: str
    distribution: str = ""
    """The distribution that installed the plugin ("" when it was given in code)."""


def _frozen(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


@attrs.frozen
class RunOptions(Mapping[str, Value]):
    """The resolved value of every declared option for one run, and where each came from."""

    by_name: Mapping[str, Value] = attrs.field(factory=dict, converter=_frozen)
    sources: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    """How each value was given: its flag (``--replicas``), ``pool.run(replicas=)``,
    ``AgentPool(replicas=)`` or its variable; absent for a default."""
    verb: str = ""

    def __getitem__(self, name: str) -> Value:
        return self.by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_name)

    def __len__(self) -> int:
        return len(self.by_name)

    def given(self, name: str) -> bool:
        """Whether the run gave `name` (anything but its default)."""
        return name in self.sources

    def source(self, name: str) -> str:
        """How `name` was given, for messages: its flag, variable or keyword ("" for a
        default)."""
        return self.sources.get(name, "")

    def to_env(self) -> str:
        return json.dumps(
            {"verb": self.verb, "values": dict(self.by_name), "sources": dict(self.sources)}
        )

    @classmethod
    def from_env(cls, raw: str) -> RunOptions | None:
        try:
            data = json.loads(raw)
            return cls(dict(data["values"]), dict(data["sources"]), str(data["verb"]))
        except (ValueError, KeyError, TypeError):
            return None


class RunWorker(Protocol):
    def __call__(
        self, index: int, count: int, port_slot: int, *, plugins: Sequence[object] = ()
    ) -> int:
        """Run worker `index` of `count` in this (forked) process on port slot `port_slot`
        (its health port is the configured one plus the slot), with `plugins` registered on
        the pool in this process only (not in its job processes); its exit status. A
        replacement started while its predecessor still drains needs a slot of its own."""


class ResolveVersion(Protocol):
    def __call__(self, explicit: str | None = None, *, use_env: bool = True) -> DeployVersion:
        """The deployment version of the pool's code: `explicit`, else the environment's
        (unless `use_env` is false: the code now on disk), else its git commit or a hash."""


@attrs.frozen(kw_only=True)
class RunContext:
    """One run of a verb, as a plugin taking it over sees it (``openrtc_take_over_run``)."""

    pool: PoolView
    verb: str
    options: RunOptions
    args: tuple[str, ...]
    """The command line livekit's CLI gets (the verb first), without the run options."""
    prewarm: Callable[[], str]
    """Run the pool's prewarm in this process, before forking workers; says what it did."""
    run_worker: RunWorker
    setup_logging: Callable[[], None]
    """Set up livekit's production logging in this process, at the level the command asks
    for (``--log-level``), and say the deployment version once."""
    resolve_version: ResolveVersion
    command: tuple[str, ...] = attrs.field(factory=lambda: tuple(sys.orig_argv))
    """The command line that started this process: a controller of generations runs it
    again to load the code now on disk in a fresh process."""


# -- declaring ---------------------------------------------------------------------------------


def check_declared(declared: Sequence[Declared], taken: Mapping[str, str]) -> dict[str, Declared]:
    """`declared` by name, once each; a :class:`PoolConfigError` naming both plugins when two
    options share a name, a flag or a variable, or one takes a flag in `taken` (flag -> who
    has it: the core's own options, livekit's)."""
    by_name: dict[str, Declared] = {}
    owners: dict[str, str] = dict(taken)
    for item in declared:
        option = item.option
        keys = [f"name {option.name!r}", *option.flags]
        keys += [f"variable {env}" for env in (option.env, *option.old_env) if env]
        for key in keys:
            owner = owners.get(key)
            if owner is not None and owner != item.plugin:
                raise PoolConfigError(
                    f"plugins {owner} and {item.plugin} both add the run option {key}; a "
                    "flag, name or variable is one plugin's: remove or disable one of them"
                )
            owners[key] = item.plugin
        by_name[option.name] = item
    return by_name


# -- resolving ---------------------------------------------------------------------------------


Given = Mapping[str, tuple[str, str]]
"""Options given on a command line: name -> (the flag as spelled, its text)."""


def take_flags(
    declared: Mapping[str, Declared], verb: str, args: Sequence[str]
) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """The declared options `args` give (name -> (flag as spelled, text), the last one
    given winning), and `args` without them (for livekit's CLI).

    :raises PoolConfigError: an option given to a run verb that does not take it, or with no
        value.
    """
    spellings = {flag: d.option for d in declared.values() for flag in d.option.flags}
    given: dict[str, tuple[str, str]] = {}
    rest: list[str] = []
    items = iter(args)
    for arg in items:
        flag, eq, text = arg.partition("=")
        option = spellings.get(flag)
        if option is None:
            rest.append(arg)
            continue
        if verb not in option.verbs:
            raise PoolConfigError(f"{flag} is for {_verbs(option.verbs)}, not {verb}")
        if flag in option.old_flags:
            _note_renamed(flag, option.flag)
        if option.switch:
            if eq:
                raise PoolConfigError(f"{flag} takes no value; use {option.flags[0]} or --no-...")
            given[option.name] = (flag, "0" if flag.startswith("--no-") else "1")
            continue
        if not eq:
            text = next(items, "")
            if not text or text.startswith("--"):
                raise PoolConfigError(f"{flag}: give {option.metavar} after it")
        given[option.name] = (flag, text)
    return given, rest


def resolve(
    declared: Mapping[str, Declared],
    verb: str,
    *,
    flags: Given | None = None,
    run_keywords: Mapping[str, Any] | None = None,
    pool_keywords: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RunOptions:
    """Every declared option's value for `verb`, from the highest layer that gives it (see the
    module's docstring); a :class:`PoolConfigError` naming the input for one that cannot be
    used. Options a run verb does not take keep their default there."""
    env = os.environ if environ is None else environ
    values: dict[str, Value] = {}
    sources: dict[str, str] = {}
    for name, item in declared.items():
        option = item.option
        applies = verb == "" or verb in option.verbs
        spelled, text = (flags or {}).get(name, (option.flag, None))
        layers: list[tuple[str, Any]] = [(spelled, text)]
        for spelling in (name, *option.old_names):
            if spelling in (run_keywords or {}):
                if spelling != name:
                    _note_renamed(f"pool.run({spelling}=)", f"pool.run({name}=)")
                layers.append((f"pool.run({spelling}=)", (run_keywords or {})[spelling]))
                break
        layers.append((f"AgentPool({name}=)", (pool_keywords or {}).get(name)))
        if applies:
            for variable in (option.env, *option.old_env):
                found = env.get(variable, "").strip() if variable else ""
                if found:
                    if variable in option.old_env:
                        _note_renamed(variable, option.env)
                    layers.append((variable, found))
                    break
        for given, raw in layers:
            if raw is None:
                continue
            values[name] = option.value_of(_text(raw, given), given)
            sources[name] = given
            break
        else:
            values[name] = option.default_for(verb)
    return RunOptions(values, sources, verb)


def _text(raw: Any, given: str) -> str:
    if isinstance(raw, bool):
        return "1" if raw else "0"
    if isinstance(raw, str | int | float):
        return str(raw)
    if isinstance(raw, os.PathLike):
        return str(os.fspath(raw))
    raise PoolConfigError(f"{given[:-1]}{raw!r}): give a string, a number, a path or true/false")


def _verbs(verbs: Sequence[str]) -> str:
    return " and ".join(", ".join(verbs).rsplit(", ", 1))


_NOTED: set[str] = set()


def _note_renamed(old: str, new: str) -> None:
    if old not in _NOTED:
        _NOTED.add(old)
        logger.warning("%s is now %s; the old spelling still works, for now", old, new)


# -- the run's values, in this process and those it starts -----------------------------------


def export(options: RunOptions) -> Callable[[], None]:
    """Make `options` the values of every process this one starts from now on; returns what
    puts the environment back (for a run that did not start after all)."""
    previous = os.environ.get(RUN_OPTIONS_ENV)
    os.environ[RUN_OPTIONS_ENV] = options.to_env()

    def withdraw() -> None:
        if previous is None:
            os.environ.pop(RUN_OPTIONS_ENV, None)
        else:
            os.environ[RUN_OPTIONS_ENV] = previous

    return withdraw


def inherited() -> RunOptions | None:
    """The values the command that started this process resolved, when one did."""
    raw = os.environ.get(RUN_OPTIONS_ENV, "")
    return RunOptions.from_env(raw) if raw else None
