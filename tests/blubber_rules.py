"""What Blubber and PipelineLib enforce on `.pipeline/` files, as a checker for the tests.

Blubber (v1.8.0) validates a blubberfile against its JSON Schema, then applies rules the schema
cannot express: ``version`` exactly ``v4``, no unknown key at any depth (Go's
``DisallowUnknownFields``), and the validator tags of its ``config`` package (variant names,
``includes``/``copies`` naming variants, non-root users, absolute paths, ...). The schema alone
passes all of those mistakes, so :func:`blubber_problems` applies both. PipelineLib validates
``config.yaml`` with its schema; :func:`pipeline_problems` adds the cross-checks it leaves to
run time (``execution`` names existing stages, ``build:`` names a variant of the blubberfile).
The rules are written from Wikimedia's documentation of them (../shared/wikimedia/SOURCES.md).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, FormatChecker

SHARED = Path(__file__).resolve().parents[2] / "shared" / "wikimedia"
BLUBBER_SCHEMA = SHARED / "blubber" / "config.schema.json"
PIPELINE_SCHEMA = SHARED / "pipelinelib" / "pipelines.v0.yaml"

VARIANT_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9\-\.]+[a-zA-Z0-9]$")
ENV_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]+$")
# Debian package names, optionally pinned (=version) or from a release (/release).
APT_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.\-]+(=[A-Za-z0-9.+~:\-]+|/[a-z0-9\-]+)?$")
USER_NAME = re.compile(r"^[a-z_]([a-z0-9_\-]{0,31}|[a-z0-9_\-]{0,30}\$)$")
# distribution/reference: [host[:port]/]path[:tag][@digest]
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
)
IMAGE_REFERENCE = re.compile(
    rf"^(?:{_DOMAIN}(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
PREDEFINED_BUILDERS = ("node", "php", "python")
# Maps whose keys are the user's own names, not schema properties.
FREE_FORM = {"environment", "arguments"}
RENAMED = {"use-system-flag": "use-system-site-packages"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def feature_docstrings(path: Path) -> list[str]:
    """The ``\"\"\"``-delimited blubber.yaml examples of a Gherkin ``.feature`` file."""
    blocks = re.findall(r'^([ \t]*)"""\n(.*?)^\1"""', path.read_text(encoding="utf-8"), re.M | re.S)
    return [textwrap.dedent(body) for _, body in blocks]


# ---------------------------------------------------------------------------------------------
# Unknown keys: walk the instance alongside the schema


class _Schema:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def resolve(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in node and len(node) <= 3:  # a bare reference (maybe with a title)
            target: Any = self.root
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = {**{k: v for k, v in node.items() if k != "$ref"}, **target}
        return node

    def branches(self, node: Mapping[str, Any], kind: type) -> Iterator[Mapping[str, Any]]:
        """``node`` and every allOf/anyOf/oneOf branch (recursively) that admits a ``kind``."""
        node = self.resolve(node)
        if not _admits(node, kind):
            return
        yield node
        for keyword in ("allOf", "anyOf", "oneOf"):
            for branch in node.get(keyword, ()):
                yield from self.branches(branch, kind)


def _admits(node: Mapping[str, Any], kind: type) -> bool:
    declared = node.get("type")
    if declared is None:
        return True
    names: dict[type, str] = {dict: "object", list: "array", str: "string"}
    types = declared if isinstance(declared, list) else [declared]
    return names.get(kind, "") in types or (kind not in names)


def unknown_keys(instance: Any, node: Mapping[str, Any], schema: _Schema, path: str) -> list[str]:
    problems: list[str] = []
    if isinstance(instance, dict):
        branches = list(schema.branches(node, dict))
        properties: dict[str, list[Mapping[str, Any]]] = {}
        additional: list[Any] = []
        for branch in branches:
            for key, sub in branch.get("properties", {}).items():
                properties.setdefault(key, []).append(sub)
            if "additionalProperties" in branch:
                additional.append(branch["additionalProperties"])
        for key, value in instance.items():
            where = f"{path}.{key}"
            if key in properties:
                for sub in properties[key]:
                    problems += unknown_keys(value, sub, schema, where)
            elif any(isinstance(extra, dict) for extra in additional):
                for extra in additional:
                    if isinstance(extra, dict):
                        problems += unknown_keys(value, extra, schema, where)
            elif path.rsplit(".", 1)[-1] in FREE_FORM or True in additional:
                continue
            else:
                hint = f" (renamed {RENAMED[key]!r})" if key in RENAMED else ""
                problems.append(f"{where}: unknown key{hint}")
    elif isinstance(instance, list):
        for branch in schema.branches(node, list):
            if "items" in branch:
                for index, item in enumerate(instance):
                    problems += unknown_keys(item, branch["items"], schema, f"{path}[{index}]")
    return sorted(set(problems))


# ---------------------------------------------------------------------------------------------
# Blubber


def schema_errors(instance: Any, schema: Mapping[str, Any]) -> list[str]:
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    return [
        f"{'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in validator.iter_errors(instance)
    ]


def _scopes(config: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield "(top)", config
    for name, variant in (config.get("variants") or {}).items():
        yield f"variants.{name}", variant or {}


def _artifact_sources(scope: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(where, entry) for every copies entry and every builder requirement."""
    for index, entry in enumerate(scope.get("copies") or ()):
        yield f"copies[{index}]", entry
    builders = [
        scope[k] for k in ("builder", *PREDEFINED_BUILDERS) if isinstance(scope.get(k), dict)
    ]
    for item in scope.get("builders") or ():
        builders += [b for b in item.values() if isinstance(b, dict)]
    for builder in builders:
        for index, entry in enumerate(builder.get("requirements") or ()):
            yield f"requirements[{index}]", entry


def rule_problems(config: Mapping[str, Any]) -> list[str]:
    """Blubber's own checks beyond the schema (config/*.go validator tags)."""
    problems: list[str] = []
    if config.get("version") != "v4":
        problems.append(f"version must be exactly 'v4', got {config.get('version')!r}")
    variants = config.get("variants") or {}
    for name in variants:
        if not VARIANT_NAME.match(str(name)):
            problems.append(f"variant name {name!r} does not match {VARIANT_NAME.pattern}")
    for where, scope in _scopes(config):
        for variant in scope.get("includes") or ():
            if variant not in variants:
                problems.append(f"{where}.includes: no variant {variant!r}")
        if "base" in scope and scope["base"] is not None:
            if not IMAGE_REFERENCE.match(str(scope["base"])):
                problems.append(f"{where}.base: {scope['base']!r} is not an image reference")
        for key in ("lives", "runs"):
            section = scope.get(key) or {}
            user = section.get("as")
            if user is not None and (user == "root" or not USER_NAME.match(str(user))):
                problems.append(f"{where}.{key}.as: {user!r} (root or not a user name)")
            if section.get("uid") == 0 or section.get("gid") == 0:
                problems.append(f"{where}.{key}: uid/gid 0 is root")
            directory = section.get("in")
            if directory is not None and (not str(directory).startswith("/") or directory == "/"):
                problems.append(f"{where}.{key}.in: {directory!r} must be absolute and not /")
        names = [
            *((scope.get("runs") or {}).get("environment") or {}),
            *(scope.get("arguments") or {}),
        ]
        problems += [f"{where}: variable name {n!r}" for n in names if not ENV_NAME.match(str(n))]
        packages = (scope.get("apt") or {}).get("packages") or []
        if isinstance(packages, dict):
            packages = [p for group in packages.values() for p in group]
        problems += [f"{where}.apt: package {p!r}" for p in packages if not APT_PACKAGE.match(p)]
        builders = scope.get("builders") or []
        kinds = [k for item in builders for k in item if k in PREDEFINED_BUILDERS]
        for kind in set(kinds):
            if kinds.count(kind) > 1:
                problems.append(f"{where}.builders: {kind} appears more than once")
        mixed = [k for k in ("builder", *PREDEFINED_BUILDERS) if k in scope]
        if builders and mixed:
            problems.append(f"{where}: builders cannot be combined with {', '.join(mixed)}")
        copies = scope.get("copies") or []
        seen = [yaml.safe_dump(c, sort_keys=True) for c in copies]
        if len(set(seen)) != len(seen):
            problems.append(f"{where}.copies: entries must be unique")
        for what, entry in _artifact_sources(scope):
            source = entry if isinstance(entry, str) and what.startswith("copies") else None
            if isinstance(entry, dict):
                source = entry.get("from", "local")
                if "destination" in entry and "source" not in entry:
                    problems.append(f"{where}.{what}: destination without source")
                if source == "local" and str(entry.get("source", "")).startswith("/"):
                    problems.append(f"{where}.{what}: a local source must be a relative path")
            if source is None or source == "local" or source in variants:
                continue
            if "/" in source or ":" in source:  # an image reference
                if IMAGE_REFERENCE.match(source):
                    continue
            problems.append(f"{where}.{what}: {source!r} is neither local nor a variant")
    return problems


def blubber_problems(config: Any, schema: Mapping[str, Any]) -> list[str]:
    """Everything Blubber v1.8.0 would reject in ``config``; empty when it is good."""
    if not isinstance(config, dict):
        return ["a blubberfile is a mapping"]
    problems = schema_errors(config, schema)
    problems += unknown_keys(config, {"$ref": schema["$ref"]}, _Schema(schema), "(top)")
    return problems + rule_problems(config)


# ---------------------------------------------------------------------------------------------
# PipelineLib


def _variant_of(build: Any) -> str | None:
    if isinstance(build, str):
        return build
    if isinstance(build, dict) and isinstance(build.get("variant"), str):
        return str(build["variant"])
    return None


def pipeline_problems(
    config: Any, schema: Mapping[str, Any], pipeline_dir: Path | None = None
) -> list[str]:
    """PipelineLib's schema plus the checks it leaves to run time.

    With ``pipeline_dir`` (the ``.pipeline`` folder), each ``blubberfile`` must exist there and
    every ``build:`` variant must be defined in it.
    """
    problems = schema_errors(config, schema)
    if problems or not isinstance(config, dict):
        return problems
    for name, pipeline in config["pipelines"].items():
        stages = [stage.get("name") for stage in pipeline["stages"]]
        duplicates = {s for s in stages if stages.count(s) > 1}
        problems += [f"{name}: stage {s!r} defined twice" for s in sorted(duplicates, key=str)]
        for path in pipeline.get("execution") or ():
            problems += [f"{name}.execution: no stage {s!r}" for s in path if s not in stages]
        if pipeline_dir is None:
            continue
        for stage in pipeline["stages"]:
            blubberfile = stage.get("blubberfile", pipeline.get("blubberfile"))
            if blubberfile is None:
                blubberfile = f"{name}/blubber.yaml"
            variant = _variant_of(stage.get("build"))
            if variant is None or isinstance(blubberfile, dict):
                continue
            file = pipeline_dir / blubberfile
            if not file.is_file():
                problems.append(f"{name}.{stage['name']}: blubberfile {blubberfile} is missing")
                continue
            if variant not in (load(file).get("variants") or {}):
                problems.append(f"{name}.{stage['name']}: {blubberfile} has no variant {variant!r}")
    return problems
