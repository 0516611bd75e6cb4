"""`.pipeline/`: the blubberfile, PipelineLib config and Helm values, held to what the real
tools enforce (tests/blubber_rules.py) and to the Containerfile they must agree with.

The checker is proven strict before it is trusted: Blubber's own examples pass, the Lift Wing
files (schema-valid, but with a key Blubber v1.8.0 rejects) fail, and so does each hand-made
mistake. Reference schemas and examples come from ../shared/wikimedia.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from function.config import Settings
from tests import blubber_rules as rules
from tests.test_knative_manifests import env_problems, service_doc

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / ".pipeline"
BLUBBERFILE = PIPELINE / "blubber.yaml"
PIPELINE_CONFIG = PIPELINE / "config.yaml"
VALUES = PIPELINE / "values.yaml"
CONTAINERFILE = REPO / "Containerfile"
EXAMPLES = rules.SHARED / "blubber" / "examples"
FEATURE = EXAMPLES / "blubber-v1.8.0.06-python-builder.feature"
STRICT_EXAMPLES = sorted(EXAMPLES.glob("blubber-v1.8.0.*.yaml")) if EXAMPLES.is_dir() else []
OBSOLETE_EXAMPLES = [
    EXAMPLES / "liftwing.langid.blubber.yaml",
    rules.SHARED / "liftwing/nsfw.blubber.yaml",
]
PIPELINE_EXAMPLES = sorted((rules.SHARED / "pipelinelib" / "examples").glob("*.yaml"))

needs_shared = pytest.mark.skipif(
    not rules.BLUBBER_SCHEMA.is_file() or not rules.PIPELINE_SCHEMA.is_file(),
    reason="../shared/wikimedia (Blubber and PipelineLib schemas) is not beside the repository",
)


@pytest.fixture(scope="module")
def blubber_schema() -> dict[str, Any]:
    return json.loads(rules.BLUBBER_SCHEMA.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pipeline_schema() -> dict[str, Any]:
    return rules.load(rules.PIPELINE_SCHEMA)


def blubberfile() -> dict[str, Any]:
    return rules.load(BLUBBERFILE)


# ---------------------------------------------------------------------------------------------
# The checker is strict: known-good files pass, known-bad ones fail


@needs_shared
@pytest.mark.parametrize("path", STRICT_EXAMPLES, ids=lambda p: p.name)
def test_blubbers_own_examples_pass(path: Path, blubber_schema: dict[str, Any]) -> None:
    assert rules.blubber_problems(rules.load(path), blubber_schema) == []


@needs_shared
def test_the_python_builder_feature_examples_pass(blubber_schema: dict[str, Any]) -> None:
    docs = rules.feature_docstrings(FEATURE)
    assert len(docs) == 6
    for doc in docs:
        assert rules.blubber_problems(yaml.safe_load(doc), blubber_schema) == [], doc


@needs_shared
@pytest.mark.parametrize("path", OBSOLETE_EXAMPLES, ids=lambda p: p.name)
def test_the_obsolete_flag_passes_the_schema_but_not_blubber(
    path: Path, blubber_schema: dict[str, Any]
) -> None:
    config = rules.load(path)
    assert rules.schema_errors(config, blubber_schema) == []  # the schema alone misses it
    problems = rules.blubber_problems(config, blubber_schema)
    assert problems == [
        "(top).variants.production.python.use-system-flag: unknown key "
        "(renamed 'use-system-site-packages')"
    ]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def mutate(doc: dict[str, Any]) -> None:
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        node[last] = value

    return mutate


def _rename_variant(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        doc["variants"][new] = doc["variants"].pop(old)

    return mutate


BROKEN_BLUBBERFILES = {
    "version v3": _set("version", "v3"),
    "no version": lambda doc: doc.pop("version"),
    "an unknown top-level key": _set("frobnicate", 1),
    "an unknown key in a builder": _set("variants.build.builders.0.python.use-system-flag", False),
    "an unknown key in runs": _set("variants.production.runs.user", "nsfwoid"),
    "a typo in a copies entry": _set("variants.production.copies.0.destinaton", "/x"),
    "runs as root": _set("variants.production.runs.as", "root"),
    "runs as uid 0": _set("variants.production.runs.uid", 0),
    "lives as root": _set("lives.as", "root"),
    "a relative lives.in": _set("lives.in", "app"),
    "lives in /": _set("lives.in", "/"),
    "a relative runs.in": _set("variants.production.runs.in", "srv"),
    "a one-letter variant name": _rename_variant("convert", "c"),
    "a variant name with an underscore": _rename_variant("convert", "convert_model"),
    "an include of a missing variant": _set("variants.production.includes", ["nowhere"]),
    "a copy from a missing variant": _set("variants.production.copies.0.from", "buidl"),
    "a local copy from an absolute path": _set(
        "variants.test.copies", [{"from": "local", "source": "/etc", "destination": "etc"}]
    ),
    "a destination without a source": _set(
        "variants.production.copies", [{"from": "build", "destination": "/opt/venv"}]
    ),
    "an entrypoint as a string": _set("variants.production.entrypoint", "python -m function"),
    "a bad environment name": _set("variants.production.runs.environment.1BAD", "x"),
    "a bad apt package": _set("variants.build.apt.packages", ["Python3 venv"]),
    "a base that is not an image": _set("base", "Not An Image!"),
    "python twice in builders": _set(
        "variants.build.builders", [{"python": {"version": "python3"}}] * 2
    ),
    "builders beside python": _set("variants.build.python", {"version": "python3"}),
    "an apt source that is not http": _set("apt.sources", [{"url": "ftp://deb.example"}]),
}


@needs_shared
@pytest.mark.parametrize("mutation", BROKEN_BLUBBERFILES.values(), ids=BROKEN_BLUBBERFILES.keys())
def test_a_broken_blubberfile_is_rejected(
    mutation: Callable[[dict[str, Any]], None], blubber_schema: dict[str, Any]
) -> None:
    broken = copy.deepcopy(blubberfile())
    mutation(broken)
    assert rules.blubber_problems(broken, blubber_schema), "the broken copy passed every check"


@needs_shared
@pytest.mark.parametrize("path", PIPELINE_EXAMPLES, ids=lambda p: p.name)
def test_lift_wings_pipeline_configs_pass(path: Path, pipeline_schema: dict[str, Any]) -> None:
    assert rules.pipeline_problems(rules.load(path), pipeline_schema) == []


BROKEN_PIPELINES = {
    "no pipelines": lambda doc: doc.pop("pipelines"),
    "a typo in a stage key": _set("pipelines.test.stages.0.bulid", "test"),
    "a build of a missing variant": _set("pipelines.publish.stages.0.build", "prod"),
    "execution naming a missing stage": _set("pipelines.test.execution", [["run-test", "lint"]]),
    "a stage defined twice": lambda doc: doc["pipelines"]["test"]["stages"].append(
        {"name": "run-test", "build": "test", "run": False}
    ),
    "a missing blubberfile": _set("pipelines.test.blubberfile", "nsfwoid/blubber.yaml"),
    "an unknown key in publish.image": _set("pipelines.publish.stages.0.publish.image.tag_", "x"),
}


@needs_shared
@pytest.mark.parametrize("mutation", BROKEN_PIPELINES.values(), ids=BROKEN_PIPELINES.keys())
def test_a_broken_pipeline_config_is_rejected(
    mutation: Callable[[dict[str, Any]], None], pipeline_schema: dict[str, Any]
) -> None:
    broken = copy.deepcopy(rules.load(PIPELINE_CONFIG))
    mutation(broken)
    assert rules.pipeline_problems(broken, pipeline_schema, PIPELINE), "passed every check"


# ---------------------------------------------------------------------------------------------
# Ours


@needs_shared
def test_our_blubberfile_passes_blubbers_rules(blubber_schema: dict[str, Any]) -> None:
    assert rules.blubber_problems(blubberfile(), blubber_schema) == []


def test_our_blubberfile_pins_the_v1_8_frontend_and_wikimedia_bases() -> None:
    first = BLUBBERFILE.read_text(encoding="utf-8").splitlines()[0]
    assert re.fullmatch(
        r"# syntax=docker-registry\.wikimedia\.org/repos/releng/blubber/buildkit:v1\.8\.\d+", first
    )
    config = blubberfile()
    bases = [config["base"], *(v.get("base") for v in config["variants"].values())]
    for base in filter(None, bases):
        assert re.fullmatch(r"docker-registry\.wikimedia\.org/(python3-)?bookworm:\d{8}", base)
    assert {"build", "convert", "test", "production"} <= config["variants"].keys()


@needs_shared
def test_our_pipeline_config_passes_pipelinelib(pipeline_schema: dict[str, Any]) -> None:
    config = rules.load(PIPELINE_CONFIG)
    assert rules.pipeline_problems(config, pipeline_schema, PIPELINE) == []
    test = config["pipelines"]["test"]["stages"]
    assert {"name": "run-test", "build": "test", "run": True} in test
    publish = config["pipelines"]["publish"]["stages"]
    production = [s for s in publish if s["build"] == "production"]
    assert production and production[0]["publish"]["image"]["tags"]


def test_the_test_variant_runs_the_suite() -> None:
    test = blubberfile()["variants"]["test"]
    assert test["entrypoint"][:3] == ["/opt/venv/bin/python", "-m", "pytest"]
    assert "local" in test["copies"]  # the whole checkout, tests included
    python = test["builders"][0]["python"]
    assert python["requirements"] == ["requirements-dev.lock"]


# ---------------------------------------------------------------------------------------------
# Blubber's production variant and the Containerfile build the same image


def runtime_stage() -> str:
    text = CONTAINERFILE.read_text(encoding="utf-8")
    return text[text.index("AS runtime") :]


def stage(name: str) -> str:
    text = CONTAINERFILE.read_text(encoding="utf-8")
    start = text.index(f"AS {name}\n")
    end = text.find("\nFROM ", start)
    return text[start : end if end != -1 else None]


def _env(stage_text: str) -> dict[str, str]:
    block = re.search(r"^ENV (.*?)(?=^\S)", stage_text, re.M | re.S)
    assert block, "no ENV block"
    return dict(re.findall(r"(\w+)=(\S+)", block.group(1)))


def _python_builder(variant: dict[str, Any]) -> dict[str, Any]:
    return next(b["python"] for b in variant["builders"] if "python" in b)


def test_production_and_the_containerfile_install_the_same_lock() -> None:
    variants = blubberfile()["variants"]
    for variant, lock in (("build", "requirements.lock"), ("convert", "requirements-convert.lock")):
        python = _python_builder(variants[variant])
        assert python["requirements"] == [lock]
        assert python["no-deps"] is True  # every transitive package comes from the lock
    assert _python_builder(variants["build-litert"])["requirements"] == ["requirements-litert.lock"]
    serve, convert = stage("serve-deps"), stage("convert")
    assert "lock=requirements.lock;" in serve and "lock=requirements-litert.lock;" in serve
    assert "--require-hashes" in serve
    assert "--require-hashes --no-deps -r requirements-convert.lock" in convert
    # Both venvs live where the entrypoint expects them.
    assert _python_builder(variants["build"])["venv"] == "/opt/venv"
    assert "/opt/venv" in serve


def test_production_and_the_containerfile_run_the_same_way() -> None:
    production = blubberfile()["variants"]["production"]
    runtime = runtime_stage()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", runtime, re.M).group(1))  # type: ignore[union-attr]
    assert production["entrypoint"] == cmd
    user = re.search(r"^USER (\d+):(\d+)$", runtime, re.M)
    assert user is not None
    runs = production["runs"]
    assert (runs["uid"], runs["gid"]) == (int(user.group(1)), int(user.group(2)))
    assert runs["uid"] != 0 and runs["as"] != "root"
    assert not runs.get("insecurely")
    expose = re.search(r"^EXPOSE (\d+)$", runtime, re.M)
    assert expose is not None
    env = _env(runtime)
    blubber_env = runs["environment"]
    assert blubber_env["PORT"] == env["PORT"] == expose.group(1)
    for name in ("NSFWOID_MODEL_DIR", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"):
        assert blubber_env[name] == env[name]
    assert blubber_env["PATH"].startswith("/opt/venv/bin:")
    assert blubberfile()["lives"]["in"] == re.search(r"^WORKDIR (\S+)$", runtime, re.M).group(1)  # type: ignore[union-attr]


def _copies(stage_text: str) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY in a Containerfile stage (continuation lines joined)."""
    joined = stage_text.replace("\\\n", " ")
    result = []
    for line in re.findall(r"^COPY (.*)$", joined, re.M):
        args = [a for a in line.split() if not a.startswith("--")]
        result.append((args[:-1], args[-1]))
    return result


def test_production_and_the_containerfile_ship_the_same_files() -> None:
    production = blubberfile()["variants"]["production"]
    shipped = {entry["destination"].rstrip("/") for entry in production["copies"]}
    # The model stage picks the artefacts; the default (WITH_LITERT=0) removes the .tflite.
    model = stage("model")
    removed = set(re.findall(r"rm /model/(\S+);", model))
    assert removed == {"open_nsfw.tflite"}
    model_files = {Path(s).name for sources, _ in _copies(model) for s in sources} - removed
    copied: set[str] = set()
    for _, destination in _copies(runtime_stage()):
        if destination.rstrip("/") == "/app/model":
            copied |= {f"/app/model/{name}" for name in model_files}
        else:
            copied.add(destination.rstrip("/"))
    # Blubber renders openapi.json inside the /app/function/ it copies from the build variant.
    copied.discard("/app/function/openapi.json")
    assert shipped == copied
    assert copied == {
        "/opt/venv",
        "/app/function",
        "/app/model/open_nsfw.onnx",
        "/app/model/manifest.json",
    }


def test_the_openapi_document_is_rendered_at_build_time() -> None:
    build = blubberfile()["variants"]["build"]
    custom = next(b["custom"] for b in build["builders"] if "custom" in b)
    assert custom["command"][-4:] == ["-m", "function.spec", "--out", "function/openapi.json"]
    assert "python -m function.spec --out /build/openapi.json" in stage("serve-deps")


# ---------------------------------------------------------------------------------------------
# Helm values (deployment-charts service scaffold)


def values() -> dict[str, Any]:
    return rules.load(VALUES)


def test_helm_values_have_the_scaffolds_shape() -> None:
    doc = values()
    app = doc["app"]
    port = app["port"]
    assert port == 8080
    assert app["readiness_probe"]["httpGet"] == {"path": "/readyz", "port": port}
    assert app["liveness_probe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert doc["monitoring"]["enabled"] is True
    assert doc["service"]["port"]["targetPort"] == port
    assert isinstance(doc["config"]["public"], dict)
    assert all(isinstance(v, str) for v in doc["config"]["public"].values())
    assert isinstance(doc["docker"]["registry"], str) and isinstance(app["image"], str)


def test_helm_values_resources_match_the_knative_service() -> None:
    app = values()["app"]
    container = service_doc()["spec"]["template"]["spec"]["containers"][0]
    for kind in ("requests", "limits"):
        assert str(app[kind]["memory"]) == container["resources"][kind]["memory"]
        assert str(app[kind]["cpu"]) == container["resources"][kind]["cpu"]


def test_helm_values_settings_parse() -> None:
    public = dict(values()["config"]["public"])
    assert env_problems(public) == []
    settings = Settings.from_env(public)
    assert settings.allowed_hosts == ("upload.wikimedia.org",)
    assert settings.allow_private_networks is False
    assert settings.drain_seconds == float(public["NSFWOID_DRAIN_SECONDS"])


def test_helm_pre_stop_waits_as_long_as_the_service_drains() -> None:
    doc = values()
    public = doc["config"]["public"]
    command = doc["app"]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "/bin/sleep"
    drain = float(public["NSFWOID_DRAIN_SECONDS"])
    assert float(command[1]) == drain
    assert drain == Settings().drain_seconds  # the service's own default drain
    # The grace period covers the drain, a request at its deadline and gunicorn's 5 s.
    deadline = float(public["NSFWOID_REQUEST_DEADLINE"])
    assert doc["terminationGracePeriodSeconds"] >= drain + deadline + 5


@needs_shared
def test_helm_service_checker_runs_as_the_charts_do() -> None:
    # The charts' hook: ["-t", "5", '$(<RELEASE>_SERVICE_HOST)', '<base url>'(, '-s', PATH)].
    templates = sorted((rules.SHARED / "service-checker" / "helm").glob("*.yaml"))
    assert templates
    for template in templates:
        assert '"-t", "5"' in template.read_text(encoding="utf-8")
    checker = values()["service_checker"]
    args = checker["args"]
    assert checker["enabled"] is True
    # Exactly the scaffold's arguments: no -s, so the spec comes from the tool's default /?spec
    # (what tests/test_servicechecker.py proves healthy against a live server).
    assert args[:2] == ["-t", "5"] and "-s" not in args and len(args) == 4
    host, base_url = args[-2:]
    assert host == "$(NSFWOID_SERVICE_HOST)"
    assert base_url == f"http://nsfwoid:{values()['app']['port']}"
