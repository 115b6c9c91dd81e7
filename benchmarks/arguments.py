"""Command-line pieces the benchmarks share: a parser that reports a bad argument in one line,
and numeric options checked before anything runs."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

NumericOption = tuple[str, type[int] | type[float], float, float, str]
"""``(flag, int or float, lowest value, default, what it is)``."""


class OneLineParser(argparse.ArgumentParser):
    """Reports a bad argument as one ``error:`` line naming it, and exits with status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def number(kind: type[int] | type[float], low: float) -> Callable[[str], Any]:
    """An argparse type: a finite `kind` of at least `low`."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value < math.inf:
            whole = "whole " if kind is int else ""
            raise argparse.ArgumentTypeError(f"{text!r}: use a {whole}number of at least {low:g}")
        return value

    return parse


def add_numeric_options(parser: argparse.ArgumentParser, options: Sequence[NumericOption]) -> None:
    for flag, kind, low, default, what in options:
        parser.add_argument(
            flag, type=number(kind, low), default=default, help=f"{what} ({default})"
        )
