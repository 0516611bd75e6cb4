"""``function.pipeline`` over the stand-in model (``tests.fakes``): what each stage records,
when the deadline is checked, frame scores, and the empty image. The score itself is the
real model's subject (``test_model``, ``test_parity``); here it is only the runtime's output
carried through."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from function.errors import DeadlineExceeded, UndecodableImage
from function.pipeline import Pipeline, Source
from function.service import Service
from tests.fakes import FakeModel, fake_service
from tests.imagehost import ImageHost
from tests.photos import photo_jpeg

JPEG = photo_jpeg("coffee", (96, 64))


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    instance = fake_service()
    yield instance
    instance.stop()


@pytest.fixture()
def pipeline(service: Service) -> Pipeline:
    return service.pipeline


def runtime_calls(service: Service) -> int:
    assert isinstance(service.model, FakeModel)
    return service.model.runtime.calls


def metric(service: Service, name: str, **labels: str) -> float:
    text = service.metrics.render("text/plain")[0].decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def gif(colours: list[tuple[int, int, int]]) -> bytes:
    frames = [Image.new("RGB", (32, 24), colour) for colour in colours]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=40)
    return buffer.getvalue()


def test_bytes_go_through_every_stage_but_fetch(service: Service, pipeline: Pipeline) -> None:
    before = {s: metric(service, "nsfwoid_stage_seconds_count", stage=s) for s in
              ("fetch", "decode", "preprocess", "predict")}  # fmt: skip
    calls = runtime_calls(service)
    notes: dict[str, Any] = {}
    result = pipeline.score(Source(data=JPEG), notes=notes.__setitem__)

    assert runtime_calls(service) == calls + 1
    assert set(result["timing_ms"]) == {"decode", "preprocess", "predict", "total"}
    assert all(value >= 0 for value in result["timing_ms"].values())
    for stage in ("decode", "preprocess", "predict"):
        assert metric(service, "nsfwoid_stage_seconds_count", stage=stage) == before[stage] + 1
    assert metric(service, "nsfwoid_stage_seconds_count", stage="fetch") == before["fetch"]

    sha1 = hashlib.sha1(JPEG).hexdigest()
    image = result["image"]
    assert image["sha1"] == sha1 and int(image["sha1_base36"], 36) == int(sha1, 16)
    assert len(image["sha1_base36"]) == 31
    assert (image["format"], image["width"], image["height"]) == ("JPEG", 96, 64)
    assert (image["frames"], image["truncated"]) == (1, False)
    assert "frame_scores" not in result
    assert 0 <= result["score"] <= 1
    assert result["model"] == {"name": "fake", "version": "0", "sha256": "0" * 64}
    assert result["preprocessing"] == service.settings.preprocessing
    # What the request's log line is told, as the stages go.
    assert notes["image_bytes"] == len(JPEG) and notes["image_format"] == "JPEG"
    assert notes["image_size"] == "96x64" and notes["timing_ms"] is not result["timing_ms"]


def test_the_preprocessing_mode_is_carried_into_the_result(pipeline: Pipeline) -> None:
    assert pipeline.score(Source(data=JPEG), mode="reference")["preprocessing"] == "reference"


def test_a_url_is_fetched_timed_and_counted(service: Service, pipeline: Pipeline) -> None:
    host = ImageHost()
    try:
        url = host.file("/pipeline/a.jpg", JPEG)
        fetched_before = metric(service, "nsfwoid_fetched_bytes_total")
        notes: dict[str, Any] = {}
        result = pipeline.score(Source(url=url), notes=notes.__setitem__)
    finally:
        host.close()
    assert "fetch" in result["timing_ms"]
    assert metric(service, "nsfwoid_fetched_bytes_total") == fetched_before + len(JPEG)
    assert notes["source_host"] == "127.0.0.1"
    assert result["image"]["sha1"] == hashlib.sha1(JPEG).hexdigest()


def test_an_empty_image_is_a_422_before_any_decoding(service: Service, pipeline: Pipeline) -> None:
    calls = runtime_calls(service)
    decoded = metric(service, "nsfwoid_stage_seconds_count", stage="decode")
    with pytest.raises(UndecodableImage, match="empty"):
        pipeline.score(Source(data=b""))
    assert metric(service, "nsfwoid_stage_seconds_count", stage="decode") == decoded
    assert runtime_calls(service) == calls


def test_a_passed_deadline_stops_before_the_next_stage(
    service: Service, pipeline: Pipeline
) -> None:
    calls = runtime_calls(service)
    decoded = metric(service, "nsfwoid_stage_seconds_count", stage="decode")
    notes: dict[str, Any] = {}
    with pytest.raises(DeadlineExceeded):
        pipeline.score(Source(data=JPEG), deadline=time.monotonic() - 1, notes=notes.__setitem__)
    assert runtime_calls(service) == calls  # the model never ran
    assert metric(service, "nsfwoid_stage_seconds_count", stage="decode") == decoded
    assert notes["timing_ms"] == {}  # the log line shows how far it got: nowhere


def test_a_deadline_passing_during_predict_is_a_deadline_error(
    service: Service, pipeline: Pipeline
) -> None:
    assert isinstance(service.model, FakeModel)
    gate = service.model.runtime.gate
    gate.clear()  # predict waits until the test opens the gate
    try:
        notes: dict[str, Any] = {}
        with pytest.raises(DeadlineExceeded):
            pipeline.score(
                Source(data=JPEG), deadline=time.monotonic() + 0.2, notes=notes.__setitem__
            )
        # Decode and preprocess ran; predict was cut, and its time still recorded.
        assert {"decode", "preprocess", "predict"} <= set(notes["timing_ms"])
    finally:
        gate.set()
    assert pipeline.score(Source(data=JPEG))["score"] >= 0  # and the next one is served


def test_animated_frames_are_scored_and_the_max_is_the_score(pipeline: Pipeline) -> None:
    colours = [(0, 0, 0), (255, 255, 255), (128, 128, 128)]
    result = pipeline.score(Source(data=gif(colours)))
    frames = result["frame_scores"]
    assert [frame["index"] for frame in frames] == [0, 1, 2]
    scores = [frame["score"] for frame in frames]
    assert result["score"] == max(scores)
    assert len(set(scores)) == 3  # each frame was scored on its own pixels
    assert result["image"]["frames"] == 3


def test_frames_are_sampled_up_to_the_limit() -> None:
    service = fake_service(max_frames=4)
    try:
        colours = [(n * 8, n * 8, n * 8) for n in range(20)]
        result = service.pipeline.score(Source(data=gif(colours)))
    finally:
        service.stop()
    indices = [frame["index"] for frame in result["frame_scores"]]
    assert len(indices) == 4 and indices[0] == 0 and indices[-1] == 19
    assert indices == sorted(set(indices))
    assert result["image"]["frames"] == 20
    assert result["score"] == pytest.approx(max(f["score"] for f in result["frame_scores"]))
    assert np.isfinite(result["score"])
