"""examples/kubernetes/ is valid Kubernetes, and keeps what lets a pod end every call.

Each manifest is checked against the API schema of a pinned Kubernetes version, unknown fields
failing; then the settings that make a rollout, a node drain or a scale-down wait for calls to
end are read from the parsed manifests. Every check is also run on a broken copy of the example,
so none of them can pass without looking.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # the package ships no type hints
import pytest
import yaml

from openrtc_core.deployment import VERSION_ENV

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "kubernetes"
# kubernetes-validate bundles the schemas of several versions (so this runs offline); pinned so
# that a new release of it does not change what passes. Raise it on purpose.
KUBERNETES_VERSION = "1.36"
# After the drain timeout the supervisor still reports the calls left and exits: the grace
# period must leave it this long before the kubelet kills the container.
EXIT_MARGIN_S = 30
# Read by kubectl, not by the API server, so it has no schema; checked by its own test below.
NOT_API_KINDS = {"Kustomization"}
SECRET_EXAMPLE = "secret.example.yaml"
PLACEHOLDER = "REPLACE-ME"
PROBE_MODULE = "openrtc_deploy.probe"
LIVEKIT_CREDENTIALS = {"LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"}

Manifest = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Reading the example


def yaml_files() -> list[Path]:
    return sorted([*EXAMPLE.glob("*.yaml"), *EXAMPLE.glob("*.yml")])


def documents(path: Path) -> list[Manifest]:
    """Every YAML document in `path`, skipping empty ones (a trailing ``---``)."""
    loaded = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    for index, doc in enumerate(loaded):
        assert isinstance(doc, dict), f"{path.name}, document {index + 1}: not a mapping"
    return loaded


def example() -> list[Manifest]:
    return [doc for path in yaml_files() for doc in documents(path)]


def api_object_params() -> list[Any]:
    return [
        pytest.param(doc, id=f"{path.name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}")
        for path in yaml_files()
        for doc in documents(path)
        if doc.get("kind") not in NOT_API_KINDS
    ]


def the(kind: str, objects: list[Manifest]) -> Manifest:
    found = [doc for doc in objects if doc.get("kind") == kind]
    assert len(found) == 1, f"{EXAMPLE.relative_to(ROOT)} should hold one {kind}, not {len(found)}"
    return found[0]


def pod_spec(objects: list[Manifest]) -> Manifest:
    spec: Manifest = the("Deployment", objects)["spec"]["template"]["spec"]
    return spec


def argv(container: Manifest) -> list[str]:
    return [str(arg) for arg in [*container.get("command", []), *container.get("args", [])]]


def agents_container(objects: list[Manifest]) -> Manifest:
    """The container running ``openrtc start``; its full command must be in the manifest."""
    found = [
        container
        for container in pod_spec(objects)["containers"]
        if (args := argv(container))
        and PurePosixPath(args[0]).name == "openrtc"
        and "start" in args[1:]
    ]
    assert len(found) == 1, (
        f"expected one container whose command is `openrtc start ...`, found {len(found)}; "
        "give the full command in the Deployment (not only the image's ENTRYPOINT)"
    )
    container: Manifest = found[0]
    return container


def option(args: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE``; the last one wins, as in click."""
    value = None
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(f"{name}="):
            value = arg.partition("=")[2]
    return value


def env_literal(container: Manifest, name: str) -> str | None:
    for var in container.get("env", []):
        if var.get("name") == name and "value" in var:
            return str(var["value"])
    return None


def control_path(args: list[str], container: Manifest) -> str | None:
    """``--control``, else ``OPENRTC_CONTROL`` (probes run in the container, with its env)."""
    return option(args, "--control") or env_literal(container, "OPENRTC_CONTROL")


def probe_action(handler: Manifest | None) -> str | None:
    """``ready`` for an exec of ``python -m openrtc_deploy.probe ready ...``, else None."""
    args = argv({"command": (handler or {}).get("exec", {}).get("command", [])})
    if len(args) < 4 or not PurePosixPath(args[0]).name.startswith("python"):
        return None
    return args[3] if args[1:3] == ["-m", PROBE_MODULE] else None


def probe_handlers(container: Manifest) -> dict[str, Manifest]:
    """Every exec handler that talks to the supervisor, by where it sits in the container."""
    handlers: dict[str, Manifest] = {
        name: container[name]
        for name in ("startupProbe", "livenessProbe", "readinessProbe")
        if name in container
    }
    if "preStop" in container.get("lifecycle", {}):
        handlers["lifecycle.preStop"] = container["lifecycle"]["preStop"]
    return {name: handler for name, handler in handlers.items() if probe_action(handler)}


def is_zero(value: int | str) -> bool:
    """An IntOrString of a rolling update or a budget (``0``, ``"0%"``) that allows nothing."""
    return float(str(value).removesuffix("%")) == 0


def cpus(quantity: object) -> float | None:
    """A CPU quantity (``4``, ``"4"``, ``"3500m"``) in CPUs; None if it does not parse."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m?)", str(quantity))
    if not match:
        return None
    return float(match.group(1)) / (1000 if match.group(2) else 1)


# ---------------------------------------------------------------------------------------------
# What a pod must keep so that no call is cut. Each returns the problems found, none if good.


def grace_period_outlasts_the_drain(objects: list[Manifest]) -> list[str]:
    drain = option(argv(agents_container(objects)), "--drain-timeout")
    if drain is None:
        return ["pass --drain-timeout to `openrtc start` (livekit's default is 3600 s)"]
    grace = pod_spec(objects).get("terminationGracePeriodSeconds", 30)
    if grace < int(drain) + EXIT_MARGIN_S:
        return [
            f"terminationGracePeriodSeconds is {grace}, --drain-timeout {drain}: give the pod at "
            f"least {int(drain) + EXIT_MARGIN_S} s, or the kubelet kills calls still draining"
        ]
    return []


def rollout_never_lowers_capacity(objects: list[Manifest]) -> list[str]:
    strategy = the("Deployment", objects)["spec"].get("strategy", {})
    rolling = strategy.get("rollingUpdate", {})
    problems = []
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        problems.append(f"strategy.type is {strategy['type']}; use RollingUpdate")
    # Kubernetes' default for both is 25%.
    if not is_zero(rolling.get("maxUnavailable", "25%")):
        problems.append(
            f"maxUnavailable is {rolling.get('maxUnavailable', '25% (the default)')}; use 0, so "
            "no old pod is removed before its replacement is ready"
        )
    if is_zero(rolling.get("maxSurge", "25%")):
        problems.append("maxSurge is 0; with maxUnavailable 0 the rollout could not start a pod")
    return problems


def prestop_drains(objects: list[Manifest]) -> list[str]:
    pre_stop = agents_container(objects).get("lifecycle", {}).get("preStop")
    if probe_action(pre_stop) != "drain":
        return [
            f"lifecycle.preStop should run `python -m {PROBE_MODULE} drain --control ...`, "
            f"found {pre_stop}"
        ]
    return []


def probes_follow_the_supervisor(objects: list[Manifest]) -> list[str]:
    container = agents_container(objects)
    problems = []
    if probe_action(container.get("readinessProbe")) != "ready":
        problems.append(
            f"readinessProbe should run `python -m {PROBE_MODULE} ready`: not ready until every "
            "worker is registered, and not ready while draining"
        )
    # Probing readiness for liveness would restart a pod whose workers are still registering.
    for name in ("livenessProbe", "startupProbe"):
        if name in container and probe_action(container[name]) != "alive":
            problems.append(f"{name} should run `python -m {PROBE_MODULE} alive`")
    return problems


def control_socket_is_shared(objects: list[Manifest]) -> list[str]:
    container = agents_container(objects)
    socket = control_path(argv(container), container)
    if socket is None:
        return ["pass --control PATH to `openrtc start` (or set OPENRTC_CONTROL)"]
    problems = []
    for name, handler in probe_handlers(container).items():
        used = control_path(argv({"command": handler["exec"]["command"]}), container)
        if used != socket:
            problems.append(f"{name} talks to {used}, but the supervisor listens on {socket}")
    volumes = {volume["name"]: volume for volume in pod_spec(objects).get("volumes", [])}
    mounts = [
        mount
        for mount in container.get("volumeMounts", [])
        if PurePosixPath(socket).parent.is_relative_to(mount["mountPath"])
        and not mount.get("readOnly", False)
        and "emptyDir" in volumes.get(mount["name"], {})
    ]
    if not mounts:
        problems.append(
            f"mount a writable emptyDir at the folder of {socket}: the root filesystem is read-only"
        )
    return problems


def budget_covers_the_pool(objects: list[Manifest]) -> list[str]:
    deployment = the("Deployment", objects)
    pod_labels = deployment["spec"]["template"]["metadata"].get("labels", {})
    namespace = deployment["metadata"].get("namespace")
    budgets = [
        doc
        for doc in objects
        if doc.get("kind") == "PodDisruptionBudget"
        and doc["metadata"].get("namespace") == namespace
        and not doc["spec"].get("selector", {}).get("matchExpressions")
        and (selector := doc["spec"].get("selector", {}).get("matchLabels"))
        and selector.items() <= pod_labels.items()
    ]
    if not budgets:
        return [f"no PodDisruptionBudget selects the pod labels {pod_labels} (by matchLabels)"]
    problems = []
    replicas = deployment["spec"].get("replicas", 1)
    for budget in budgets:
        spec = budget["spec"]
        # A budget that allows no eviction blocks every node drain and cluster upgrade.
        if ("maxUnavailable" in spec and is_zero(spec["maxUnavailable"])) or (
            isinstance(spec.get("minAvailable"), int) and spec["minAvailable"] >= replicas
        ):
            problems.append(f"{budget['metadata']['name']} allows no pod to be evicted")
    return problems


def cpu_limit_sets_the_worker_count(objects: list[Manifest]) -> list[str]:
    limits = agents_container(objects).get("resources", {}).get("limits", {})
    problems = []
    count = cpus(limits.get("cpu"))
    # The supervisor runs one worker per CPU of the quota, rounded up: 1.5 CPUs run 2 workers.
    if count is None or count < 1 or not count.is_integer():
        problems.append(f"limits.cpu is {limits.get('cpu')}; give a whole number of CPUs")
    if "memory" not in limits:
        problems.append("give limits.memory")
    return problems


def runs_unprivileged(objects: list[Manifest]) -> list[str]:
    spec = pod_spec(objects)
    container = agents_container(objects)
    context = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
    problems = [
        f"securityContext.{field} should be {wanted}"
        for field, wanted in (
            ("runAsNonRoot", True),
            ("readOnlyRootFilesystem", True),
            ("allowPrivilegeEscalation", False),
        )
        if context.get(field) is not wanted
    ]
    if "ALL" not in context.get("capabilities", {}).get("drop", []):
        problems.append("securityContext.capabilities.drop should hold ALL")
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    if not any(
        mount["mountPath"] == "/tmp" and "emptyDir" in volumes.get(mount["name"], {})
        for mount in container.get("volumeMounts", [])
    ):
        problems.append("mount an emptyDir at /tmp: the root filesystem is read-only")
    return problems


def credentials_come_from_the_secret(objects: list[Manifest]) -> list[str]:
    secret = the("Secret", objects)
    referenced = {
        source["secretRef"]["name"]
        for source in agents_container(objects).get("envFrom", [])
        if "secretRef" in source
    }
    problems = []
    if secret["metadata"]["name"] not in referenced:
        problems.append(f"envFrom does not name the Secret {secret['metadata']['name']}")
    if missing := LIVEKIT_CREDENTIALS - set(secret.get("stringData", {})):
        problems.append(f"the Secret lacks {sorted(missing)}")
    if "data" in secret:
        problems.append("the example Secret uses stringData only, so its placeholders are visible")
    problems += [
        f"the example Secret's {key} is not a {PLACEHOLDER} placeholder"
        for key, value in secret.get("stringData", {}).items()
        if PLACEHOLDER not in str(value)
    ]
    return problems


def version_follows_the_image(objects: list[Manifest]) -> list[str]:
    container = agents_container(objects)
    tag = str(container["image"]).rpartition(":")[2]
    labels = the("Deployment", objects)["spec"]["template"]["metadata"].get("labels", {})
    problems = []
    if labels.get("app.kubernetes.io/version") != tag:
        problems.append(f"the label app.kubernetes.io/version should be the image tag {tag}")
    version: Manifest = next(
        (var for var in container.get("env", []) if var["name"] == VERSION_ENV), {}
    )
    from_label = "metadata.labels['app.kubernetes.io/version']"
    if version.get("value") != tag and (
        version.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != from_label
    ):
        problems.append(f"{VERSION_ENV} should be the image tag {tag} or read {from_label}")
    return problems


CHECKS: list[Callable[[list[Manifest]], list[str]]] = [
    grace_period_outlasts_the_drain,
    rollout_never_lowers_capacity,
    prestop_drains,
    probes_follow_the_supervisor,
    control_socket_is_shared,
    budget_covers_the_pool,
    cpu_limit_sets_the_worker_count,
    runs_unprivileged,
    credentials_come_from_the_secret,
    version_follows_the_image,
]


# ---------------------------------------------------------------------------------------------
# Schema


def test_the_example_holds_a_pool_a_budget_a_secret_and_a_kustomization() -> None:
    # Guards the parametrized tests below against running on nothing.
    kinds = sorted(str(doc.get("kind")) for doc in example())
    assert kinds == ["Deployment", "Kustomization", "PodDisruptionBudget", "Secret"]


@pytest.mark.parametrize("manifest", api_object_params())
def test_manifest_matches_the_kubernetes_schema(manifest: Manifest) -> None:
    # An unknown kind raises SchemaNotFoundError here, failing the test rather than skipping it.
    validated = kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    assert str(validated) == KUBERNETES_VERSION


def _container(deployment: Manifest) -> Manifest:
    container: Manifest = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def _rename(mapping: Manifest, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


@pytest.mark.parametrize(
    ("breakage", "reported"),
    [
        pytest.param(
            lambda d: _rename(_container(d), "readinessProbe", "readinesProbe"),
            "'readinesProbe' was unexpected",
            id="misspelled-field",
        ),
        pytest.param(
            lambda d: _rename(_container(d)["lifecycle"], "preStop", "prestop"),
            "'prestop' was unexpected",
            id="wrong-case-field",
        ),
        pytest.param(
            lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriodSeconds="660"),
            "is not of type 'integer'",
            id="string-for-integer",
        ),
        pytest.param(
            lambda d: _container(d)["readinessProbe"]["exec"].update(command="python -m probe"),
            "is not of type 'array'",
            id="string-for-list",
        ),
        pytest.param(
            lambda d: d["spec"]["template"]["spec"].pop("containers"),
            "'containers' is a required property",
            id="missing-required-field",
        ),
    ],
)
def test_the_schema_check_rejects_a_broken_deployment(
    breakage: Callable[[Manifest], object], reported: str
) -> None:
    broken = copy.deepcopy(the("Deployment", example()))
    breakage(broken)
    with pytest.raises(kubernetes_validate.ValidationError, match=re.escape(reported)):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_applies_the_pool_and_not_the_placeholder_secret() -> None:
    kustomization = the("Kustomization", example())
    listed = kustomization.get("resources", [])
    assert all((EXAMPLE / name).is_file() for name in listed), listed
    # Applying the folder must never overwrite real credentials with the placeholders.
    expected = {
        path.name
        for path in yaml_files()
        if path.name != SECRET_EXAMPLE
        and not any(doc.get("kind") in NOT_API_KINDS for doc in documents(path))
    }
    assert sorted(listed) == sorted(expected)


# ---------------------------------------------------------------------------------------------
# Invariants for zero dropped calls


@pytest.mark.parametrize("check", CHECKS, ids=[check.__name__ for check in CHECKS])
def test_the_example_keeps(check: Callable[[list[Manifest]], list[str]]) -> None:
    assert check(example()) == []


def _pool(objects: list[Manifest]) -> Manifest:
    return agents_container(objects)


def _set_arg(objects: list[Manifest], name: str, value: str) -> None:
    container = _pool(objects)
    command = container["command"]
    command[command.index(name) + 1] = value


BREAKAGES: list[Any] = [
    pytest.param(
        grace_period_outlasts_the_drain,
        lambda o: pod_spec(o).update(terminationGracePeriodSeconds=600),
        id="grace-equal-to-drain",
    ),
    pytest.param(
        grace_period_outlasts_the_drain,
        lambda o: _set_arg(o, "--drain-timeout", "900"),
        id="drain-raised-alone",
    ),
    pytest.param(
        grace_period_outlasts_the_drain,
        lambda o: pod_spec(o).pop("terminationGracePeriodSeconds"),
        id="default-grace-period",
    ),
    pytest.param(
        rollout_never_lowers_capacity,
        lambda o: the("Deployment", o)["spec"]["strategy"]["rollingUpdate"].pop("maxUnavailable"),
        id="default-max-unavailable",
    ),
    pytest.param(
        rollout_never_lowers_capacity,
        lambda o: the("Deployment", o)["spec"].update(strategy={"type": "Recreate"}),
        id="recreate",
    ),
    pytest.param(
        prestop_drains,
        lambda o: _pool(o)["lifecycle"].update(preStop={"sleep": {"seconds": 600}}),
        id="prestop-sleeps",
    ),
    pytest.param(
        prestop_drains,
        lambda o: _pool(o)["lifecycle"]["preStop"]["exec"]["command"].__setitem__(3, "alive"),
        id="prestop-probes-alive",
    ),
    pytest.param(
        probes_follow_the_supervisor,
        lambda o: _pool(o).pop("readinessProbe"),
        id="no-readiness",
    ),
    pytest.param(
        probes_follow_the_supervisor,
        lambda o: _pool(o).update(livenessProbe=copy.deepcopy(_pool(o)["readinessProbe"])),
        id="liveness-on-readiness",
    ),
    pytest.param(
        control_socket_is_shared,
        lambda o: _set_arg(o, "--control", "/tmp/other/control.sock"),
        id="socket-path-differs",
    ),
    pytest.param(
        control_socket_is_shared,
        lambda o: _pool(o).update(
            volumeMounts=[m for m in _pool(o)["volumeMounts"] if m["mountPath"] != "/run/openrtc"]
        ),
        id="socket-folder-not-mounted",
    ),
    pytest.param(
        budget_covers_the_pool,
        lambda o: the("PodDisruptionBudget", o)["spec"]["selector"].update(
            matchLabels={"app.kubernetes.io/name": "other"}
        ),
        id="budget-selects-other-pods",
    ),
    pytest.param(
        budget_covers_the_pool,
        lambda o: the("PodDisruptionBudget", o)["spec"].update(maxUnavailable=0),
        id="budget-allows-nothing",
    ),
    pytest.param(
        cpu_limit_sets_the_worker_count,
        lambda o: _pool(o)["resources"]["limits"].update(cpu="1500m"),
        id="fractional-cpu",
    ),
    pytest.param(
        cpu_limit_sets_the_worker_count,
        lambda o: _pool(o)["resources"].pop("limits"),
        id="no-limits",
    ),
    pytest.param(
        runs_unprivileged,
        lambda o: _pool(o)["securityContext"].update(readOnlyRootFilesystem=False),
        id="writable-root",
    ),
    pytest.param(
        runs_unprivileged,
        lambda o: _pool(o)["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
        id="capabilities-kept",
    ),
    pytest.param(
        credentials_come_from_the_secret,
        lambda o: the("Secret", o)["stringData"].update(LIVEKIT_API_SECRET="s3cr3t"),
        id="real-looking-value",
    ),
    pytest.param(
        credentials_come_from_the_secret,
        lambda o: _pool(o).pop("envFrom"),
        id="secret-not-used",
    ),
    pytest.param(
        version_follows_the_image,
        lambda o: _pool(o).update(image="ghcr.io/example/voice-agents:1.5.0"),
        id="image-bumped-alone",
    ),
]


@pytest.mark.parametrize(("check", "breakage"), BREAKAGES)
def test_a_broken_example_is_caught(
    check: Callable[[list[Manifest]], list[str]], breakage: Callable[[list[Manifest]], object]
) -> None:
    broken = copy.deepcopy(example())
    breakage(broken)
    assert check(broken), f"{check.__name__} found nothing wrong"
