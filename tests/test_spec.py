"""The OpenAPI JSON: rendered from the YAML once at image build time, else on first use."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from function import spec


def test_the_build_step_renders_the_yaml_to_equal_json(tmp_path: Path) -> None:
    out = tmp_path / "openapi.json"
    spec.main(["--out", str(out)])
    assert json.loads(out.read_text()) == yaml.safe_load(spec.SPEC_YAML.read_text())


def test_a_rendered_file_is_served_as_it_is(tmp_path: Path) -> None:
    source = tmp_path / "openapi.yaml"
    source.write_text("openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths: {}\n")
    rendered = tmp_path / "openapi.json"
    rendered.write_text('{"rendered": "at build time"}')
    assert spec.openapi_json(source, rendered) == '{"rendered": "at build time"}'


def test_a_stale_or_missing_rendering_is_not_served(tmp_path: Path) -> None:
    source = tmp_path / "openapi.yaml"
    source.write_text("openapi: 3.1.0\ninfo: {title: t, version: '2'}\npaths: {}\n")
    rendered = tmp_path / "openapi.json"
    assert json.loads(spec.openapi_json(source, rendered))["info"]["version"] == "2"
    rendered.write_text('{"info": {"version": "1"}}')
    stamp = source.stat().st_mtime
    os.utime(rendered, (stamp - 60, stamp - 60))  # rendered before the YAML was edited
    assert json.loads(spec.openapi_json(source, rendered))["info"]["version"] == "2"
