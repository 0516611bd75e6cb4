"""Wikimedia upload events end to end: the real function, the real model, a loopback upload host.

The image host is laid out like upload.wikimedia.org (``/<site>/<lang>/<m0>/<m0m1>/<name>`` and
``…/thumb/…``), so a URL the function fetched can be compared with expected-urls.json with only
the base swapped. The samples' hashes are invented; each test sets ``log_params.img_sha1`` to
the hash of the bytes it serves (a sample as-is meets bytes of another version: the stale case).
Events come as a KafkaSource delivers them (binary CloudEvent, ``dev.knative.kafka.event``), as a
structured CloudEvent, and as ChangeProp's ``{"event": …}``.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import requests
from cloudevents.http import CloudEvent, from_http
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from function.config import Settings
from function.wikimedia import filerepo, scored
from tests.conftest import make_app, running_server, start_app
from tests.imagehost import ImageHost, send
from tests.photos import photo_jpeg
from tests.test_wikimedia import SAMPLES, assert_valid, expected_urls, sample

pytestmark = pytest.mark.skipif(
    not SAMPLES.is_dir(), reason="../shared/wikimedia/events/samples is not here"
)

WIKIMEDIA = "https://upload.wikimedia.org"
KAFKA_SOURCE = "/apis/v1/namespaces/nsfwoid/kafkasources/mediawiki-recentchange"
KAFKA_TYPE = "dev.knative.kafka.event"
STRUCTURED = "application/cloudevents+json"
MODES = ("binary", "structured", "plain")


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def photo(name: str, size: tuple[int, int], fmt: str) -> bytes:
    jpeg = photo_jpeg(name, size)
    if fmt == "JPEG":
        return jpeg
    with Image.open(io.BytesIO(jpeg)) as image:
        return encoded(image.convert("RGB"), fmt)


# What the host serves for each sample, and where (original, or the thumbnail for the SVG).
SERVED = {
    "rc-upload-commonswiki.json": ("original_url", photo("astronaut", (320, 320), "JPEG")),
    "rc-overwrite-commonswiki.json": ("original_url", photo("chelsea", (200, 150), "PNG")),
    "rc-revert-enwiki.json": ("original_url", photo("rocket", (120, 160), "GIF")),
    "rc-upload-dewiki.json": ("thumb_500_url", photo("coffee", (500, 333), "PNG")),
}
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif"}


def base36(data: bytes) -> str:
    return filerepo.sha1_base36(hashlib.sha1(data).hexdigest())


def path_of(url: str) -> str:
    return urlsplit(url).path


def fresh(event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The event with a new meta.id (so no earlier reply is a duplicate of it) and changes."""
    out = copy.deepcopy(event)
    out["meta"]["id"] = str(uuid.uuid4())
    for key, value in changes.items():
        out[key] = value
    return out


def with_sha1(event: dict[str, Any], data: bytes) -> dict[str, Any]:
    out = fresh(event)
    out["log_params"]["img_sha1"] = base36(data)
    return out


def upload_event(
    wiki: str, title: str, data: bytes | None, action: str = "upload"
) -> dict[str, Any]:
    """A recentchange upload like the samples, for a file of our choosing."""
    event = fresh(sample("rc-upload-commonswiki.json"), wiki=wiki, title=title, log_action=action)
    if data is None:
        del event["log_params"]["img_sha1"]
    else:
        event["log_params"]["img_sha1"] = base36(data)
    return event


# --- transports ---------------------------------------------------------------------------------

_offsets = iter(range(10**9))


def request_for(event: dict[str, Any], mode: str) -> tuple[dict[str, str], bytes]:
    offset = next(_offsets)
    attributes = {
        "id": f"partition:0/offset:{offset}",
        "source": f"{KAFKA_SOURCE}#eqiad.mediawiki.recentchange",
        "type": KAFKA_TYPE,
        "subject": f"partition:0#{offset}",
    }
    body = json.dumps(event).encode()
    if mode == "binary":  # what a KafkaSource sends: attributes as headers, the record as body
        headers = {f"ce-{k}": v for k, v in attributes.items()}
        return headers | {"ce-specversion": "1.0", "Content-Type": "application/json"}, body
    if mode == "structured":
        envelope = attributes | {"specversion": "1.0", "datacontenttype": "application/json"}
        return {"Content-Type": STRUCTURED}, json.dumps(envelope | {"data": event}).encode()
    return {"Content-Type": "application/json"}, json.dumps({"event": event}).encode()


def deliver(client: FlaskClient, event: dict[str, Any], mode: str = "binary") -> Any:
    headers, body = request_for(event, mode)
    return client.post("/", headers=headers, data=body)


def reply_of(response: Any, mode: str) -> tuple[dict[str, Any], CloudEvent | None]:
    """(the reply's data, its CloudEvent or None for ChangeProp's plain JSON), validated."""
    assert response.status_code == 200, response.get_data(as_text=True)
    headers = dict(response.headers)
    body = response.get_data()
    if mode == "plain":
        assert response.mimetype == "application/json"
        assert not any(k.lower().startswith("ce-") for k in headers)
        data = json.loads(body)
        assert_valid(data)
        return data, None
    decoded = {k: unquote(v) if k.lower().startswith("ce-") else v for k, v in headers.items()}
    ce = from_http(decoded, body)
    assert ("ce-specversion" in {k.lower() for k in headers}) is (mode == "binary")
    data = ce.get_data()
    assert isinstance(data, dict)
    assert_valid(data)
    assert ce["id"] == data["meta"]["id"] and ce["dataschema"] == data["$schema"]
    assert ce["time"] == data["meta"]["dt"]
    return data, ce


def assert_no_reply(response: Any) -> None:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_data() == b""
    assert not any(k.lower().startswith("ce-") for k in response.headers.keys())


def assert_retryable(response: Any, code: str) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) > 0
    assert response.get_json()["error"]["code"] == code


# --- fixtures -----------------------------------------------------------------------------------


# The shared loopback host and upload-configured app (conftest), under this module's short names.
@pytest.fixture(scope="module")
def host(image_host: ImageHost) -> ImageHost:
    return image_host


@pytest.fixture(scope="module")
def app(upload_app: Flask) -> Flask:
    return upload_app


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def swapped(url: str, host: ImageHost) -> str:
    assert url.startswith(WIKIMEDIA)
    return host.url("") + url.removeprefix(WIKIMEDIA)


def plain_score(client: FlaskClient, data: bytes) -> float:
    response = client.post("/", data=data, content_type="application/octet-stream")
    assert response.status_code == 200, response.get_data(as_text=True)
    return float(response.get_json()["score"])


def decodes(client: FlaskClient) -> float:
    """Images decoded so far (the decode stage's histogram count)."""
    text = client.get("/metrics").get_data(as_text=True)
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        if family.name == "nsfwoid_stage_seconds"
        for s in family.samples
        if s.name == "nsfwoid_stage_seconds_count" and s.labels["stage"] == "decode"
    )


def counts(client: FlaskClient) -> dict[tuple[str, str], float]:
    text = client.get("/metrics").get_data(as_text=True)
    return {
        (s.labels["outcome"], s.labels["reason"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "nsfwoid_upload_events"
        for s in family.samples
        if s.name == "nsfwoid_upload_events_total"
    }


# --- every sample, every transport --------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_every_sample_gets_its_outcome(client: FlaskClient, host: ImageHost, mode: str) -> None:
    for expected in expected_urls():
        which, data = SERVED[expected["sample"]]
        url = swapped(expected[which], host)
        host.file(path_of(url), data, "image/png")  # the type the host claims does not matter
        event = sample(expected["sample"])
        event = with_sha1(event, data) if which == "original_url" else fresh(event)
        before = host.hits_for(path_of(url))
        reply, ce = reply_of(deliver(client, event, mode), mode)

        image = reply["image"]
        assert image["url"] == url  # expected-urls.json with only the base swapped
        assert image["original_url"] == swapped(expected["original_url"], host)
        assert host.hits_for(path_of(url)) == before + 1
        assert image["file_name"] == expected["file_name"]
        assert image["log_action"] == expected["log_action"]
        assert image["fetched_sha1"] == hashlib.sha1(data).hexdigest()
        assert image["bytes"] == len(data)
        with Image.open(io.BytesIO(data)) as served:
            assert (image["width"], image["height"]) == served.size
            assert image["mime"] == MIME[str(served.format)]
        if which == "original_url":
            assert image["variant"] == "original" and image["sha1_verified"] is True
            assert image["sha1"] == hashlib.sha1(data).hexdigest()
        else:  # the SVG: its thumbnail, whose bytes are not the original's
            assert image["variant"] == "thumbnail" and image["thumb_width"] == 500
            assert image["sha1_verified"] is False
            assert image["sha1"] == expected["img_sha1_hex"]
            assert host.hits_for(path_of(swapped(expected["original_url"], host))) == 0
        assert reply["score"] == plain_score(client, data)  # the real model, same number
        assert reply["predicted_classification"]["probabilities"]["nsfw"] == reply["score"]
        assert reply["wiki_id"] == expected["wiki"]
        assert reply["page"]["page_title"] == event["title"].replace(" ", "_")
        assert reply["meta"]["domain"] == event["meta"]["domain"]
        assert reply["meta"]["request_id"] == event["meta"]["request_id"]
        assert reply["source_event"]["meta_id"] == event["meta"]["id"]
        assert reply["scoring"]["frames_scored"] == 1 and reply["scoring"]["truncated"] is False
        if ce is not None:
            assert ce["type"] == "org.nsfwoid.image.scored" and ce["source"] == "/nsfwoid"
            assert ce["subject"] == image["sha1"]
            assert reply["source_event"]["type"] == KAFKA_TYPE

    for name in (
        "rc-canary.json",
        "rc-edit-file-page-not-upload.json",
        "page-change-create-file.json",
    ):
        assert_no_reply(deliver(client, fresh(sample(name)), mode))


def test_same_event_same_id_any_cluster_or_mode(client: FlaskClient, host: ImageHost) -> None:
    data = photo("astronaut", (96, 96), "JPEG")
    event = upload_event("enwiki", f"File:Same {uuid.uuid4().hex}.jpg", data)
    name = filerepo.file_name(event["title"])
    url = filerepo.original_url(host.url(""), "enwiki", name)
    host.file(path_of(url), data)
    ids = {reply_of(deliver(client, event, mode), mode)[0]["meta"]["id"] for mode in MODES}
    assert len(ids) == 1
    assert host.hits_for(path_of(url)) == 3  # each mode's reply is its own; the id is shared
    again = deliver(client, event, "binary")  # a redelivery: the same reply, no refetch
    assert reply_of(again, "binary")[0]["meta"]["id"] in ids
    assert host.hits_for(path_of(url)) == 3


# --- the upload race ----------------------------------------------------------------------------


def test_overwrite_served_stale_is_retried_until_the_new_version(
    client: FlaskClient, host: ImageHost
) -> None:
    expected = expected_urls()[1]
    url = swapped(expected["original_url"], host)
    old, new = photo("chelsea", (200, 150), "PNG"), photo("chelsea", (180, 150), "PNG")
    event = with_sha1(sample("rc-overwrite-commonswiki.json"), new)
    host.file(path_of(url), old)
    before = counts(client).get(("retry", "stale_file"), 0)
    decoded = decodes(client)
    for _ in range(2):
        assert_retryable(deliver(client, event), "stale_file")
    assert counts(client)[("retry", "stale_file")] == before + 2
    assert decodes(client) == decoded  # told apart by its hash, before any decode
    host.file(path_of(url), new)
    reply, ce = reply_of(deliver(client, event), "binary")
    assert reply["image"]["sha1_verified"] is True
    assert ce is not None
    assert reply["image"]["sha1"] == hashlib.sha1(new).hexdigest() == ce["subject"]
    assert reply["image"]["width"] == 180
    # The sample as it is names a version this host never had: never scored as that version.
    assert_retryable(deliver(client, fresh(sample("rc-overwrite-commonswiki.json"))), "stale_file")


def test_file_missing_at_first_is_scored_on_retry(client: FlaskClient, host: ImageHost) -> None:
    data = photo("motorcycle_left", (160, 120), "JPEG")
    event = upload_event("commonswiki", f"File:Late {uuid.uuid4().hex}.jpg", data)
    url = filerepo.original_url(host.url(""), "commonswiki", filerepo.file_name(event["title"]))
    for mode in MODES:
        assert_retryable(deliver(client, event, mode), "file_not_ready")
    host.file(path_of(url), data)
    for mode in MODES:
        reply, _ = reply_of(deliver(client, event, mode), mode)
        assert reply["image"]["sha1_verified"] is True


@pytest.mark.parametrize("status", [403, 404, 410, 429, 500, 502, 503])
def test_host_refusals_and_failures_are_503(
    client: FlaskClient, host: ImageHost, status: int
) -> None:
    event = upload_event("enwiki", f"File:Gone {uuid.uuid4().hex}.png", b"whatever")
    url = filerepo.original_url(host.url(""), "enwiki", filerepo.file_name(event["title"]))
    host.file(path_of(url), b"no", "text/plain", status=status)
    assert_retryable(deliver(client, event), "file_not_ready")


# --- what is not scored -------------------------------------------------------------------------


def test_events_that_are_not_scorable_uploads_get_no_reply(
    client: FlaskClient, host: ImageHost
) -> None:
    upload = sample("rc-upload-commonswiki.json")
    deletion = fresh(upload, log_type="delete", log_action="delete")
    user_page = fresh(upload, namespace=2)
    cases: dict[tuple[str, str], Any] = {
        ("skipped", "canary"): fresh(sample("rc-canary.json")),
        ("skipped", "not_upload"): [fresh(sample("rc-edit-file-page-not-upload.json")), deletion],
        ("skipped", "not_file_namespace"): user_page,
        ("skipped", "page_change_off"): fresh(sample("page-change-create-file.json")),
        ("skipped", "file_type"): [
            upload_event("commonswiki", f"File:Sound {n}.{ext}", b"x")
            for n, ext in enumerate(("ogg", "mp3", "flac", "stl", "xcf", "pdf", "webm", "djvu"))
        ],
        ("skipped", "unknown_wiki"): fresh(upload, wiki="nosuchwiki_x"),
    }
    hits = len(host.hits)
    before = counts(client)
    for key, events in cases.items():
        for event in events if isinstance(events, list) else [events]:
            for mode in MODES:
                assert_no_reply(deliver(client, event, mode))
        count = len(events) if isinstance(events, list) else 1
        assert counts(client)[key] == before.get(key, 0) + 3 * count, key
    assert len(host.hits) == hits  # nothing was fetched for any of them


def test_non_wikimedia_events_keep_their_old_behaviour(client: FlaskClient) -> None:
    # A JSON event with neither $schema nor meta.stream: the CloudEvents door, as before.
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}
    response = client.post("/", headers=headers | {"Content-Type": "application/json"}, data=b"{}")
    assert response.status_code == 400
    response = client.post(
        "/", json={"event": {"title": "File:X.jpg"}}
    )  # not an Event Platform event
    assert response.status_code == 400


# --- permanent failures: a failed event -----------------------------------------------------------


@pytest.fixture(scope="module")
def strict_app(built_model: Path, host: ImageHost) -> Iterator[Flask]:
    """Small fetch cap, a wiki whose thumbnails live on a host not allowed, the optional inputs."""
    application = start_app(
        make_app(
            NSFWOID_UPLOAD_BASE_URL=host.url(""),
            NSFWOID_ALLOWED_HOSTS="127.0.0.1",
            NSFWOID_THUMB_BASE_URLS="frwiki=https://thumbs.example.org",
            NSFWOID_MAX_FETCH_BYTES="60000",
            NSFWOID_THUMB_WIDTH="330",
            NSFWOID_SCORE_RENDERED_MEDIA="true",
            NSFWOID_UPLOAD_PAGE_CHANGE="true",
        )
    )
    yield application
    application.extensions["nsfwoid"].stop()


def failed_of(response: Any, mode: str, code: str) -> dict[str, Any]:
    data, ce = reply_of(response, mode)
    assert data["$schema"] == scored.FAILED_SCHEMA and data["error"]["code"] == code
    if ce is not None:
        assert ce["type"] == "org.nsfwoid.image.failed"
    return data


@pytest.mark.parametrize("mode", MODES)
def test_permanent_failures_get_a_failed_event(
    strict_app: Flask, host: ImageHost, mode: str
) -> None:
    client = strict_app.test_client()
    tag = uuid.uuid4().hex
    broken = photo("astronaut", (64, 64), "JPEG")[:40]
    event = upload_event("enwiki", f"File:Broken {tag}.jpg", broken)
    host.file(path_of(filerepo.original_url(host.url(""), "enwiki", f"Broken_{tag}.jpg")), broken)
    first = failed_of(deliver(client, event, mode), mode, "undecodable_image")
    assert first["image"]["variant"] == "original"
    assert (
        failed_of(deliver(client, event, mode), mode, "undecodable_image")["meta"]["id"]
        == first["meta"]["id"]
    )

    # An SVG of a wiki whose thumbnails come from a host this service may not fetch from.
    event = upload_event("frwiki", f"Fichier:Carte {tag}.svg", b"<svg/>")
    data = failed_of(deliver(client, event, mode), mode, "source_not_allowed")
    assert data["image"]["url"].startswith("https://thumbs.example.org/wikipedia/fr/thumb/")
    assert data["image"]["url"].endswith(f"/330px-Carte_{tag}.svg.png")

    # Original and thumbnail both past the 60,000-byte cap.
    big = photo("astronaut", (512, 512), "PNG")
    assert len(big) > 60000
    event = upload_event("enwiki", f"File:Huge {tag}.png", big)
    name = f"Huge_{tag}.png"
    host.file(path_of(filerepo.original_url(host.url(""), "enwiki", name)), big)
    host.file(path_of(filerepo.thumb_url(host.url(""), "enwiki", name, 330)), big)
    data = failed_of(deliver(client, event, mode), mode, "source_too_large")
    assert data["image"]["variant"] == "thumbnail"


def test_too_large_original_is_scored_from_its_thumbnail(
    strict_app: Flask, host: ImageHost
) -> None:
    client = strict_app.test_client()
    tag = uuid.uuid4().hex
    big = photo("astronaut", (512, 512), "PNG")
    thumb = photo("astronaut", (330, 330), "JPEG")
    event = upload_event("enwiki", f"File:Big {tag}.png", big)
    name = f"Big_{tag}.png"
    host.file(path_of(filerepo.original_url(host.url(""), "enwiki", name)), big)
    thumb_url = filerepo.thumb_url(host.url(""), "enwiki", name, 330)
    host.file(path_of(thumb_url), thumb)
    reply, ce = reply_of(deliver(client, event), "binary")
    assert reply["image"]["url"] == thumb_url and reply["image"]["variant"] == "thumbnail"
    assert reply["image"]["sha1_verified"] is False
    assert ce is not None
    assert reply["image"]["sha1"] == hashlib.sha1(big).hexdigest() == ce["subject"]
    assert reply["score"] == plain_score(client, thumb)


def test_rendered_media_and_page_changes_behind_settings(
    strict_app: Flask, host: ImageHost
) -> None:
    client = strict_app.test_client()
    tag = uuid.uuid4().hex
    page = photo("rocket", (330, 430), "JPEG")
    for title, thumb_name in (
        (f"File:Report {tag}.pdf", f"page1-330px-Report_{tag}.pdf.jpg"),
        (f"File:Scan {tag}.djvu", f"page1-330px-Scan_{tag}.djvu.jpg"),
        (f"File:Clip {tag}.webm", f"330px--Clip_{tag}.webm.jpg"),
        (f"File:Scan {tag}.tif", f"lossy-page1-330px-Scan_{tag}.tif.jpg"),
    ):
        name = filerepo.file_name(title)
        url = filerepo.thumb_url(host.url(""), "enwiki", name, 330)
        assert url.endswith("/" + thumb_name)
        host.file(path_of(url), page)
        if name.endswith(".tif"):  # a TIFF's original is a raster: too large here, so the thumb
            host.file(path_of(filerepo.original_url(host.url(""), "enwiki", name)), b"\0" * 70000)
        reply, _ = reply_of(deliver(client, upload_event("enwiki", title, b"doc")), "binary")
        assert reply["image"]["url"] == url and reply["image"]["variant"] == "thumbnail"
    # A File page create: the original, with no hash in the event to verify it against.
    event = fresh(sample("page-change-create-file.json"))
    data = photo("astronaut", (100, 100), "JPEG")
    expected = expected_urls()[0]
    host.file(path_of(swapped(expected["original_url"], host)), data)
    reply, ce = reply_of(deliver(client, event), "binary")
    assert reply["image"]["sha1_verified"] is False
    assert ce is not None
    assert reply["image"]["sha1"] == hashlib.sha1(data).hexdigest() == ce["subject"]
    assert reply["page"]["page_id"] == 180000001


# --- a burst through the real server ------------------------------------------------------------


def test_burst_of_uploads_none_lost(built_model: Path, tmp_path: Path, host: ImageHost) -> None:
    """300 uploads at 16 concurrent deliveries; a fifth not fetchable at first. Every one ends
    scored, after redelivery of those answered retryable, as a broker would."""
    images = [photo(name, (96, 72), "JPEG") for name in ("astronaut", "chelsea", "coffee")]
    tag = uuid.uuid4().hex
    events, late = [], []
    for n in range(300):
        image = images[n % 3]
        event = upload_event("commonswiki", f"File:Burst {tag} {n}.jpg", image)
        url = filerepo.original_url(host.url(""), "commonswiki", filerepo.file_name(event["title"]))
        if n % 5 == 0:
            late.append((path_of(url), image))
        else:
            host.file(path_of(url), image)
        events.append(event)

    with running_server(tmp_path, NSFWOID_UPLOAD_BASE_URL=host.url("")) as server:

        def post(event: dict[str, Any]) -> tuple[str, int, dict[str, Any] | None]:
            headers, body = request_for(event, "binary")
            response = requests.post(server.url + "/", headers=headers, data=body, timeout=60)
            with response:
                if response.status_code != 200:
                    assert response.status_code in (503, 504), response.text
                    assert int(response.headers["Retry-After"]) > 0
                    return event["meta"]["id"], response.status_code, None
                decoded = {k: unquote(v) for k, v in response.headers.items()}
                reply = from_http(decoded, response.content).get_data()
                assert isinstance(reply, dict)
                return event["meta"]["id"], 200, reply

        scored_by_id: dict[str, dict[str, Any]] = {}
        pending = events
        with ThreadPoolExecutor(max_workers=16) as pool:
            for attempt in range(6):  # a broker's retries, bounded
                results = list(pool.map(post, pending))
                for event_id, status, reply in results:
                    if status == 200:
                        assert reply is not None
                        scored_by_id[event_id] = reply
                retry = {event_id for event_id, status, _ in results if status != 200}
                if attempt == 0:
                    assert len(retry) >= len(late)  # the late fifth at least
                    for path, image in late:
                        host.file(path, image)
                pending = [e for e in events if e["meta"]["id"] in retry]
                if not pending:
                    break
    assert not pending, f"{len(pending)} uploads never scored"
    assert len(scored_by_id) == 300
    for event in events:
        scored_event = scored_by_id[event["meta"]["id"]]
        assert_valid(scored_event)
        assert scored_event["image"]["sha1_verified"] is True
        assert scored_event["image"]["file_name"] == filerepo.file_name(event["title"])


# --- recognising the shapes (no model) ------------------------------------------------------------


def test_claim_recognises_only_wikimedia_events() -> None:
    from function.doors.uploads import claim

    rc = sample("rc-upload-commonswiki.json")
    for mode in MODES:
        headers, body = request_for(rc, mode)
        incoming = claim(headers, body)
        assert incoming is not None and incoming.mode == mode and incoming.data == rc
        assert (incoming.delivery.type == KAFKA_TYPE) is (mode != "plain")
    # A KafkaSource record without a Content-Type is still JSON; percent-encoded headers decode.
    headers, body = request_for(rc, "binary")
    del headers["Content-Type"]
    headers["ce-source"] = "%2Fkafka%23eqiad.mediawiki.recentchange"
    incoming = claim(headers, body)
    assert (
        incoming is not None and incoming.delivery.source == "/kafka#eqiad.mediawiki.recentchange"
    )
    not_ours = [
        ({"Content-Type": "application/json"}, json.dumps({"url": "https://x/y.jpg"}).encode()),
        ({"Content-Type": "application/json"}, json.dumps({"event": [rc]}).encode()),
        ({"Content-Type": "application/json"}, json.dumps(rc).encode()),  # bare, not {"event": …}
        ({"Content-Type": "application/json"}, b"{not json"),
        ({"Content-Type": "image/jpeg"}, json.dumps({"event": rc}).encode()),
        (
            {"Content-Type": STRUCTURED},
            json.dumps({"specversion": "1.0", "data": json.dumps(rc)}).encode(),
        ),
        ({"ce-specversion": "1.0", "Content-Type": "image/jpeg"}, json.dumps(rc).encode()),
        ({"ce-specversion": "1.0", "Content-Type": "application/json"}, b"[]"),
    ]
    for headers, body in not_ours:
        assert claim(headers, body) is None, (headers, body[:60])


def test_skipped_events_need_no_model(host: ImageHost, tmp_path: Path) -> None:
    """Most of recentchange is not uploads: an instance without a model still answers those."""
    # An empty model directory: the model never loads, so nothing these events need may wait
    # for it (a loading or busy instance is in the same position).
    application = make_app(NSFWOID_UPLOAD_BASE_URL=host.url(""), NSFWOID_MODEL_DIR=str(tmp_path))
    service = application.extensions["nsfwoid"]
    client = application.test_client()
    try:
        for name in ("rc-canary.json", "rc-edit-file-page-not-upload.json"):
            for mode in MODES:
                assert_no_reply(deliver(client, fresh(sample(name)), mode))
        assert not service.model.ready
        event = upload_event("enwiki", "File:Waiting.jpg", b"x")
        response = deliver(client, event)
        assert response.status_code == 503 and response.get_json()["error"]["code"] == "not_ready"
    finally:
        service.stop()


def test_fetches_send_the_user_agent_wikimedia_requires(
    client: FlaskClient, host: ImageHost
) -> None:
    """Wikimedia's User-Agent policy: a descriptive agent with a contact (NSFWOID_USER_AGENT)."""
    data = photo("coffee", (90, 60), "JPEG")
    event = upload_event("commonswiki", f"File:Agent {uuid.uuid4().hex}.jpg", data)
    url = filerepo.original_url(host.url(""), "commonswiki", filerepo.file_name(event["title"]))
    agents: list[str] = []

    def route(handler: Any) -> None:
        agents.append(handler.headers["User-Agent"])
        send(handler, data)

    host.route(path_of(url), route)
    reply_of(deliver(client, event), "binary")
    assert agents == [Settings().user_agent]
    assert "https://" in agents[0] and agents[0].startswith("nsfwoid/")
