"""Pool configuration errors: raised at once, naming the input and the fix."""

from __future__ import annotations

import pickle

import pytest
from livekit.agents import Agent

from openrtc_core import AgentContext, AgentPool, PoolConfigError
from openrtc_core.discovery import DISABLE_ENV
from openrtc_core.origins import restore_pool


class SupportAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Help with support questions.")


class NotAnAgent:
    pass


POOL = AgentPool(llm="openai/gpt-4.1-mini", greeting="Greet the caller.", load_plugins=False)
POOL.add("support", SupportAgent, default=True)
POOL.add("sales", SupportAgent, llm="openai/gpt-4.1-nano", greeting=None)
POOL.add("booking", lambda ctx: SupportAgent())


@pytest.mark.parametrize("name", ["", "Support", "-x", "_x", "a b", "ü", "a.b", 3, None])
def test_bad_agent_names_are_refused(name: object) -> None:
    pool = AgentPool(load_plugins=False)
    with pytest.raises(PoolConfigError, match="lowercase letters, digits"):
        pool.add(name, SupportAgent)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["support", "sales-eu", "a_1", "9lives"])
def test_good_agent_names_are_taken(name: str) -> None:
    pool = AgentPool(load_plugins=False)
    assert pool.add(name, SupportAgent).name == name


def test_duplicate_name_is_refused() -> None:
    pool = AgentPool(load_plugins=False)
    pool.add("support", SupportAgent)
    with pytest.raises(PoolConfigError, match="'support' is already registered"):
        pool.add("support", SupportAgent)


def test_non_agent_class_is_refused() -> None:
    pool = AgentPool(load_plugins=False)
    with pytest.raises(PoolConfigError, match="NotAnAgent is a class but not a livekit Agent"):
        pool.add("x", NotAnAgent)  # type: ignore[arg-type]


def test_non_callable_is_refused() -> None:
    pool = AgentPool(load_plugins=False)
    with pytest.raises(PoolConfigError, match="neither an Agent subclass nor a callable"):
        pool.add("x", "SupportAgent")  # type: ignore[arg-type]


def test_agent_instance_is_refused_with_the_fix() -> None:
    pool = AgentPool(load_plugins=False)
    with pytest.raises(PoolConfigError, match="Pass the class, or a factory"):
        pool.add("x", SupportAgent())  # type: ignore[arg-type]


def test_unknown_session_option_names_the_closest_keyword() -> None:
    with pytest.raises(PoolConfigError, match=r"'tss' \(did you mean 'tts'\?\)"):
        AgentPool(tss="cartesia/sonic-3", load_plugins=False)
    pool = AgentPool(load_plugins=False)
    with pytest.raises(PoolConfigError, match=r"pool.add\('x', ...\): unknown session option"):
        pool.add("x", SupportAgent, llm_model="gpt")


def test_a_keyword_of_a_plugin_that_is_not_here_names_the_plugin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Disabled where the plugin is installed, missing where it is not: either way the error
    # says which distribution gives the keyword, not that it is a misspelt session option.
    monkeypatch.setenv(DISABLE_ENV, "tenancy")
    with pytest.raises(PoolConfigError) as caught:
        AgentPool(tenants="tenants.toml")
    message = str(caught.value)
    assert message.startswith("AgentPool(tenants=) is provided by openrtc-tenancy ("), message
    assert message.endswith(("which is not installed", "or --disable-plugins")), message
    assert "session option" not in message and "did you mean" not in message
    # A keyword no plugin of ours gives is still a session option, misspelt.
    with pytest.raises(PoolConfigError, match=r"unknown option 'tenats' \(did you mean"):
        AgentPool(tenats="tenants.toml")


def test_two_defaults_are_refused() -> None:
    pool = AgentPool(load_plugins=False)
    pool.add("a", SupportAgent, default=True)
    with pytest.raises(PoolConfigError, match="'a' already is"):
        pool.add("b", SupportAgent, default=True)


def test_server_options_owned_by_the_pool_are_refused() -> None:
    with pytest.raises(PoolConfigError, match="job_executor_type"):
        AgentPool(server_options={"job_executor_type": "thread"}, load_plugins=False)


def test_empty_pool_cannot_build_a_server() -> None:
    with pytest.raises(PoolConfigError, match="no agents"):
        AgentPool(load_plugins=False).create_server()


def test_unknown_isolation_backend_lists_the_available_ones() -> None:
    pool = AgentPool(isolation="coroutines", load_plugins=False)
    pool.add("a", SupportAgent)
    with pytest.raises(
        PoolConfigError, match=r"'coroutines' is not .* available: coroutine, process, thread"
    ):
        pool.create_server()


def test_overrides_and_greeting_resolution() -> None:
    assert POOL.default_agent == "support"
    assert POOL.get("sales").overrides == {"llm": "openai/gpt-4.1-nano"}
    assert POOL.get("support").greeting_or(POOL.settings.greeting) == "Greet the caller."
    assert POOL.get("sales").greeting_or(POOL.settings.greeting) is None
    assert POOL.get("booking").is_factory
    with pytest.raises(PoolConfigError, match="no agent named 'nope'"):
        POOL.get("nope")


def test_pool_pickles_by_reference_for_job_processes() -> None:
    restored = pickle.loads(pickle.dumps(POOL))
    assert restored is POOL
    func, _ = POOL.__reduce__()
    assert func is restore_pool


def test_factory_context_is_frozen() -> None:
    ctx = AgentContext(job_id="j", room_name="r", agent="booking", metadata={"lang": "fr"})
    assert ctx.metadata["lang"] == "fr"
    with pytest.raises(TypeError):
        ctx.metadata["lang"] = "en"  # type: ignore[index]


def test_process_isolation_can_keep_warm_processes() -> None:
    pool = AgentPool(
        isolation="process", server_options={"num_idle_processes": 3}, load_plugins=False
    )
    pool.add("a", SupportAgent)
    server = pool.create_server()
    assert server._num_idle_processes == 3
    coroutine = AgentPool(server_options={"num_idle_processes": 3}, load_plugins=False)
    coroutine.add("a", SupportAgent)
    assert coroutine.create_server()._num_idle_processes == 50  # its own load share


def test_process_isolation_preloads_openrtc_and_its_plugins_in_the_forkserver() -> None:
    pool = AgentPool(isolation="process", server_options={"preload_modules": ["mylib"]})
    pool.add("a", SupportAgent)
    preloaded = pool.create_server()._preload_modules
    # The user's own preloads first and kept; then OpenRTC and every loaded plugin's module.
    assert preloaded[:2] == ["mylib", "openrtc_core"]
    assert "openrtc_testing.plugin" in preloaded
    assert len(preloaded) == len(set(preloaded))
    coroutine = AgentPool(load_plugins=False)
    coroutine.add("a", SupportAgent)
    assert coroutine.create_server()._preload_modules == []  # no job processes to preload
