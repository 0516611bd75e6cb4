"""The log: every line ECS JSON, one line per request, causes named, no URL but its host."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask

from function.logs import EcsFormatter, log, log_context, redact
from tests.conftest import running_server
from tests.ecs import entries, field
from tests.imagehost import ImageHost
from tests.photos import photo_jpeg

SECRET = "sig-5f1c0a"  # a token in a query string: must never reach the log


@pytest.mark.model
def test_every_line_of_a_live_server_is_ecs_and_each_request_has_one(
    tmp_path: Path, image_host: ImageHost
) -> None:
    good = image_host.file("/logs/good.jpg", photo_jpeg("astronaut", (224, 224)))
    reset = image_host.reset("/logs/reset.jpg") + f"?token={SECRET}"
    # TLS spoken to a plain-HTTP port: the handshake fails.
    tls = image_host.url("/logs/tls.jpg").replace("http://", "https://") + f"?token={SECRET}"
    undecodable = b"\xff\xd8\xff\xe0" + b"\x00garbage" * 64  # a JPEG's magic, then nonsense
    sent: dict[str, requests.Response] = {}
    with running_server(tmp_path) as server:

        def post(request_id: str, data: object = None, json: object = None, **headers: str) -> None:
            headers |= {"X-Request-Id": request_id, "User-Agent": "logs-test/1"}
            sent[request_id] = requests.post(
                server.url + "/", data=data, json=json, headers=headers, timeout=30
            )

        post("logs-good", data={"url": good})
        post("logs-reset", data={"url": reset})
        post("logs-tls", json={"url": tls})
        post("logs-undecodable", data=undecodable, **{"Content-Type": "image/jpeg"})
        sent["logs-404"] = requests.get(
            server.url + "/no/such/path", headers={"X-Request-Id": "logs-404"}, timeout=30
        )
        requests.get(server.url + "/healthz", timeout=30)
    # The server has stopped: its log is complete, shutdown lines included.
    text = server.logs()
    assert [sent[key].status_code for key in sorted(sent)] == [404, 200, 502, 502, 422], {
        key: response.text for key, response in sent.items()
    }
    lines = entries(text)  # every line JSON, with @timestamp, log.level, message, ecs.version
    assert SECRET not in text and "/logs/" not in text, "a URL's path or query was logged"

    by_id = {key: [e for e in lines if field(e, "http.request.id") == key] for key in sent}
    assert {key: len(found) for key, found in by_id.items()} == dict.fromkeys(sent, 1)
    line = {key: found[0] for key, found in by_id.items()}
    for key, entry in line.items():
        assert field(entry, "http.response.status_code") == sent[key].status_code
        assert field(entry, "http.request.method") in ("GET", "POST")
        assert field(entry, "client.ip") == "127.0.0.1"
        assert field(entry, "service.name") == "nsfwoid"
        assert isinstance(field(entry, "event.duration"), int) and field(entry, "event.duration")

    scored = line["logs-good"]
    assert scored["message"] == "scored" and scored["log.level"] == "info"
    assert field(scored, "event.outcome") == "success"
    assert field(scored, "nsfwoid.score") == float(sent["logs-good"].text)
    assert field(scored, "nsfwoid.input") == "form"
    assert field(scored, "url.domain") == "127.0.0.1" and field(scored, "url.path") == "/"
    assert field(scored, "user_agent.original") == "logs-test/1"
    assert field(scored, "http.response.body.bytes") == len(sent["logs-good"].content)
    assert {"fetch", "decode", "preprocess", "predict", "total"} <= set(
        field(scored, "nsfwoid.timing_ms")
    )

    reset_line = line["logs-reset"]
    assert reset_line["message"].startswith("request failed")
    assert reset_line["log.level"] == "warning"
    assert field(reset_line, "event.outcome") == "failure"
    assert field(reset_line, "error.code") == "source_unavailable"
    assert field(reset_line, "error.type") == "ConnectionResetError"
    assert "reset" in field(reset_line, "error.message").lower()
    assert field(reset_line, "url.domain") == "127.0.0.1"
    assert "fetch" in field(reset_line, "nsfwoid.timing_ms")

    tls_line = line["logs-tls"]
    assert field(tls_line, "error.type").startswith("ssl.")
    assert field(tls_line, "error.message") and field(tls_line, "url.domain") == "127.0.0.1"

    bad_image = line["logs-undecodable"]
    assert field(bad_image, "error.code") == "undecodable_image"
    assert field(bad_image, "error.type").startswith("PIL.")  # the decoder's own complaint
    assert field(bad_image, "error.message")
    assert field(bad_image, "url.domain") is None  # no URL, no host

    not_found = line["logs-404"]
    assert not_found["message"] == "GET /no/such/path 404"
    assert field(not_found, "url.path") == "/no/such/path"
    assert field(not_found, "log.logger") == "gunicorn.access"

    # Probes are quiet at info; gunicorn's own start-up and shutdown lines are ECS too.
    assert not [e for e in lines if field(e, "url.path") == "/healthz"]
    gunicorn = [e["message"] for e in lines if field(e, "log.logger") == "gunicorn.error"]
    assert any(message.startswith("Booting worker") for message in gunicorn), gunicorn
    assert any(message.startswith("Shutting down") for message in gunicorn), gunicorn


@pytest.mark.model
def test_probes_are_logged_at_debug(tmp_path: Path) -> None:
    with running_server(tmp_path, NSFWOID_LOG_LEVEL="debug") as server:
        requests.get(server.url + "/healthz", headers={"X-Request-Id": "probe-1"}, timeout=30)
    probes = [e for e in entries(server.logs()) if field(e, "http.request.id") == "probe-1"]
    assert len(probes) == 1
    assert probes[0]["log.level"] == "debug" and probes[0]["message"] == "GET /healthz 200"


@pytest.fixture()
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EcsFormatter("nsfwoid-test"))
    logger = logging.getLogger("nsfwoid.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_a_bug_is_one_error_line_with_its_stack(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for a bug anywhere past admission: the app must still answer a generic
    # 500 and log the request once, with the exception whole.
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the pipeline")

    monkeypatch.setattr(app.extensions["nsfwoid"].pipeline, "score", broken)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EcsFormatter())
    app_logger = logging.getLogger("nsfwoid")
    app_logger.addHandler(handler)
    try:
        with app.test_client().post(
            "/",
            data=photo_jpeg("coffee", (64, 64)),
            content_type="image/jpeg",
            headers={"X-Request-Id": "bug-1"},
        ) as response:
            assert response.status_code == 500
            assert "a bug" not in response.get_data(as_text=True)  # the caller is told little
            assert not stream.getvalue()  # written once the answer is out, as a server closes it
    finally:
        app_logger.removeHandler(handler)
    (line,) = [e for e in entries(stream.getvalue()) if field(e, "http.request.id") == "bug-1"]
    assert line["log.level"] == "error" and line["message"] == "request failed: internal error"
    assert field(line, "error.code") == "internal_error"
    assert field(line, "error.type") == "RuntimeError"
    assert field(line, "error.message") == "a bug in the pipeline"
    assert "broken" in field(line, "error.stack_trace")


def test_request_context_reaches_every_line_inside_it(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    with log_context(request_id="ctx-1", input="json") as context:
        context["source_host"] = "upload.wikimedia.org"
        log(logger, logging.INFO, "inside", stage="fetch")
    log(logger, logging.INFO, "outside")
    inside, outside = entries(stream.getvalue())
    assert field(inside, "http.request.id") == "ctx-1"
    assert field(inside, "nsfwoid.input") == "json"
    assert field(inside, "url.domain") == "upload.wikimedia.org"
    assert field(inside, "nsfwoid.stage") == "fetch"
    assert field(inside, "service.name") == "nsfwoid-test"
    assert (
        field(inside, "log.origin.function") == "test_request_context_reaches_every_line_inside_it"
    )
    assert field(outside, "http.request.id") is None


def test_colliding_fields_still_make_one_json_line(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("clash", extra={"nsfwoid.image": "x", "nsfwoid.image.bytes": 3})
    (entry,) = entries(stream.getvalue())
    assert entry["message"] == "clash" and field(entry, "nsfwoid.log_error")


def test_redact_keeps_only_scheme_and_host() -> None:
    text = "HTTPSConnectionPool: https://upload.example.org:8443/a/b.jpg?token=x failed"
    assert redact(text) == "HTTPSConnectionPool: https://upload.example.org:8443/… failed"
    assert redact("see http://example.org") == "see http://example.org"
