"""Wikimedia's service-checker calls the live service healthy, and would catch what it should.

``tests/servicechecker.py`` plays the tool (its rules from shared/wikimedia/SOURCES.md) against
a real server process started as in production; the modified-document cases are the ones
SOURCES.md records as verified against the real tool.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from tests import servicechecker
from tests.conftest import ROOT, ServerProcess
from tests.imagehost import ImageHost

SPEC: dict[str, Any] = yaml.safe_load((ROOT / "function" / "openapi.yaml").read_text())
NUMBER = SPEC["paths"]["/v1/models/{name}:predict"]["post"]["x-amples"][0]["response"]["body"][
    "predictions"
][0]["prob_nsfw"]


def check(server: ServerProcess, spec: dict[str, Any] | None = None) -> servicechecker.Result:
    """``service-checker-swagger -t 5 127.0.0.1 http://127.0.0.1:PORT``, as Helm runs it."""
    return servicechecker.run("127.0.0.1", server.url, spec=spec, timeout=5)


def test_the_live_service_is_healthy(server: ServerProcess) -> None:
    result = check(server)  # the document as served at /?spec
    assert (result.code, result.output) == (0, "All endpoints are healthy"), result.output
    probed = {(c.method, c.path) for c in result.checks}
    # Every GET and POST operation but the catch-all 404 is probed, the KServe ones included.
    expected = {
        (method.upper(), path)
        for path, item in SPEC["paths"].items()
        for method in ("get", "post")
        if method in item and path != "/{path}"
    }
    assert probed == expected
    assert ("POST", "/v2/models/{name}/infer") in probed
    # Each probe that sends a body sends an image inline: none names a URL to fetch.
    for c in result.checks:
        assert "http" not in json.dumps(c.example["request"].get("body", ""))


def test_the_document_has_no_unanchored_numbers() -> None:
    assert servicechecker.unanchored_numbers(SPEC) == []


def test_every_example_is_also_a_documented_example() -> None:
    """The inline image of the KServe probes is the document's own example request."""
    examples = SPEC["components"]["examples"]
    for path, name in [
        ("/v1/models/{name}:predict", "KServeV1Request"),
        ("/v2/models/{name}/infer", "KServeV2Request"),
    ]:
        probe = SPEC["paths"][path]["post"]["x-amples"][0]["request"]["body"]
        assert json.dumps(probe["instances" if "instances" in probe else "inputs"]).split("R0lG")[
            1
        ][:40] in json.dumps(examples[name]["value"])


@pytest.mark.parametrize(
    "value", ["3e-05", "9.424332488561049e-05", "0.07327748835086823", "0.0", "1.0", "1e-07"]
)
def test_the_number_pattern_takes_what_str_of_a_score_looks_like(value: str) -> None:
    assert servicechecker.matches(NUMBER, float(value))


@pytest.mark.parametrize("value", ["1.5", "-0.1", "2", "0.5x", "nan", "", "True"])
def test_the_number_pattern_refuses_what_no_score_is(value: str) -> None:
    assert not servicechecker.matches(NUMBER, value)


# --- what the tool would not call healthy, on modified copies of the document ---------------


def modified(change: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    change(spec)
    return spec


def test_an_absolute_server_url_breaks_every_check(server: ServerProcess) -> None:
    spec = modified(lambda s: s["servers"].__setitem__(0, {"url": server.url}))
    result = check(server, spec)
    assert result.code == 2
    assert result.output.count("generic error") == len(result.checks)


def test_a_response_without_status_is_critical(server: ServerProcess) -> None:
    def drop_status(spec: dict[str, Any]) -> None:
        del spec["paths"]["/healthz"]["get"]["x-amples"][0]["response"]["status"]

    result = check(server, modified(drop_status))
    assert result.code == 2
    assert result.output == "/healthz (liveness) is CRITICAL: Test liveness generic error: 'status'"


def test_an_unanchored_number_passes_the_tool_and_is_caught_here(server: ServerProcess) -> None:
    """The expected ``0`` is a prefix of every score below 1: the tool says healthy whatever
    the score, so the document itself is checked for it."""

    def unanchored(spec: dict[str, Any]) -> None:
        body = spec["paths"]["/v1/models/{name}:predict"]["post"]["x-amples"][0]["response"]
        body["body"]["predictions"][0]["prob_nsfw"] = 0

    spec = modified(unanchored)
    assert check(server, spec).code == 0  # the trap: a wrong expectation that passes
    [problem] = servicechecker.unanchored_numbers(spec)
    assert "prob_nsfw: the number 0 is matched as a prefix" in problem
    # Anchored, the same expectation fails as it should.
    pinned = modified(unanchored)
    body = pinned["paths"]["/v1/models/{name}:predict"]["post"]["x-amples"][0]["response"]
    body["body"]["predictions"][0]["prob_nsfw"] = "/^0$/"
    result = check(server, pinned)
    assert result.code == 1 and "unexpected value at path /predictions/0/prob_nsfw" in result.output


def test_a_wrong_value_is_a_warning(server: ServerProcess) -> None:
    def wrong(spec: dict[str, Any]) -> None:
        spec["paths"]["/healthz"]["get"]["x-amples"][0]["response"]["body"] = {"status": "fine"}

    result = check(server, modified(wrong))
    assert (result.code, result.output) == (
        1,
        "/healthz (liveness) is WARNING: Test liveness responds with unexpected value at "
        "path /status => ok",
    )


def test_unprobed_get_paths_and_missing_params_are_critical(server: ServerProcess) -> None:
    def break_it(spec: dict[str, Any]) -> None:
        spec["paths"]["/nothere"] = {"get": {}}  # a bare GET expecting 200
        del spec["paths"]["/v2/models/{name}"]["get"]["x-amples"]  # fetched as /v2/models/

    result = check(server, modified(break_it))
    assert result.code == 2
    assert "/nothere (Untitled test) is CRITICAL: Test Untitled test returned the unexpected " in (
        result.output
    )
    assert "/v2/models/{name} (Untitled test) is CRITICAL" in result.output
    assert result.output.count("unexpected status 404 (expecting: 200)") == 2


def test_a_wrong_header_is_critical(server: ServerProcess) -> None:
    def header(spec: dict[str, Any]) -> None:
        response = spec["paths"]["/metrics"]["get"]["x-amples"][0]["response"]
        response["headers"] = {"content-type": "application/openmetrics-text"}

    result = check(server, modified(header))
    assert result.code == 2 and "has header content-type with value text/plain" in result.output


def test_no_spec_where_the_tool_looks_is_exit_1(server: ServerProcess) -> None:
    result = servicechecker.run("127.0.0.1", server.url, spec_path="/healthz")
    assert result.code == 1 and "no spec with paths" in result.output


def test_a_slow_endpoint_runs_out_the_overall_budget(image_host: ImageHost) -> None:
    image_host.hang("/servicechecker/slow", 3)
    spec = {"servers": [{"url": "/"}], "paths": {"/servicechecker/slow": {"get": {}}}}
    result = servicechecker.run("127.0.0.1", image_host.url(""), spec=spec, budget=0.2)
    assert result.code == 2
    assert result.output.endswith("timed out before a response was received")
