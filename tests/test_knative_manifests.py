"""knative/*.yaml and knative/stack.yml: what the API server and Knative's webhook would accept.

Three layers, each proven to reject a broken copy (the parametrized negative tests):

1. The CRD's ``openAPIV3Schema`` (from ``../shared/knative``) with ``jsonschema``, plus the
   structural-schema pruning rule ``kubectl apply --validate=strict`` enforces: a field the schema
   does not declare is an error (a typo such as ``readinesProbe`` would otherwise be dropped
   silently by the API server).
2. The admission webhook's rules the schema cannot express (one container, one port, probes on
   the serving port, reserved env names, timeout bounds, autoscaling annotations).
3. Drift against the code: every ``NSFWOID_*`` name is a real setting in ``function/config.py``,
   the values parse with the function's own ``Settings.from_env`` and equal its defaults, and the
   image, port, user and model dir agree with the Containerfile and the OpenFaaS stack.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from function.budget import budget_from_limit
from function.config import Settings
from function.decode import frame_cost

REPO = Path(__file__).resolve().parents[1]
KNATIVE = REPO / "knative"
CRDS = REPO.parent / "shared" / "knative"
CONFIG_SOURCE = REPO / "function" / "config.py"
CONTAINERFILE = REPO / "Containerfile"

SERVICE_NAME = "nsfwoid"
UPLOADED_TYPE = "org.nsfwoid.image.uploaded"
# Knative's webhook: set by the platform, rejected in a Service's env.
RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"})
# Ports the queue-proxy and the autoscaler's metrics use inside the pod.
RESERVED_PORTS = frozenset({8012, 8013, 8022, 9090, 9091})
PORT_NAMES = frozenset({"", "http1", "h2c"})
MAX_TIMEOUT_SECONDS = 600  # Knative's default max-revision-timeout-seconds
MAX_CONTAINER_CONCURRENCY = 1000  # Knative's default container-concurrency-max-limit
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
ISO_DURATION = re.compile(
    r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$"
)


def load_one(path: Path) -> dict[str, Any]:
    (doc,) = load_all(path)
    return doc


def load_all(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def service_doc() -> dict[str, Any]:
    return load_one(KNATIVE / "service.yaml")


def trigger_docs() -> list[dict[str, Any]]:
    return load_all(KNATIVE / "trigger.yaml")


def stack_doc() -> dict[str, Any]:
    return load_one(KNATIVE / "stack.yml")


def container_of(service: dict[str, Any]) -> dict[str, Any]:
    container = service["spec"]["template"]["spec"]["containers"][0]
    assert isinstance(container, dict)
    return container


def env_of(service: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container_of(service).get("env", [])}


# ---------------------------------------------------------------------------------------------
# Layer 1: the CRD schema


@pytest.fixture(scope="module")
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind) -> openAPIV3Schema`` for every CRD version in ../shared/knative."""
    if not CRDS.is_dir():
        pytest.skip(f"Knative CRDs not found at {CRDS} (the workspace's shared/knative folder)")
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for doc in load_all(path):
            if doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                api_version = f"{group}/{version['name']}"
                schemas[(api_version, kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> Iterator[str]:
    """Fields the structural schema does not declare (the API server prunes them silently)."""
    if path == "" and isinstance(value, dict):
        # apiVersion, kind and metadata are the API server's own, whatever the CRD declares.
        value = {k: v for k, v in value.items() if k not in ("apiVersion", "kind", "metadata")}
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            if properties is not None and key in properties:
                yield from unknown_fields(item, properties[key], f"{path}.{key}")
            elif isinstance(additional, dict):
                yield from unknown_fields(item, additional, f"{path}.{key}")
            elif properties is not None or additional is False:
                yield f"{path}.{key}: unknown field"
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from unknown_fields(item, schema["items"], f"{path}[{index}]")


def metadata_problems(doc: dict[str, Any]) -> Iterator[str]:
    """ObjectMeta, which the CRD schema leaves to the API server."""
    metadata = doc.get("metadata") or {}
    name = metadata.get("name", "")
    if not DNS_1035_LABEL.match(name):
        yield f"metadata.name {name!r} is not a DNS-1035 label"
    for field in ("labels", "annotations"):
        for key, item in (metadata.get(field) or {}).items():
            if not isinstance(item, str):
                yield f"metadata.{field}.{key}: value must be a string, got {item!r}"


def schema_problems(doc: dict[str, Any], schemas: dict[tuple[str, str], dict[str, Any]]) -> list:
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    if key not in schemas:
        return [f"no CRD for {key} in {CRDS}"]
    schema = schemas[key]
    validator = jsonschema.Draft202012Validator(schema)
    problems = [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(doc)
    ]
    problems += list(unknown_fields(doc, schema))
    problems += list(metadata_problems(doc))
    return problems


# ---------------------------------------------------------------------------------------------
# Layer 2: Knative's webhook rules


def quantity(raw: str | int | float) -> Decimal:
    """A Kubernetes resource quantity (``500m``, ``2``, ``512Mi``, ``1G``) as a number."""
    text = str(raw)
    suffixes: dict[str, int | Decimal] = {
        "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
        "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    }  # fmt: skip
    for suffix, factor in suffixes.items():
        if text.endswith(suffix):
            return Decimal(text[: -len(suffix)]) * Decimal(factor)
    return Decimal(text)


def probe_problems(name: str, probe: Any, port: int, path: str) -> Iterator[str]:
    if not isinstance(probe, dict):
        yield f"{name}: missing"
        return
    handlers = [h for h in ("httpGet", "tcpSocket", "grpc", "exec") if h in probe]
    if handlers != ["httpGet"]:
        yield f"{name}: needs exactly one handler, an httpGet, got {handlers}"
        return
    http_get = probe["httpGet"]
    if http_get.get("port") not in (None, port, "http1"):
        yield f"{name}: port {http_get.get('port')!r} is not the serving port {port}"
    if http_get.get("path") != path:
        yield f"{name}: path {http_get.get('path')!r}, expected {path}"


def service_rule_problems(service: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    template = service.get("spec", {}).get("template", {})
    spec = template.get("spec", {})
    containers = spec.get("containers") or []
    if len(containers) != 1:
        return [f"exactly one container is supported, got {len(containers)}"]
    container = containers[0]

    ports = container.get("ports") or []
    if len(ports) != 1:
        problems.append(f"exactly one container port is allowed, got {len(ports)}")
    port = ports[0].get("containerPort", 8080) if ports else 8080
    if ports and ports[0].get("name", "") not in PORT_NAMES:
        problems.append(f"port name {ports[0].get('name')!r} must be one of http1, h2c")
    if port in RESERVED_PORTS or not 0 < port < 65536:
        problems.append(f"containerPort {port} is reserved or invalid")

    problems += probe_problems("readinessProbe", container.get("readinessProbe"), port, "/readyz")
    problems += probe_problems("livenessProbe", container.get("livenessProbe"), port, "/healthz")

    concurrency = spec.get("containerConcurrency", 0)
    if not isinstance(concurrency, int) or not 0 <= concurrency <= MAX_CONTAINER_CONCURRENCY:
        problems.append(f"containerConcurrency {concurrency!r} is not an integer in 0..1000")
        concurrency = 0

    env = env_of(service)
    deadline = float(env.get("NSFWOID_REQUEST_DEADLINE") or Settings().request_deadline)
    timeout = spec.get("timeoutSeconds")
    if timeout is None or not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        problems.append(f"timeoutSeconds {timeout} must be set, within 1..600")
    elif timeout <= deadline:
        problems.append(f"timeoutSeconds {timeout} must exceed the function's deadline {deadline}")

    names = [item.get("name", "") for item in container.get("env", [])]
    if len(names) != len(set(names)):
        problems.append("duplicate env names")
    for name in names:
        if name in RESERVED_ENV or name.startswith("K_"):
            problems.append(f"env {name} is reserved by Knative")
        elif not name.startswith("NSFWOID_"):
            problems.append(f"env {name} is not a setting of the function (NSFWOID_*)")

    resources = container.get("resources", {})
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    for resource in ("cpu", "memory"):
        if resource not in requests or resource not in limits:
            problems.append(f"resources: {resource} needs a request and a limit")
        elif quantity(limits[resource]) < quantity(requests[resource]):
            problems.append(f"resources: {resource} limit is below its request")

    annotations = template.get("metadata", {}).get("annotations", {})
    prefix = "autoscaling.knative.dev/"
    if annotations.get(prefix + "min-scale") != "0":
        problems.append('min-scale must be "0" (scale to zero)')
    max_scale = annotations.get(prefix + "max-scale", "")
    if not max_scale.isdigit() or int(max_scale) < 1:
        problems.append(f"max-scale must be a positive integer, got {max_scale!r}")
    target = annotations.get(prefix + "target", "")
    try:
        target_value = float(target)
    except ValueError:
        problems.append(f"target must be a number, got {target!r}")
    else:
        if not 0 < target_value <= (concurrency or MAX_CONTAINER_CONCURRENCY):
            problems.append(f"target {target} must be > 0 and <= containerConcurrency")
    if service.get("metadata", {}).get("annotations", {}).keys() & {
        prefix + "min-scale",
        prefix + "max-scale",
    }:
        problems.append("autoscaling annotations belong on spec.template.metadata")

    image = container.get("image", "")
    pinned = "@sha256:" in image or ":" in image.rsplit("/", 1)[-1]
    if not pinned or image.endswith(":latest"):
        problems.append(f"image {image!r} needs a fixed tag or a digest")
    return problems


def trigger_rule_problems(trigger: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    spec = trigger.get("spec", {})
    if not spec.get("broker") and not spec.get("brokerRef"):
        problems.append("a broker is required")
    subscriber = spec.get("subscriber", {})
    if ("ref" in subscriber) == ("uri" in subscriber):
        problems.append("subscriber needs exactly one of ref, uri")
    attributes = spec.get("filter", {}).get("attributes", {})
    if not isinstance(attributes.get("type"), str) or not attributes["type"]:
        problems.append("filter.attributes.type must select one event type")
    delivery = spec.get("delivery", {})
    if delivery.get("backoffPolicy", "exponential") not in ("linear", "exponential"):
        problems.append(f"backoffPolicy {delivery.get('backoffPolicy')!r}")
    if "backoffDelay" in delivery and not ISO_DURATION.match(str(delivery["backoffDelay"])):
        problems.append(f"backoffDelay {delivery['backoffDelay']!r} is not an ISO-8601 duration")
    retry = delivery.get("retry", 0)
    if not isinstance(retry, int) or retry < 0:
        problems.append(f"retry must be an integer >= 0, got {retry!r}")
    sink = delivery.get("deadLetterSink")
    if sink is None or ("ref" in sink) == ("uri" in sink):
        problems.append("deadLetterSink needs exactly one of ref, uri")
    return problems


# ---------------------------------------------------------------------------------------------
# Layer 3: drift against the code


def config_env_names() -> set[str]:
    """``NSFWOID_*`` names that function/config.py reads (``PREFIX + "X"`` or spelled out)."""
    source = CONFIG_SOURCE.read_text(encoding="utf-8")
    names = {"NSFWOID_" + s for s in re.findall(r'PREFIX\s*\+\s*"([A-Z0-9_]+)"', source)}
    return names | set(re.findall(r'"(NSFWOID_[A-Z0-9_]+)"', source))


def env_problems(env: dict[str, str]) -> list[str]:
    known = config_env_names()
    problems = [f"{name} is not read by function/config.py" for name in env if name not in known]
    try:
        Settings.from_env(env)
    except ValueError as exc:
        return [*problems, f"Settings.from_env rejects the manifest: {exc}"]
    # Values may differ from the code's defaults: production sets its own (an allowlist of
    # image hosts, internal names); only names and types are the code's to say.
    return problems


def containerfile_value(pattern: str) -> str:
    match = re.search(pattern, CONTAINERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, f"{pattern!r} not found in the Containerfile"
    return match.group(1)


# ---------------------------------------------------------------------------------------------
# The manifests as written


def test_service_matches_the_crd_schema(crd_schemas):
    assert schema_problems(service_doc(), crd_schemas) == []


def test_triggers_match_the_crd_schema(crd_schemas):
    for trigger in trigger_docs():
        assert schema_problems(trigger, crd_schemas) == [], trigger["metadata"]["name"]


def test_service_follows_the_webhook_rules():
    assert service_rule_problems(service_doc()) == []


def test_service_is_a_scale_to_zero_service_for_this_function():
    service = service_doc()
    assert service["metadata"]["name"] == SERVICE_NAME
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "0"
    assert int(annotations["autoscaling.knative.dev/max-scale"]) >= 1
    # Admission control inside the function and the queue-proxy's hard limit agree.
    env = env_of(service)
    # Knative's hard limit never exceeds what the function admits, so the function's own 503
    # stays a backstop that admitted traffic does not hit.
    assert 0 < template["spec"]["containerConcurrency"] <= int(env["NSFWOID_MAX_IN_FLIGHT"])


def test_service_env_names_are_real_settings_with_values_they_parse_to():
    assert env_problems(env_of(service_doc())) == []


def test_production_values_off_the_defaults_can_be_shipped():
    production = {
        "NSFWOID_ALLOWED_HOSTS": "upload.wikimedia.org",
        "NSFWOID_PRIVATE_HOSTS": "thumbor.discovery.wmnet",
        "NSFWOID_CA_BUNDLE": "/etc/ssl/certs/wmf-ca-certificates.crt",
        "NSFWOID_MAX_FRAMES": "4",
    }
    assert env_problems({**env_of(service_doc()), **production}) == []


def test_service_agrees_with_the_containerfile():
    container = container_of(service_doc())
    assert container["ports"][0]["containerPort"] == int(containerfile_value(r"^EXPOSE (\d+)"))
    user = containerfile_value(r"^USER (\d+)")
    assert container["securityContext"]["runAsUser"] == int(user)
    assert env_of(service_doc())["NSFWOID_MODEL_DIR"] == containerfile_value(
        r"NSFWOID_MODEL_DIR=(\S+)"
    )


def test_triggers_follow_the_webhook_rules():
    for trigger in trigger_docs():
        assert trigger_rule_problems(trigger) == [], trigger["metadata"]["name"]


def test_trigger_routes_uploads_to_the_service_and_scores_to_a_sink():
    by_type = {t["spec"]["filter"]["attributes"]["type"]: t for t in trigger_docs()}
    score = by_type[UPLOADED_TYPE]["spec"]
    assert score["subscriber"]["ref"] == {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "name": SERVICE_NAME,
    }
    assert score["delivery"]["retry"] >= 1
    assert "deadLetterSink" in score["delivery"]
    # The reply the function sends back to the broker is what the second trigger selects.
    reply_type = env_of(service_doc())["NSFWOID_EVENT_TYPE"]
    assert reply_type == Settings().event_type
    store = by_type[reply_type]["spec"]
    assert store["subscriber"]["ref"]["name"] != SERVICE_NAME  # no scoring loop


WATCHDOG_ENV = {
    "mode",
    "upstream_url",
    "ready_path",
    "exec_timeout",
    "read_timeout",
    "write_timeout",
}
OPENFAAS_CONTAINERFILE = KNATIVE / "openfaas.Containerfile"


def _containerfile_env(text: str) -> dict[str, str]:
    """The ENV block of knative/openfaas.Containerfile as a dict (KEY=value pairs)."""
    block = re.search(r"^ENV (.*?)(?=^\S)", text, re.MULTILINE | re.DOTALL)
    assert block, "no ENV block"
    pairs = re.findall(r'(\w+)=("[^"]*"|\S+)', block.group(1))
    return {key: value.strip('"') for key, value in pairs}


def test_openfaas_stack_runs_the_same_image_behind_of_watchdog_http_mode():
    stack = stack_doc()
    assert stack["version"] == 1.0
    assert stack["provider"]["name"] == "openfaas"
    function = stack["functions"][SERVICE_NAME]
    service = service_doc()
    container = container_of(service)
    # The OpenFaaS image is the Knative image with of-watchdog added, nothing else.
    text = OPENFAAS_CONTAINERFILE.read_text(encoding="utf-8")
    assert f"ARG IMAGE={container['image']}" in text
    assert function["image"] == container["image"].replace("/nsfwoid:", "/nsfwoid-openfaas:")
    image_env = _containerfile_env(text)
    assert image_env["mode"] == "http" and image_env["port"] == "8080"
    assert image_env["upstream_url"] == f"http://127.0.0.1:{image_env['PORT']}"
    assert image_env["PORT"] != image_env["port"]  # ours behind, the watchdog's in front
    assert image_env["fprocess"].endswith("-m function.serve")
    assert image_env["ready_path"] == "/readyz"
    env = function["environment"]
    watchdog = {k: str(env[k]) for k in WATCHDOG_ENV}
    assert watchdog == {k: image_env[k] for k in WATCHDOG_ENV}
    for timeout in ("exec_timeout", "read_timeout", "write_timeout"):
        assert int(watchdog[timeout].removesuffix("s")) > Settings().request_deadline
    env = {k: v for k, v in env.items() if k not in WATCHDOG_ENV}
    assert not RESERVED_ENV & env.keys()
    assert env_problems({k: str(v) for k, v in env.items()}) == []
    shared = env.keys() & env_of(service).keys()
    assert {k: str(env[k]) for k in shared} == {k: env_of(service)[k] for k in shared}
    annotations = function["annotations"]
    assert annotations["com.openfaas.health.http.path"] == "/_/health"
    assert annotations["com.openfaas.ready.http.path"] == "/_/ready"
    labels = function["labels"]
    assert labels["com.openfaas.scale.zero"] == "true"
    assert 1 <= int(labels["com.openfaas.scale.min"]) <= int(labels["com.openfaas.scale.max"])
    resources = container["resources"]
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            assert quantity(function[kind][resource]) == quantity(resources[kind][resource])


def test_memory_limit_leaves_a_decode_budget_for_the_largest_allowed_images():
    """The worker's decode budget (the limit less the runtime's reserve) fits one image of
    the pixel cap in the costliest formats: with less, those would all be refused (422)."""
    limit = int(quantity(container_of(service_doc())["resources"]["limits"]["memory"]))
    assert quantity(stack_doc()["functions"][SERVICE_NAME]["limits"]["memory"]) == limit
    settings = Settings.from_env(env_of(service_doc()))
    assert settings.decode_memory_bytes is None  # the budget follows the limit
    budget = budget_from_limit(limit)
    for fmt in ("PNG", "TIFF", "BMP", "WEBP"):
        assert frame_cost(fmt, settings.max_pixels, 1, animated=False) <= budget, fmt


# ---------------------------------------------------------------------------------------------
# Broken copies are rejected: the checks above can fail


Path_ = tuple[str | int, ...]


def _parent(doc: dict[str, Any], path: Path_) -> Any:
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    return node


def _set(path: Path_, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        _parent(doc, path)[path[-1]] = value

    return mutate


def _delete(path: Path_) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        del _parent(doc, path)[path[-1]]

    return mutate


def _rename(path: Path_, new_key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        parent = _parent(doc, path)
        parent[new_key] = parent.pop(path[-1])

    return mutate


def _add_env(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        container_of(doc)["env"].append({"name": name, "value": value})

    return mutate


def _second_port(doc: dict[str, Any]) -> None:
    container_of(doc)["ports"].append({"name": "h2c", "containerPort": 8081})


def _second_container(doc: dict[str, Any]) -> None:
    containers = doc["spec"]["template"]["spec"]["containers"]
    containers.append({**copy.deepcopy(containers[0]), "name": "sidecar"})


T: Path_ = ("spec", "template", "spec")
C: Path_ = (*T, "containers", 0)
A: Path_ = ("spec", "template", "metadata", "annotations")
SCALE = "autoscaling.knative.dev/"
BROKEN_SERVICES = {
    "two ports": _second_port,
    "two containers": _second_container,
    "timeout above 600": _set((*T, "timeoutSeconds"), 601),
    "timeout not above the deadline": _set((*T, "timeoutSeconds"), 30),
    "no timeout": _delete((*T, "timeoutSeconds")),
    "readiness on another port": _set((*C, "readinessProbe", "httpGet", "port"), 9999),
    "liveness on another port": _set((*C, "livenessProbe", "httpGet", "port"), 8081),
    "readiness on /healthz": _set((*C, "readinessProbe", "httpGet", "path"), "/healthz"),
    "liveness as tcpSocket": _set((*C, "livenessProbe"), {"tcpSocket": {}}),
    "negative concurrency": _set((*T, "containerConcurrency"), -1),
    "concurrency above 1000": _set((*T, "containerConcurrency"), 1001),
    "concurrency as a string": _set((*T, "containerConcurrency"), "16"),
    "PORT in env": _add_env("PORT", "8080"),
    "K_SERVICE in env": _add_env("K_SERVICE", "x"),
    "a foreign env name": _add_env("MODEL_DIR", "/app/model"),
    "an env value that is a number": _add_env("NSFWOID_MAX_FRAMES", 8),
    "min-scale 1": _set((*A, SCALE + "min-scale"), "1"),
    "no max-scale": _delete((*A, SCALE + "max-scale")),
    "target above containerConcurrency": _set((*A, SCALE + "target"), "32"),
    "memory limit below request": _set((*C, "resources", "limits", "memory"), "256Mi"),
    "cpu limit below request": _set((*C, "resources", "limits", "cpu"), "1500m"),
    "a typo in a field": _rename((*C, "readinessProbe"), "readinesProbe"),
    "a reserved port": _set((*C, "ports", 0, "containerPort"), 8012),
    "a latest image": _set((*C, "image"), "ghcr.io/nsfwoid/nsfwoid:latest"),
    "an upper-case name": _set(("metadata", "name"), "NSFWoid"),
}


@pytest.mark.parametrize("mutation", BROKEN_SERVICES.values(), ids=BROKEN_SERVICES.keys())
def test_a_broken_service_is_rejected(mutation, crd_schemas):
    broken = copy.deepcopy(service_doc())
    mutation(broken)
    problems = schema_problems(broken, crd_schemas) + service_rule_problems(broken)
    assert problems, "the broken copy passed every check"


BROKEN_SETTINGS = {
    "a setting that does not exist": {"NSFWOID_MAX_SOMETHING": "1"},
    "a value the parser rejects": {"NSFWOID_RUNTIME": "onnx"},
    "a value of the wrong type": {"NSFWOID_MAX_FRAMES": "eight"},
    "a boolean that is not one": {"NSFWOID_ALLOW_PRIVATE_NETWORKS": "maybe"},
}


@pytest.mark.parametrize("extra", BROKEN_SETTINGS.values(), ids=BROKEN_SETTINGS.keys())
def test_broken_settings_are_rejected(extra):
    assert env_problems({**env_of(service_doc()), **extra})


BROKEN_TRIGGERS = {
    "no subscriber target": _set(("spec", "subscriber"), {}),
    "a bad backoff delay": _set(("spec", "delivery", "backoffDelay"), "1s"),
    "an unknown backoff policy": _set(("spec", "delivery", "backoffPolicy"), "random"),
    "retry as a string": _set(("spec", "delivery", "retry"), "5"),
    "no dead-letter sink": _delete(("spec", "delivery", "deadLetterSink")),
    "no type filter": _set(("spec", "filter"), {"attributes": {}}),
    "a typo in a field": _rename(("spec", "subscriber"), "subscribers"),
    "an unknown top-level field": _set(("specs",), {}),
}


@pytest.mark.parametrize("mutation", BROKEN_TRIGGERS.values(), ids=BROKEN_TRIGGERS.keys())
def test_a_broken_trigger_is_rejected(mutation, crd_schemas):
    broken = copy.deepcopy(trigger_docs()[0])
    mutation(broken)
    problems = schema_problems(broken, crd_schemas) + trigger_rule_problems(broken)
    assert problems, "the broken copy passed every check"


def test_every_deployment_gives_the_same_memory_limit() -> None:
    """The limit is derived from a measured peak (docs/performance.md, "Memory") and the decode
    budget follows it: every way of deploying the image must give the pod the same one."""
    expected = service_doc()["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    isvc = yaml.safe_load((KNATIVE / "inferenceservice.yaml").read_text())
    helm = yaml.safe_load((REPO / ".pipeline" / "values.yaml").read_text())
    openfaas = yaml.safe_load((KNATIVE / "stack.yml").read_text())
    limits = {
        "inferenceservice.yaml": isvc["spec"]["predictor"]["containers"][0]["resources"]["limits"],
        ".pipeline/values.yaml": helm["app"]["limits"],
        "stack.yml": next(iter(openfaas["functions"].values()))["limits"],
    }
    for name, limit in limits.items():
        assert limit["memory"] == expected["memory"], name
