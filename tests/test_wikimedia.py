"""Wikimedia knowledge, pure: file repo paths, which events are uploads, the reply event.

Checked against the constructed samples and expected URLs in ../shared/wikimedia/events/ and
against the reply schemas kept in function/schemas/. No model, no network.
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from function.config import ConfigError, Settings
from function.wikimedia import filerepo, recentchange, scored
from function.wikimedia.recentchange import Skip, Upload

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "wikimedia" / "events" / "samples"
SCHEMAS = ROOT.parent / "shared" / "wikimedia" / "events" / "schemas-event-primary" / "jsonschema"
needs_samples = pytest.mark.skipif(
    not SAMPLES.is_dir(), reason="../shared/wikimedia/events/samples is not here"
)


def sample(name: str) -> dict[str, Any]:
    return dict(json.loads((SAMPLES / name).read_text()))


def expected_urls() -> list[dict[str, Any]]:
    return list(json.loads((SAMPLES / "expected-urls.json").read_text()))


def validator(schema_uri: str) -> jsonschema.Draft7Validator:
    schema = yaml.safe_load(scored.schema_path(schema_uri).read_text())
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())


def assert_valid(data: dict[str, Any]) -> None:
    errors = sorted(validator(data["$schema"]).iter_errors(data), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


# --- filerepo ---------------------------------------------------------------------------------


@needs_samples
@pytest.mark.parametrize("expected", expected_urls() if SAMPLES.is_dir() else [], ids=str)
def test_sample_urls(expected: dict[str, Any]) -> None:
    event = sample(expected["sample"])
    name = filerepo.file_name(event["title"])
    assert name == expected["file_name"]
    assert hashlib.md5(name.encode()).hexdigest() == expected["md5_of_name"]
    assert filerepo.hash_dirs(name) + "/" == expected["hash_path"]
    base = "https://upload.wikimedia.org"
    assert filerepo.original_url(base, event["wiki"], name) == expected["original_url"]
    assert filerepo.thumb_url(base, event["wiki"], name, 500) == expected["thumb_500_url"]
    assert filerepo.sha1_hex(expected["img_sha1_base36"]) == expected["img_sha1_hex"]
    assert filerepo.sha1_base36(expected["img_sha1_hex"]) == expected["img_sha1_base36"]


@pytest.mark.parametrize(
    ("db_name", "site_lang"),
    [
        ("commonswiki", ("wikipedia", "commons")),
        ("enwiki", ("wikipedia", "en")),
        ("dewiki", ("wikipedia", "de")),
        ("enwiktionary", ("wiktionary", "en")),
        ("zh_min_nanwiki", ("wikipedia", "zh-min-nan")),
        ("zh_min_nanwikisource", ("wikisource", "zh-min-nan")),
        ("frwikisource", ("wikisource", "fr")),
        ("itwikivoyage", ("wikivoyage", "it")),
        ("dewikimedia", ("wikimedia", "de")),
        ("metawiki", ("wikipedia", "meta")),
        ("specieswiki", ("wikipedia", "species")),
        ("testwiki", ("wikipedia", "test")),
        ("be_x_oldwiki", ("wikipedia", "be-x-old")),
    ],
)
def test_site_and_lang(db_name: str, site_lang: tuple[str, str]) -> None:
    assert filerepo.site_and_lang(db_name) == site_lang


@pytest.mark.parametrize(
    "db_name", ["", "wiki", "en", "EnWiki", "en-wiki", "../wiki", "enwik", "1wiki"]
)
def test_unknown_wikis_are_refused(db_name: str) -> None:
    with pytest.raises(ValueError):
        filerepo.site_and_lang(db_name)


@pytest.mark.parametrize(
    ("title", "name"),
    [
        ("File:Foo bar.jpg", "Foo_bar.jpg"),
        ("Datei:Beispiel Übersichtskarte Südufer.svg", "Beispiel_Übersichtskarte_Südufer.svg"),
        ("Fichier:Tour Eiffel.jpg", "Tour_Eiffel.jpg"),
        ("Файл:Москва.png", "Москва.png"),
        ("File:Ratio 16:9 chart.png", "Ratio_16:9_chart.png"),  # only the first colon
        ("File:Already_underscored.gif", "Already_underscored.gif"),
    ],
)
def test_file_name(title: str, name: str) -> None:
    assert filerepo.file_name(title) == name


@pytest.mark.parametrize("title", ["Foo.jpg", ":Foo.jpg", "File:", "File: "])
def test_file_name_needs_a_prefix_and_a_name(title: str) -> None:
    with pytest.raises(ValueError):
        filerepo.file_name(title)


@pytest.mark.parametrize(
    ("name", "thumb"),
    [
        ("Foo.jpg", "500px-Foo.jpg"),
        ("Foo.JPEG", "500px-Foo.JPEG"),
        ("Foo.png", "500px-Foo.png"),
        ("Foo.gif", "500px-Foo.gif"),
        ("Foo.webp", "500px-Foo.webp.png"),
        ("Foo.svg", "500px-Foo.svg.png"),
        ("Foo.tif", "lossy-page1-500px-Foo.tif.jpg"),
        ("Foo.tiff", "lossy-page1-500px-Foo.tiff.jpg"),
        ("Foo.pdf", "page1-500px-Foo.pdf.jpg"),
        ("Foo.djvu", "page1-500px-Foo.djvu.jpg"),
        ("Foo.webm", "500px--Foo.webm.jpg"),
        ("Foo.ogv", "500px--Foo.ogv.jpg"),
    ],
)
def test_thumb_names_per_format(name: str, thumb: str) -> None:
    assert filerepo.thumb_name(name, 500) == thumb


def test_long_names_are_abbreviated_in_thumbnails_only() -> None:
    name = "Ü" * 80 + ".svg"  # 164 bytes in UTF-8 though 84 characters
    assert filerepo.thumb_name(name, 500) == "500px-thumbnail.svg.png"
    at_limit = "a" * 156 + ".jpg"  # exactly 160 bytes: kept
    assert filerepo.thumb_name(at_limit, 330) == f"330px-{at_limit}"
    assert filerepo.thumb_name("b" * 157 + ".tif", 500) == "lossy-page1-500px-thumbnail.tif.jpg"
    url = filerepo.thumb_url("https://u.example", "enwiki", name, 500)
    digest = hashlib.md5(name.encode()).hexdigest()
    assert url.endswith(
        f"/thumb/{digest[0]}/{digest[:2]}/{'%C3%9C' * 80}.svg/500px-thumbnail.svg.png"
    )


def test_only_standard_widths() -> None:
    assert filerepo.thumb_url("https://u.example/", "enwiki", "A.jpg", 960).startswith(
        "https://u.example/wikipedia/en/thumb/"
    )
    with pytest.raises(ValueError):
        filerepo.thumb_url("https://u.example", "enwiki", "A.jpg", 499)


def test_file_types() -> None:
    kinds = {
        n: filerepo.file_type(n).kind
        for n in ("a.JPG", "a.svg", "a.pdf", "a.webm", "a.ogg", "a.stl", "a.xcf", "a")
    }
    assert kinds == {
        "a.JPG": filerepo.Kind.RASTER,
        "a.svg": filerepo.Kind.VECTOR,
        "a.pdf": filerepo.Kind.DOCUMENT,
        "a.webm": filerepo.Kind.VIDEO,
        "a.ogg": filerepo.Kind.UNSCORABLE,  # Ogg audio: .oga/.ogg carry sound
        "a.stl": filerepo.Kind.UNSCORABLE,
        "a.xcf": filerepo.Kind.UNSCORABLE,
        "a": filerepo.Kind.UNSCORABLE,
    }


@pytest.mark.parametrize(
    "raw", ["", "-1", "+abc", "a_b", " abc", "ABC", "z" * 32, "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"]
)
def test_bad_base36_sha1(raw: str) -> None:
    with pytest.raises(ValueError):
        filerepo.sha1_hex(raw)


def test_sha1_round_trip() -> None:
    for data in (b"", b"a", b"\0" * 100):
        hex_digest = hashlib.sha1(data).hexdigest()
        assert filerepo.sha1_hex(filerepo.sha1_base36(hex_digest)) == hex_digest
    assert filerepo.sha1_base36("0" * 39 + "1") == "0" * 30 + "1"


# --- recentchange -----------------------------------------------------------------------------


@needs_samples
def test_samples_are_read_as_expected() -> None:
    outcomes = {
        name: recentchange.read(sample(name))
        for name in (
            "rc-upload-commonswiki.json",
            "rc-overwrite-commonswiki.json",
            "rc-revert-enwiki.json",
            "rc-upload-dewiki.json",
            "rc-canary.json",
            "rc-edit-file-page-not-upload.json",
        )
    }
    assert outcomes["rc-canary.json"] == Skip("canary")
    assert outcomes["rc-edit-file-page-not-upload.json"] == Skip("not_upload")
    for expected in expected_urls():
        upload = outcomes[expected["sample"]]
        assert isinstance(upload, Upload)
        assert upload.file_name == expected["file_name"]
        assert upload.wiki == expected["wiki"]
        assert upload.log_action == expected["log_action"]
        assert upload.sha1_hex == expected["img_sha1_hex"]
    upload = outcomes["rc-upload-commonswiki.json"]
    assert isinstance(upload, Upload)
    assert upload == Upload(
        stream="mediawiki.recentchange",
        wiki="commonswiki",
        title="File:Harbour at dusk, Sample Bay (2026).jpg",
        file_name="Harbour_at_dusk,_Sample_Bay_(2026).jpg",
        log_action="upload",
        domain="commons.wikimedia.org",
        sha1_base36="ehkvclsktajyrqkjspf8nimov1o51cf",
        upload_dt="2026-11-24T09:30:00Z",
        log_id=400000001,
        meta_id="8e02159c-4a91-54af-a1c7-7669f2b242aa",
        request_id="6c2d3d1f-484b-5a45-aa22-5d879f6bbb19",
        uri="https://commons.wikimedia.org/wiki/File:Harbour_at_dusk,_Sample_Bay_(2026).jpg",
        dt="2026-11-24T09:30:01.204Z",
    )
    assert upload.page_title == "File:Harbour_at_dusk,_Sample_Bay_(2026).jpg"


@needs_samples
def test_stream_kind() -> None:
    assert recentchange.stream_kind(sample("rc-upload-commonswiki.json")) == "recentchange"
    assert recentchange.stream_kind(sample("rc-canary.json")) == "recentchange"
    assert recentchange.stream_kind(sample("page-change-create-file.json")) == "page_change"
    by_stream = {"meta": {"stream": "eqiad.mediawiki.recentchange"}}
    assert recentchange.stream_kind(by_stream) == "recentchange"
    assert recentchange.stream_kind({"url": "https://x/y.jpg"}) is None
    assert recentchange.stream_kind({"$schema": "/mediawiki/revision/create/2.0.0"}) is None
    assert recentchange.stream_kind({"meta": "x", "$schema": 7}) is None


@needs_samples
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"type": "edit"}, "not_upload"),
        ({"log_type": "delete"}, "not_upload"),
        ({"log_action": "overwrite-ish"}, "not_upload"),
        ({"namespace": 0}, "not_file_namespace"),
        ({"wiki": "nosuchthing"}, "unknown_wiki"),
        ({"wiki": None}, "malformed"),
        ({"title": "Nameless"}, "malformed"),
        ({"log_params": {"img_sha1": "NOT-BASE-36"}}, "malformed"),
        ({"meta": None}, "malformed"),
        ({"meta": {"domain": "canary", "stream": "mediawiki.recentchange"}}, "canary"),
    ],
)
def test_what_is_not_an_upload(change: dict[str, Any], reason: str) -> None:
    event = sample("rc-upload-commonswiki.json") | change
    assert recentchange.read(event) == Skip(reason)
    assert reason in recentchange.SKIP_REASONS


@needs_samples
def test_upload_without_log_params_has_no_hash() -> None:
    event = sample("rc-overwrite-commonswiki.json")
    del event["log_params"]
    upload = recentchange.read(event)
    assert isinstance(upload, Upload) and upload.sha1_hex is None and upload.upload_dt is None


@needs_samples
def test_page_change_creates_of_file_pages_behind_a_setting() -> None:
    event = sample("page-change-create-file.json")
    assert recentchange.read(event) == Skip("page_change_off")
    upload = recentchange.read(event, page_change=True)
    assert isinstance(upload, Upload)
    assert upload.file_name == "Harbour_at_dusk,_Sample_Bay_(2026).jpg"
    assert upload.wiki == "commonswiki" and upload.page_id == 180000001
    assert upload.sha1_base36 is None and upload.log_action == "upload"
    edit = copy.deepcopy(event) | {"page_change_kind": "edit"}
    assert recentchange.read(edit, page_change=True) == Skip("not_file_create")
    article = copy.deepcopy(event)
    article["page"]["namespace_id"] = 0
    assert recentchange.read(article, page_change=True) == Skip("not_file_namespace")


@pytest.mark.parametrize(
    ("raw", "iso"),
    [
        ("20261124093000", "2026-11-24T09:30:00Z"),
        ("20261324093000", None),
        ("2026", None),
        (None, None),
    ],
)
def test_mw_timestamp(raw: Any, iso: str | None) -> None:
    assert recentchange.mw_timestamp(raw) == iso


# --- the reply event --------------------------------------------------------------------------


def _result(sha1: str, score: float = 0.25) -> dict[str, Any]:
    return {
        "score": score,
        "model": {"name": "open_nsfw", "version": "open_nsfw-abc/onnx-def", "sha256": "0" * 64},
        "preprocessing": "standard",
        "image": {
            "sha1": sha1,
            "sha1_base36": filerepo.sha1_base36(sha1),
            "format": "JPEG",
            "width": 640,
            "height": 480,
            "frames": 1,
            "truncated": False,
        },
        "timing_ms": {"total": 12.5},
    }


@needs_samples
def test_scored_event_validates_and_is_deterministic() -> None:
    upload = recentchange.read(sample("rc-upload-commonswiki.json"))
    assert isinstance(upload, Upload)
    expected = expected_urls()[0]
    rendition = scored.Rendition(expected["original_url"], expected["original_url"])
    delivery = scored.Delivery(
        "partition:3/offset:8", "/kafka#eqiad.mediawiki.recentchange", "dev.knative.kafka.event"
    )
    moment = datetime(2026, 11, 24, 9, 30, 2, 911000, tzinfo=UTC)
    data = scored.scored(
        upload,
        rendition,
        _result(expected["img_sha1_hex"]),
        delivery=delivery,
        image_bytes=1234,
        now=moment,
    )
    assert_valid(data)
    assert data["meta"]["dt"] == "2026-11-24T09:30:02.911Z"
    assert data["dt"] == "2026-11-24T09:30:00Z"
    assert data["image"]["sha1_verified"] is True
    assert data["image"]["sha1"] == data["image"]["fetched_sha1"] == expected["img_sha1_hex"]
    assert data["predicted_classification"] == {
        "model_name": "open_nsfw",
        "model_version": "open_nsfw-abc/onnx-def",
        "predictions": ["sfw"],
        "probabilities": {"nsfw": 0.25, "sfw": 0.75},
    }
    assert scored.subject(upload, data) == expected["img_sha1_hex"]
    # Another cluster's delivery of the same event: same id; another model version: another.
    codfw = scored.Delivery(
        "partition:0/offset:1", "/kafka#codfw.mediawiki.recentchange", "dev.knative.kafka.event"
    )
    again = scored.scored(
        upload, rendition, _result(expected["img_sha1_hex"]), delivery=codfw, image_bytes=1234
    )
    assert again["meta"]["id"] == data["meta"]["id"]
    assert uuid.UUID(data["meta"]["id"]).version == 5
    newer = _result(expected["img_sha1_hex"]) | {"model": {"version": "v2"}}
    assert (
        scored.scored(upload, rendition, newer, delivery=delivery, image_bytes=1)["meta"]["id"]
        != data["meta"]["id"]
    )


@needs_samples
def test_thumbnail_score_is_not_verified() -> None:
    upload = recentchange.read(sample("rc-upload-dewiki.json"))
    assert isinstance(upload, Upload)
    expected = expected_urls()[3]
    rendition = scored.Rendition(expected["thumb_500_url"], expected["original_url"], 500)
    thumb_sha1 = hashlib.sha1(b"thumbnail").hexdigest()
    data = scored.scored(
        upload, rendition, _result(thumb_sha1, 0.9), delivery=scored.Delivery(), image_bytes=9
    )
    assert_valid(data)
    assert data["image"]["variant"] == "thumbnail" and data["image"]["thumb_width"] == 500
    assert data["image"]["sha1"] == expected["img_sha1_hex"]  # the original's, from the event
    assert data["image"]["fetched_sha1"] == thumb_sha1
    assert data["image"]["sha1_verified"] is False
    assert data["predicted_classification"]["predictions"] == ["nsfw"]
    assert data["page"] == {
        "namespace_id": 6,
        "page_title": "Datei:Beispiel_Übersichtskarte_Südufer.svg",
    }


@needs_samples
def test_failed_event_validates() -> None:
    upload = recentchange.read(sample("rc-revert-enwiki.json"))
    assert isinstance(upload, Upload)
    rendition = scored.Rendition(
        expected_urls()[2]["original_url"], expected_urls()[2]["original_url"]
    )
    data = scored.failed(
        upload,
        rendition,
        code="undecodable_image",
        message="broken",
        model_version="v1",
        delivery=scored.Delivery(),
    )
    assert_valid(data)
    ok = scored.scored(
        upload, rendition, _result("1" * 40), delivery=scored.Delivery(), image_bytes=1
    )
    assert data["meta"]["id"] != ok["meta"]["id"]  # a score and a failure are different events
    assert (
        data["meta"]["id"]
        == scored.failed(
            upload,
            rendition,
            code="x",
            message="y",
            model_version="v1",
            delivery=scored.Delivery("other"),
        )["meta"]["id"]
    )
    broken = copy.deepcopy(data)
    broken["error"]["extra"] = 1
    assert list(validator(scored.FAILED_SCHEMA).iter_errors(broken))


def test_schemas_are_draft7_and_name_themselves() -> None:
    for uri in (scored.SCORED_SCHEMA, scored.FAILED_SCHEMA):
        schema = yaml.safe_load(scored.schema_path(uri).read_text())
        jsonschema.Draft7Validator.check_schema(schema)
        assert schema["$id"] == uri


@needs_samples
def test_schema_keeps_lift_wings_predicted_classification_shape() -> None:
    """A consumer of prediction_classification_change reads our predicted_classification."""
    theirs = yaml.safe_load(
        (SCHEMAS / "mediawiki/page/prediction_classification_change/1.1.0.yaml").read_text()
    )
    ours = yaml.safe_load(scored.schema_path(scored.SCORED_SCHEMA).read_text())
    their_pc = theirs["properties"]["predicted_classification"]
    data = {
        "model_name": "open_nsfw",
        "model_version": "v",
        "predictions": ["sfw"],
        "probabilities": {"nsfw": 0.1, "sfw": 0.9},
    }
    jsonschema.Draft7Validator(their_pc).validate(data)
    jsonschema.Draft7Validator(ours["properties"]["predicted_classification"]).validate(data)


# --- settings ---------------------------------------------------------------------------------


def test_upload_settings() -> None:
    settings = Settings.from_env(
        {
            "NSFWOID_UPLOAD_BASE_URL": "http://127.0.0.1:8000/",
            "NSFWOID_THUMB_BASE_URLS": "enwiki=https://thumbs.example, dewiki=http://t.example/x",
            "NSFWOID_THUMB_WIDTH": "960",
        }
    )
    assert settings.upload_base_url == "http://127.0.0.1:8000"
    assert settings.thumb_base_urls == (
        ("enwiki", "https://thumbs.example"),
        ("dewiki", "http://t.example/x"),
    )
    assert settings.thumb_width == 960
    assert (
        Settings().thumb_width == 500
        and Settings().upload_base_url == "https://upload.wikimedia.org"
    )
    for name, value in (
        ("NSFWOID_THUMB_WIDTH", "499"),
        ("NSFWOID_THUMB_WIDTH", "wide"),
        ("NSFWOID_UPLOAD_BASE_URL", "ftp://x"),
        ("NSFWOID_THUMB_BASE_URLS", "https://no-wiki.example"),
    ):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})
