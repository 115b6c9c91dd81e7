"""Whether a verb reloads code: ``dev`` when a reload strategy is installed, others when asked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from e2e_pools import SupportAgent

from openrtc_core import AgentPool, ReloadContext, hookimpl
from openrtc_core.cli.verbs import reload_choice


class Strategy:
    @hookimpl
    def openrtc_register_reload_strategies(
        self, register: Callable[[str, Callable[[ReloadContext], Any]], None]
    ) -> None:
        register("watch", lambda context: None)


def pool(installed: bool) -> AgentPool:
    built = AgentPool(load_plugins=False, plugins=[Strategy()] if installed else [])
    built.add("support", SupportAgent)
    return built


@pytest.mark.parametrize(
    ("verb", "args", "installed", "expected"),
    [
        ("dev", [], True, (True, ["--no-reload"])),
        ("dev", [], False, (False, ["--no-reload"])),
        ("dev", ["--no-reload", "--url", "x"], True, (False, ["--url", "x", "--no-reload"])),
        ("dev", ["--reload"], False, (True, ["--no-reload"])),
        ("start", [], True, (False, [])),
        ("start", ["--reload"], True, (True, [])),
        ("start", ["--reload", "--no-reload"], True, (False, [])),
        ("console", ["--reload"], True, (False, ["--reload"])),
    ],
)
def test_reload_is_on_for_dev_when_installed_and_asked_for_otherwise(
    verb: str, args: list[str], installed: bool, expected: tuple[bool, list[str]]
) -> None:
    assert reload_choice(pool(installed), verb, list(args)) == expected


def test_asking_for_reload_with_no_strategy_installed_says_what_to_install() -> None:
    from openrtc_core import PoolConfigError

    with pytest.raises(PoolConfigError, match="pip install openrtc-reload"):
        pool(installed=False).create_server(reload=True)
