"""The HTTP contract, proven on the real function with the real model.

In process through functions-framework's own app (``client``), and against the real server
process (``server``) with real clients: requests and curl.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from function.pipeline import Source
from tests.conftest import make_app, start_app
from tests.ecs import entries, field
from tests.imagehost import ImageHost
from tests.photos import photo_bytes, photo_jpeg

# Pinned from the verified model (parity with the independent ONNX conversion: 3.6e-6).
# (photo as shipped by its wheel, standard score, reference score)
GOLDEN = [
    ("astronaut", 0.0317022, 0.0317022),
    ("coffee", 0.0129502, 0.0129502),
    ("retina", 0.20424, 0.176107),  # JPEG: standard decodes in draft mode
    ("ihc", 0.00795082, 0.00795082),
    ("rocket", 9.42433e-05, 0.000462632),  # JPEG with an ICC profile
    ("grace_hopper", 0.000113392, 0.000148347),
    ("motorcycle_left", 0.00345285, 0.00345285),
]


def golden(value: float) -> object:
    return pytest.approx(value, rel=2e-3, abs=2e-6)


def result_of(response: object) -> dict:
    assert response.status_code == 200, response.get_data(as_text=True)  # type: ignore[attr-defined]
    return response.get_json()  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize(("name", "standard", "reference"), GOLDEN)
def test_golden_scores_both_modes(
    client: FlaskClient, name: str, standard: float, reference: float
) -> None:
    data = photo_bytes(name)
    std = result_of(client.post("/", data=data, content_type="application/octet-stream"))
    ref = result_of(client.post("/?preprocessing=reference", data=data, content_type="image/png"))
    assert std["preprocessing"] == "standard" and ref["preprocessing"] == "reference"
    assert std["score"] == golden(standard)
    assert ref["score"] == golden(reference)


def test_result_shape(client: FlaskClient) -> None:
    data = photo_jpeg("chelsea")
    body = result_of(client.post("/", data=data, content_type="image/jpeg"))
    assert 0.0 <= body["score"] <= 1.0
    assert body["model"]["name"] == "open_nsfw" and len(body["model"]["sha256"]) == 64
    image = body["image"]
    import hashlib

    assert image["sha1"] == hashlib.sha1(data).hexdigest()
    assert int(image["sha1_base36"], 36) == int(image["sha1"], 16)
    assert (image["format"], image["width"], image["height"]) == ("JPEG", 451, 300)
    assert image["frames"] == 1 and image["truncated"] is False
    assert set(body["timing_ms"]) >= {"decode", "preprocess", "predict", "total"}
    assert body["request_id"]


def test_every_input_form_gives_the_same_score(client: FlaskClient, image_host: ImageHost) -> None:
    data = photo_jpeg("coffee")
    url = image_host.file("/forms/coffee.jpg", data)
    raw = result_of(client.post("/", data=data, content_type="image/jpeg"))["score"]

    form = client.post("/", data={"url": url})
    assert form.status_code == 200 and form.mimetype == "text/plain"
    assert float(form.get_data(as_text=True)) == raw  # bare float, every digit kept

    form_json = client.post("/", data={"url": url}, headers={"Accept": "application/json"})
    assert result_of(form_json)["score"] == raw

    multipart_file = client.post(
        "/", data={"file": (io.BytesIO(data), "coffee.jpg")}, content_type="multipart/form-data"
    )
    assert result_of(multipart_file)["score"] == raw
    multipart_url = client.post("/", data={"url": url}, content_type="multipart/form-data")
    assert result_of(multipart_url)["score"] == raw

    assert result_of(client.post("/", json={"url": url}))["score"] == raw
    assert result_of(client.post("/score", json={"url": url}))["score"] == raw  # POST alias
    octet = client.post("/", data=data, content_type="application/octet-stream")
    assert result_of(octet)["score"] == raw


def test_batch_keeps_order_and_reports_errors_per_item(
    client: FlaskClient, image_host: ImageHost
) -> None:
    a = image_host.file("/batch/a.jpg", photo_jpeg("astronaut"))
    b = image_host.file("/batch/b.jpg", photo_jpeg("rocket"))
    missing = image_host.url("/batch/missing.jpg")
    body = result_of(client.post("/", json={"urls": [a, missing, b, "ftp://x/y.jpg"]}))
    results = body["results"]
    assert [r["url"] for r in results] == [a, missing, b, "ftp://x/y.jpg"]
    assert results[0]["score"] == result_of(client.post("/", json={"url": a}))["score"]
    assert results[1]["error"]["code"] == "source_not_found" and results[1]["status"] == 422
    assert results[2]["score"] == result_of(client.post("/", json={"url": b}))["score"]
    assert results[3]["error"]["code"] == "source_not_allowed" and results[3]["status"] == 422


def _frame(colour: tuple[int, int, int] | None, photo: str | None) -> Image.Image:
    if photo is not None:
        with Image.open(io.BytesIO(photo_bytes(photo))) as image:
            return image.convert("RGB").resize((320, 240))
    return Image.new("RGB", (320, 240), colour)


def test_animated_gif_scores_max_over_frames(client: FlaskClient) -> None:
    sources: list[tuple[tuple[int, int, int] | None, str | None]] = [
        ((30, 30, 200), None),
        (None, "retina"),
        ((20, 160, 20), None),
        (None, "coffee"),
    ]
    frames = [_frame(colour, photo) for colour, photo in sources]
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=100,
        loop=0,
        disposal=2,
    )
    body = result_of(client.post("/", data=buffer.getvalue(), content_type="image/gif"))
    per_frame = body["frame_scores"]
    assert [f["index"] for f in per_frame] == [0, 1, 2, 3]
    assert body["image"]["frames"] == 4
    assert body["score"] == max(f["score"] for f in per_frame)
    # Each frame scores as that frame would alone (as the GIF palette renders it).
    with Image.open(io.BytesIO(buffer.getvalue())) as gif:
        gif.seek(1)
        still = io.BytesIO()
        gif.convert("RGB").save(still, format="PNG")
    alone = result_of(client.post("/", data=still.getvalue(), content_type="image/png"))
    assert per_frame[1]["score"] == pytest.approx(alone["score"], abs=1e-6)
    # Reference mode is Yahoo's: the first frame only.
    ref = result_of(
        client.post("/?preprocessing=reference", data=buffer.getvalue(), content_type="image/gif")
    )
    assert "frame_scores" not in ref and ref["score"] == pytest.approx(
        per_frame[0]["score"], abs=1e-6
    )


def test_long_animation_samples_evenly_spaced_frames(client: FlaskClient) -> None:
    frames = [Image.new("RGB", (64, 48), (i * 8 % 256, 100, 200 - i * 6)) for i in range(30)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=40)
    body = result_of(client.post("/", data=buffer.getvalue(), content_type="image/gif"))
    indices = [f["index"] for f in body["frame_scores"]]
    assert len(indices) == 8 and indices[0] == 0 and indices[-1] == 29  # NSFWOID_MAX_FRAMES
    gaps = {b - a for a, b in zip(indices, indices[1:], strict=False)}
    assert gaps <= {4, 5}


def test_truncated_jpeg_is_scored_and_flagged(client: FlaskClient) -> None:
    data = photo_jpeg("astronaut")
    body = result_of(client.post("/", data=data[: len(data) * 2 // 3], content_type="image/jpeg"))
    assert body["image"]["truncated"] is True and 0.0 <= body["score"] <= 1.0
    whole = result_of(client.post("/", data=data, content_type="image/jpeg"))
    assert whole["image"]["truncated"] is False


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": b"{not json", "content_type": "application/json"}, 400, "invalid_request"),
        ({"json": {"nothing": 1}}, 400, "invalid_request"),
        ({"json": {"urls": []}}, 400, "invalid_request"),
        ({"json": {"urls": ["http://127.0.0.1/x"] * 17}}, 400, "invalid_request"),
        ({"json": {"url": "http://127.0.0.1/x", "preprocessing": "fancy"}}, 400, "invalid_request"),
        ({"data": {"nourl": "x"}}, 400, "invalid_request"),
        ({"data": b"", "content_type": "image/jpeg"}, 400, "invalid_request"),
        ({"data": b"hello", "content_type": "text/plain"}, 415, "unsupported_media_type"),
        (
            {"data": b"%PDF-1.4 nothing", "content_type": "image/jpeg"},
            415,
            "unsupported_media_type",
        ),
        (
            {"data": b"\xff\xd8\xff\xe0garbage", "content_type": "image/jpeg"},
            422,
            "undecodable_image",
        ),
        ({"json": {"url": "file:///etc/passwd"}}, 422, "source_not_allowed"),
    ],
)
def test_caller_mistakes_are_clear_4xx(
    client: FlaskClient, kwargs: dict, status: int, code: str
) -> None:
    response = client.post("/", **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
    if response.mimetype == "text/plain":  # the form path answers in kind
        assert "data" in kwargs and isinstance(kwargs["data"], dict)
        assert response.get_data(as_text=True).startswith(f"error: {code}: ")
        return
    body = response.get_json()
    assert body["error"]["code"] == code and body["error"]["message"]
    assert body["request_id"] == response.headers["X-Request-Id"]


def test_plain_text_path_answers_errors_as_text(client: FlaskClient, image_host: ImageHost) -> None:
    response = client.post("/", data={"url": image_host.url("/nowhere.jpg")})
    assert response.status_code == 422 and response.mimetype == "text/plain"
    assert response.get_data(as_text=True).startswith("error: source_not_found:")
    assert "Retry-After" not in response.headers


def test_source_failures_map_to_retryable_statuses(
    client: FlaskClient, image_host: ImageHost
) -> None:
    # A file the host does not have is the caller's mistake here, not a retryable fault.
    gone = client.post("/", json={"url": image_host.url("/never-uploaded.jpg")})
    assert gone.status_code == 422 and gone.get_json()["error"]["code"] == "source_not_found"
    assert "Retry-After" not in gone.headers
    failing = image_host.file("/failing-http.jpg", b"oops", "text/plain", status=500)
    broken = client.post("/", json={"url": failing})
    assert broken.status_code == 502 and broken.headers["Retry-After"]
    assert broken.get_json()["error"]["code"] == "source_unavailable"
    slow = image_host.hang("/hang-http.jpg", 6)
    started = time.monotonic()
    timed_out = client.post("/", json={"url": slow})
    assert timed_out.status_code == 504 and timed_out.headers["Retry-After"]
    assert time.monotonic() - started < 6  # NSFWOID_FETCH_DEADLINE=4 in the tests


def test_body_cap_is_413() -> None:
    app = start_app(make_app(NSFWOID_MAX_BODY_BYTES="1000"))
    try:
        response = app.test_client().post("/", data=photo_jpeg("coffee"), content_type="image/jpeg")
        assert response.status_code == 413
        assert response.get_json()["error"]["code"] == "payload_too_large"
    finally:
        app.extensions["nsfwoid"].stop()


def test_pixel_cap_is_422() -> None:
    app = start_app(make_app(NSFWOID_MAX_PIXELS="10000"))
    try:
        response = app.test_client().post("/", data=photo_bytes("coffee"), content_type="image/png")
        assert response.status_code == 422
        assert response.get_json()["error"]["code"] == "image_too_large"
    finally:
        app.extensions["nsfwoid"].stop()


def test_operations_endpoints(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert client.get("/nope").status_code == 404
    assert client.put("/").status_code == 405
    spec = client.get("/openapi.json")
    assert spec.status_code == 200 and spec.get_json()["openapi"].startswith("3.1")
    assert client.get("/openapi.yaml").status_code == 200


def test_readiness_waits_for_warm_up_and_drains() -> None:
    app = make_app()
    client = app.test_client()
    service = app.extensions["nsfwoid"]
    assert client.get("/readyz").status_code == 503  # nothing loaded yet
    assert client.get("/healthz").status_code == 200  # liveness does not wait for the model
    early = client.post("/", data=photo_jpeg("coffee"), content_type="image/jpeg")
    assert early.status_code == 503 and early.get_json()["error"]["code"] == "not_ready"
    service.start(wait=True)
    assert service.model.warmup_seconds > 0  # the warm-up inference did run
    assert client.get("/readyz").status_code == 200
    service.begin_shutdown()
    drained = client.get("/readyz")
    assert drained.status_code == 503 and drained.get_json()["reason"] == "draining"
    service.stop()


def test_model_failure_keeps_liveness_and_reports_unready(tmp_path: object) -> None:
    app = make_app(NSFWOID_MODEL_DIR=str(tmp_path))  # an empty folder: no model there
    app.extensions["nsfwoid"].start(wait=True)
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["reason"] == "model failed to load"


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_present_and_moving(client: FlaskClient) -> None:
    before = client.get("/metrics").get_data(as_text=True)
    for name in (
        "nsfwoid_requests_total",
        "nsfwoid_stage_seconds_bucket",
        "nsfwoid_fetched_bytes_total",
        "nsfwoid_score_bucket",
        "nsfwoid_model_load_seconds",
        "nsfwoid_model_warmup_seconds",
        "nsfwoid_in_flight_requests",
        "nsfwoid_rejected_requests_total",
        "nsfwoid_batch_size",
        "nsfwoid_inference_runs_total",
        "nsfwoid_model_info",
    ):
        assert f"# TYPE {name.removesuffix('_total').removesuffix('_bucket')}" in before, name
    result_of(client.post("/", data=photo_jpeg("coffee"), content_type="image/jpeg"))
    after = client.get("/metrics").get_data(as_text=True)
    ok = 'nsfwoid_requests_total{input="raw",outcome="ok"}'
    assert _metric(after, ok) == _metric(before, ok) + 1
    predict = 'nsfwoid_stage_seconds_count{stage="predict"}'
    assert _metric(after, predict) == _metric(before, predict) + 1
    assert _metric(after, "nsfwoid_score_count") == _metric(before, "nsfwoid_score_count") + 1
    assert _metric(after, "nsfwoid_model_load_seconds") > 0


def test_process_metrics_are_exported(client: FlaskClient) -> None:
    families = {
        family.name: family
        for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
    }

    def value(name: str) -> float:
        assert name in families, sorted(families)
        return sum(sample.value for sample in families[name].samples)

    assert value("process_resident_memory_bytes") > 0
    assert value("process_open_fds") > 0
    assert value("process_cpu_seconds") > 0  # this process has loaded and run the model
    assert value("process_start_time_seconds") > 0
    assert families["python_gc_collections"].samples  # one per generation
    assert families["python_info"].samples[0].labels["major"] == "3"


def test_lone_requests_run_alone_and_concurrent_ones_do_not(
    app: Flask, image_host: ImageHost
) -> None:
    """The hint that lets onnxruntime spin for a lone request's latency, and never while
    another request needs the CPU, follows the traffic; the scores do not."""
    alone = 'nsfwoid_inference_runs_total{alone="true"}'
    busy = 'nsfwoid_inference_runs_total{alone="false"}'
    names = ("astronaut", "coffee", "chelsea", "rocket")
    images = {name: photo_jpeg(name, (640, 480)) for name in names}

    def post(**kwargs: Any) -> float:
        return float(result_of(app.test_client().post("/", **kwargs))["score"])

    def score(name: str) -> float:
        return post(data=images[name], content_type="image/jpeg")

    def counts() -> tuple[float, float]:
        text = app.test_client().get("/metrics").get_data(as_text=True)
        return _metric(text, alone), _metric(text, busy)

    # One at a time: every run is alone.
    before = counts()
    sequential = {name: score(name) for name in names}
    assert counts() == (before[0] + len(names), before[1])

    # While another request is in flight (a URL that takes ~2 s to arrive), a request is
    # not alone even though its batch holds only itself.
    slow = image_host.drip("/alone/slow.jpg", images["coffee"], len(images["coffee"]) // 20, 0.1)
    with ThreadPoolExecutor(1) as background:
        fetching = background.submit(post, json={"url": slow})
        for _ in range(200):
            if image_host.hits_for("/alone/slow.jpg"):
                break
            time.sleep(0.01)
        before = counts()
        assert [score(name) for name in names[:3]] == [sequential[n] for n in names[:3]]
        assert counts() == (before[0], before[1] + 3)
        assert fetching.result(timeout=30) == sequential["coffee"]
    assert counts() == (before[0] + 1, before[1] + 3)  # the URL's own run: alone by then

    # Eight clients at once: runs are busy (batched or not), scores are unchanged.
    before = counts()
    start = threading.Barrier(8)

    def together(name: str) -> list[float]:
        start.wait(timeout=30)
        return [score(name) for _ in range(3)]

    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(together, [names[k % len(names)] for k in range(8)]))
    after = counts()
    assert after[1] > before[1]
    for k, scores in enumerate(concurrent):
        assert scores == pytest.approx([sequential[names[k % len(names)]]] * 3, abs=1e-6)


def test_http_path_equals_library_path_bit_for_bit(client: FlaskClient, app: object) -> None:
    service = app.extensions["nsfwoid"]  # type: ignore[attr-defined]
    for name in ("astronaut", "retina", "rocket"):
        data = photo_bytes(name)
        for mode in ("standard", "reference"):
            library = service.pipeline.score(Source(data=data), mode=mode)["score"]
            http = result_of(
                client.post(
                    f"/?preprocessing={mode}", data=data, content_type="application/octet-stream"
                )
            )["score"]
            assert http == library  # exact equality, not approx


def test_runtimes_agree() -> None:
    """onnxruntime (default), LiteRT and the canonical SavedModel on TensorFlow: same scores."""
    apps = {
        runtime: start_app(make_app(NSFWOID_RUNTIME=runtime))
        for runtime in ("onnxruntime", "litert", "tensorflow")
    }
    try:
        for name in ("astronaut", "retina", "coffee", "motorcycle_left"):
            data = photo_bytes(name)
            results = {
                runtime: result_of(app.test_client().post("/", data=data, content_type="image/png"))
                for runtime, app in apps.items()
            }
            assert len({r["model"]["sha256"] for r in results.values()}) == 3  # three artefacts
            canonical = results["tensorflow"]["score"]
            for runtime in ("onnxruntime", "litert"):
                assert results[runtime]["score"] == pytest.approx(canonical, abs=1e-5), runtime
    finally:
        for application in apps.values():
            application.extensions["nsfwoid"].stop()


def test_real_server_with_real_clients(server: object, image_host: ImageHost) -> None:
    base = server.url  # type: ignore[attr-defined]
    data = photo_jpeg("astronaut")
    url = image_host.file("/real/astronaut.jpg", data)
    by_bytes = requests.post(
        base + "/", data=data, headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    assert by_bytes.status_code == 200
    score = by_bytes.json()["score"]
    by_form = requests.post(base + "/", data={"url": url}, timeout=30)
    assert by_form.headers["Content-Type"].startswith("text/plain")
    assert float(by_form.text) == score
    if shutil.which("curl"):
        out = subprocess.run(
            ["curl", "-sS", "-d", f"url={url}", base + "/"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert float(out.stdout) == score
    # Every log line the server wrote is ECS JSON, and a scoring request has one line only,
    # carrying our fields (gunicorn's access log does not repeat it).
    lines = entries(server.logs())  # type: ignore[attr-defined]
    request_id = by_form.headers["X-Request-Id"]
    (scored,) = [entry for entry in lines if field(entry, "http.request.id") == request_id]
    assert scored["message"] == "scored" and field(scored, "nsfwoid.score") == score
    assert field(scored, "nsfwoid.input") == "form" and field(scored, "event.outcome") == "success"
    assert field(scored, "http.response.status_code") == 200 and field(scored, "event.duration")
