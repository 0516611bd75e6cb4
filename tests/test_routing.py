"""``function.app.App``'s dispatch over the stand-in model: which door takes which request,
404/405/OPTIONS, and the request id. Which door answered is read from what only that door
does (its metrics label, its response shape), not from the door's internals."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from function.doors.ops import ALLOW
from function.service import Service
from tests.fakes import fake_app
from tests.photos import photo_jpeg

JPEG = photo_jpeg("coffee", (64, 48))


@pytest.fixture(scope="module")
def app_and_service() -> Iterator[tuple[Flask, Service]]:
    with fake_app() as pair:
        yield pair


@pytest.fixture()
def client(app_and_service: tuple[Flask, Service]) -> FlaskClient:
    return app_and_service[0].test_client()


@pytest.fixture()
def service(app_and_service: tuple[Flask, Service]) -> Service:
    return app_and_service[1]


def requests_of(service: Service, kind: str) -> float:
    """Scoring requests counted under input kind ``kind`` (any outcome)."""
    text = service.metrics.render("text/plain")[0].decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "nsfwoid_requests_total" and sample.labels["input"] == kind
    )


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/healthz/", "/readyz/"])
def test_probes_are_the_ops_door_and_never_count_as_scoring(
    client: FlaskClient, service: Service, path: str
) -> None:
    ops_before = requests_of(service, "ops")
    response = client.get(path)
    assert response.status_code == 200
    assert response.get_json()["status"] in ("ok", "ready")
    assert requests_of(service, "ops") == ops_before  # weight 0: no request metric


def test_metrics_and_spec_are_served(client: FlaskClient) -> None:
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "nsfwoid_ready 1.0" in metrics.get_data(as_text=True)
    assert client.get("/openapi.json").get_json()["openapi"].startswith("3.")
    assert client.get("/openapi.yaml").status_code == 200


def test_head_is_answered_like_get_without_a_body(client: FlaskClient) -> None:
    response = client.head("/healthz")
    assert response.status_code == 200 and response.get_data() == b""


@pytest.mark.parametrize("path", ["/", "/healthz", "/score"])
def test_options_lists_the_methods(client: FlaskClient, path: str) -> None:
    response = client.options(path)
    assert response.status_code == 204
    assert response.headers["Allow"] == ALLOW


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_other_methods_are_405_with_allow(client: FlaskClient, method: str) -> None:
    response = client.open("/", method=method, data=JPEG, content_type="image/jpeg")
    assert response.status_code == 405
    assert response.headers["Allow"] == ALLOW
    assert response.get_json()["error"]["code"] == "method_not_allowed"


def test_unknown_get_paths_are_404(client: FlaskClient) -> None:
    response = client.get("/no/such/thing")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_a_raw_post_is_the_plain_door(client: FlaskClient, service: Service) -> None:
    before = requests_of(service, "raw")
    response = client.post("/", data=JPEG, content_type="image/jpeg")
    assert response.status_code == 200 and 0 <= response.get_json()["score"] <= 1
    assert requests_of(service, "raw") == before + 1


def test_a_form_post_answers_the_bare_float(client: FlaskClient, service: Service) -> None:
    before = requests_of(service, "form")
    response = client.post("/", data={"url": "ftp://x/y.jpg"})  # refused: told in plain text
    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True).startswith("error: ")
    assert 400 <= response.status_code < 500
    assert requests_of(service, "form") == before + 1


def test_a_binary_cloudevent_is_the_event_door(client: FlaskClient, service: Service) -> None:
    before, raw = requests_of(service, "event"), requests_of(service, "raw")
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "routing-1",
        "ce-source": "/tests/routing",
        "ce-type": "org.example.image",
    }
    response = client.post("/", data=JPEG, content_type="image/jpeg", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert requests_of(service, "event") == before + 1
    assert requests_of(service, "raw") == raw  # not the plain door


def test_an_incomplete_binary_cloudevent_is_a_400_not_an_image(client: FlaskClient) -> None:
    response = client.post(
        "/", data=JPEG, content_type="image/jpeg", headers={"ce-specversion": "1.0"}
    )
    assert response.status_code == 400
    assert "ce-id" in response.get_json()["error"]["message"]


def test_json_without_event_headers_is_the_plain_door(
    client: FlaskClient, service: Service
) -> None:
    before = requests_of(service, "batch")
    response = client.post("/", json={"urls": ["ftp://a/b.jpg", "ftp://a/c.jpg"]})
    assert response.status_code == 200
    assert len(response.get_json()["results"]) == 2
    assert requests_of(service, "batch") == before + 1


def test_any_post_path_is_scored(client: FlaskClient) -> None:
    # functions-framework mounts the function on every path: a POST anywhere is a score.
    response = client.post("/score", data=JPEG, content_type="image/jpeg")
    assert response.status_code == 200


def test_a_safe_request_id_is_echoed_and_an_unsafe_one_replaced(client: FlaskClient) -> None:
    response = client.post(
        "/", data=JPEG, content_type="image/jpeg", headers={"X-Request-Id": "abc-123.x:y"}
    )
    assert response.headers["X-Request-Id"] == "abc-123.x:y"
    assert response.get_json().get("request_id", "abc-123.x:y") == "abc-123.x:y"
    for unsafe_id in ("bad id", "x" * 129, "<script>"):
        unsafe = client.get("/nowhere", headers={"X-Request-Id": unsafe_id})
        rid = unsafe.headers["X-Request-Id"]
        assert rid != unsafe_id and len(rid) == 32 and rid.isalnum()
        assert unsafe.get_json()["request_id"] == rid
    fresh = client.get("/healthz").headers["X-Request-Id"]
    assert fresh and fresh != rid  # one of ours per request when none is supplied
