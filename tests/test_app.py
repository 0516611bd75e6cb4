"""The shared request path (``function.app`` + ``function.body``) with a stand-in model.

What is proven here does not depend on the score: bodies are read capped and time-bounded
before a scoring slot is taken, a batch takes a slot per URL, malformed JSON of any depth is a
400 on every door, and the event cache keeps plain data. Real sockets, a real server on
127.0.0.1 (werkzeug's, with the function's ``App``) and a loopback image host.
"""

from __future__ import annotations

import base64
import gc
import io
import json
import logging
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests
from werkzeug.serving import make_server

from function import events
from function.logs import EcsFormatter
from tests.ecs import entries, field
from tests.fakes import fake_app
from tests.imagehost import ImageHost
from tests.photos import photo_jpeg

JPEG = photo_jpeg("coffee", (64, 48), quality=85)
NESTED = b"[" * 200_000 + b"]" * 200_000


@contextmanager
def serving(app: object) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


# --- malformed JSON, on every door that reads JSON --------------------------------------------
@pytest.mark.parametrize(
    "headers, body",
    [
        ({"Content-Type": "application/json"}, NESTED),
        ({"Content-Type": "application/cloudevents+json"}, NESTED),
        (
            {
                "Content-Type": "application/json",
                "ce-specversion": "1.0",
                "ce-id": "nested",
                "ce-source": "/test",
                "ce-type": "test.upload",
            },
            NESTED,
        ),
        (
            {"Content-Type": "application/cloudevents+json"},
            json.dumps(
                {"specversion": "1.0", "id": "x", "source": "/t", "type": "t", "data": "[["}
            ).encode(),
        ),
    ],
    ids=["json", "structured-event", "binary-event-data", "structured-data-string"],
)
def test_deeply_nested_or_broken_json_is_a_400(headers, body):
    with fake_app() as (app, service):
        response = app.test_client().post("/", data=body, headers=headers)
        assert response.status_code == 400, response.get_data(as_text=True)
        assert response.get_json()["error"]["code"] == "invalid_request"
        # and the process keeps serving
        assert app.test_client().post("/", data=JPEG, content_type="image/jpeg").status_code == 200


# --- admission ---------------------------------------------------------------------------------
def test_a_batch_takes_one_slot_per_url_and_is_refused_when_they_are_not_free():
    host = ImageHost()
    with fake_app(max_in_flight=4) as (app, service), serving(app) as url:
        image = host.file("/a.jpg", JPEG)
        runtime = service.model.runtime  # type: ignore[attr-defined]
        warmed = runtime.calls
        runtime.gate.clear()  # the next inference waits: its request keeps its slot
        held = threading.Thread(
            target=requests.post,
            args=(url,),
            kwargs={"data": JPEG, "headers": {"Content-Type": "image/jpeg"}, "timeout": 60},
        )
        held.start()
        try:
            for _ in range(500):  # until the held request is in the model (bounded)
                if runtime.calls > warmed:
                    break
                threading.Event().wait(0.01)
            assert runtime.calls == warmed + 1
            too_many = requests.post(url, json={"urls": [image] * 4}, timeout=30)
            assert too_many.status_code == 503
            assert too_many.json()["error"]["code"] == "overloaded"
            assert too_many.headers["Retry-After"] == "1"
        finally:
            runtime.gate.set()
            held.join(timeout=60)
        fits = requests.post(url, json={"urls": [image] * 4}, timeout=30)
        assert fits.status_code == 200
        assert [item["url"] for item in fits.json()["results"]] == [image] * 4
        assert all("score" in item for item in fits.json()["results"])
    host.close()


def test_batch_items_log_with_the_request_id():
    """Items run on pool threads; their log lines still carry the request's id."""
    host = ImageHost()
    missing = host.file("/gone.jpg", b"", status=404)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EcsFormatter())
    logger = logging.getLogger("nsfwoid")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with fake_app() as (app, service):
            response = app.test_client().post(
                "/", json={"urls": [missing, missing]}, headers={"X-Request-Id": "batch-42"}
            )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        host.close()
    assert response.status_code == 200
    lines = entries(stream.getvalue())
    items = [line for line in lines if line["message"] == "batch item failed"]
    assert len(items) == 2
    for line in items:
        assert field(line, "http.request.id") == "batch-42"
        assert field(line, "url.domain") == "127.0.0.1"
        assert field(line, "nsfwoid.outcome") == "source_not_found"


# --- slow bodies -------------------------------------------------------------------------------
def test_trickling_bodies_get_408_and_never_hold_a_scoring_slot():
    """16 clients sending their bodies a byte at a time, with 4 scoring slots: a normal
    request is still scored, and each trickler is cut off with a 408."""
    with fake_app(max_in_flight=4, body_timeout=1.0) as (app, service), serving(app) as url:
        port = int(url.rsplit(":", 1)[1])
        tricklers = []
        for _ in range(16):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(
                b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                b"Content-Length: 100000\r\n\r\n"
            )
            tricklers.append(sock)
        for sock in tricklers:  # every one has started its body
            sock.sendall(b"\xff")
        normal = requests.post(url, data=JPEG, headers={"Content-Type": "image/jpeg"}, timeout=30)
        assert normal.status_code == 200, normal.text
        assert 0 <= normal.json()["score"] <= 1
        answers = []
        for sock in tricklers:
            answer = b""
            for _ in range(300):  # a byte per round until the server answers (bounded)
                try:
                    sock.sendall(b"\xd8")
                except OSError:
                    pass  # the server shut its read side: the answer is on its way
                sock.settimeout(0.1)
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                answer += chunk
                if not chunk or b"\r\n\r\n" in answer:
                    break
            sock.close()
            answers.append(answer.split(b"\r\n", 1)[0])
        assert answers == [b"HTTP/1.1 408 REQUEST TIMEOUT"] * 16
        rejected = service.metrics.rejected.labels("overloaded")._value.get()
        assert rejected == 0  # none of them ever reached admission


# --- the duplicate-event cache -----------------------------------------------------------------
def binary_event(event_id: str, data: bytes) -> dict[str, object]:
    return {
        "headers": {
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-source": "/wiki/test",
            "ce-type": "org.example.upload",
            "Content-Type": "image/jpeg",
        },
        "data": data,
    }


def test_redeliveries_of_a_bad_event_keep_memory_flat():
    """The same undecodable 5 MB event delivered 20 times: the cache keeps its outcome as
    plain data, so nothing of the requests (bodies, tracebacks) stays alive."""
    bad = b"\xff\xd8\xff" + b"\x00" * (5 * 1024 * 1024)
    with fake_app() as (app, service):
        client = app.test_client()

        def deliver() -> None:
            response = client.post("/", **binary_event("bad-1", bad))  # type: ignore[arg-type]
            assert response.status_code == 422
            assert response.get_json()["error"]["code"] == "undecodable_image"

        deliver()
        gc.collect()
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            for _ in range(19):
                deliver()
            gc.collect()
            after, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert after - before < 1024 * 1024, f"grew {(after - before) / 2**20:.1f} MiB"
        assert service.metrics.event_duplicates._value.get() == 19
        cached = service.event_cache.get(("/wiki/test", "bad-1", False))
        assert isinstance(cached, events.Failure) and cached.status == 422


def test_event_cache_is_bounded_in_bytes():
    cache = events.EventCache(capacity=1000, max_bytes=64 * 1024)
    reply = ({"ce-id": "x"}, b"x" * 10_000)
    for index in range(50):
        cache.put(("/s", str(index), False), reply)
        assert cache.size_bytes <= 64 * 1024
    assert len(cache) == 6
    assert cache.get(("/s", "49", False)) == reply  # the newest are kept
    assert cache.get(("/s", "0", False)) is None


def test_an_event_whose_image_is_not_there_yet_is_retried_not_dead_lettered():
    host = ImageHost()
    missing = host.file("/later.jpg", b"", status=404)
    with fake_app() as (app, service):
        client = app.test_client()
        event = {
            "headers": {
                "ce-specversion": "1.0",
                "ce-id": "race-1",
                "ce-source": "/wiki/test",
                "ce-type": "org.example.upload",
                "Content-Type": "application/json",
            },
            "data": json.dumps({"url": missing}),
        }
        first = client.post("/", **event)  # type: ignore[arg-type]
        assert first.status_code == 503 and first.headers["Retry-After"] == "5"
        host.file("/later.jpg", JPEG)
        second = client.post("/", **event)  # type: ignore[arg-type]
        assert second.status_code == 200, second.get_data(as_text=True)
        plain = client.post("/", json={"url": host.file("/nope.jpg", b"", status=404)})
        assert plain.status_code == 422
        assert plain.get_json()["error"]["code"] == "source_not_found"
    host.close()


def test_structured_image_event_round_trip():
    with fake_app() as (app, service):
        body = {
            "specversion": "1.0",
            "id": "s-1",
            "source": "/wiki/test",
            "type": "org.example.upload",
            "datacontenttype": "image/jpeg",
            "data_base64": base64.b64encode(JPEG).decode(),
        }
        response = app.test_client().post(
            "/", data=json.dumps(body), content_type="application/cloudevents+json"
        )
        assert response.status_code == 200
        assert 0 <= response.get_json()["data"]["score"] <= 1
