"""knative/inferenceservice.yaml: valid for KServe's CRD, strictly, and the same deployment as
knative/service.yaml (image, probes, resources, security, settings)."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
import yaml

from tests.test_knative_manifests import (
    KNATIVE,
    REPO,
    container_of,
    load_one,
    service_doc,
    unknown_fields,
)

CRD = REPO.parent / "shared" / "wikimedia" / "kserve" / "serving.kserve.io_inferenceservices.yaml"


@pytest.fixture(scope="module")
def isvc_schema() -> dict[str, Any]:
    if not CRD.is_file():
        pytest.skip(f"KServe's InferenceService CRD not found at {CRD} (shared/wikimedia/kserve)")
    with CRD.open(encoding="utf-8") as handle:
        crd = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    [version] = crd["spec"]["versions"]
    assert (crd["spec"]["group"], version["name"]) == ("serving.kserve.io", "v1beta1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def isvc() -> dict[str, Any]:
    return load_one(KNATIVE / "inferenceservice.yaml")


def problems(doc: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Schema errors, plus every field the schema does not declare (the API server would prune
    it silently: the CRD has no ``additionalProperties: false`` to refuse it)."""
    found = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in jsonschema.Draft4Validator(schema).iter_errors(doc)
    ]
    return found + list(unknown_fields(doc, schema))


def test_the_inference_service_matches_kserves_crd(isvc_schema: dict[str, Any]) -> None:
    doc = isvc()
    assert (doc["apiVersion"], doc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert problems(doc, isvc_schema) == []


def test_the_strict_walk_catches_what_kubernetes_would_drop(isvc_schema: dict[str, Any]) -> None:
    misspelt = isvc()
    misspelt["spec"]["predictor"]["minScale"] = 0  # Knative's word, not KServe's
    container_of_isvc(misspelt)["readinessProbe"]["httpGet"]["route"] = "/readyz"
    assert sorted(problems(misspelt, isvc_schema)) == [
        ".spec.predictor.containers[0].readinessProbe.httpGet.route: unknown field",
        ".spec.predictor.minScale: unknown field",
    ]
    wrong_type = copy.deepcopy(isvc())
    wrong_type["spec"]["predictor"]["minReplicas"] = "zero"
    assert any("minReplicas" in p for p in problems(wrong_type, isvc_schema))


def container_of_isvc(doc: dict[str, Any]) -> dict[str, Any]:
    [container] = doc["spec"]["predictor"]["containers"]
    assert isinstance(container, dict)
    return container


def test_a_scale_to_zero_custom_predictor_of_this_image() -> None:
    predictor = isvc()["spec"]["predictor"]
    container = container_of_isvc(isvc())
    assert container["name"] == "kserve-container"
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert predictor["minReplicas"] == 0 and predictor["maxReplicas"] >= 1
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz"}
    assert "model" not in predictor  # a custom container: no model format, no storage URI


def test_the_same_deployment_as_the_knative_service() -> None:
    service = service_doc()
    ours, theirs = container_of_isvc(isvc()), container_of(service)
    for key in ("image", "resources", "securityContext", "env", "readinessProbe", "livenessProbe"):
        assert ours[key] == theirs[key], key
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    predictor = isvc()["spec"]["predictor"]
    assert str(predictor["maxReplicas"]) == annotations["autoscaling.knative.dev/max-scale"]
    assert str(predictor["scaleTarget"]) == annotations["autoscaling.knative.dev/target"]
    assert predictor["scaleMetric"] == annotations["autoscaling.knative.dev/metric"]
    assert (
        predictor["containerConcurrency"]
        == service["spec"]["template"]["spec"]["containerConcurrency"]
    )
    assert predictor["timeout"] == service["spec"]["template"]["spec"]["timeoutSeconds"]
