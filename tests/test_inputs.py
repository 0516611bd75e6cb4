"""``function.inputs``: every accepted content type, Accept negotiation, the preprocessing
choice and batch validation, on Werkzeug requests built here (no model, no server)."""

from __future__ import annotations

import gc
import io
import json
from typing import Any

import pytest
from flask import Flask, Request

from function import inputs
from function.config import Settings
from function.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from function.pipeline import Source

APP = Flask("inputs-test")
SETTINGS = Settings()
URL = "https://upload.example.org/a.jpg"


def parse(
    data: Any = None,
    content_type: str | None = None,
    accept: str | None = None,
    query: str = "",
    settings: Settings = SETTINGS,
    **kwargs: Any,
) -> inputs.ScoreRequest:
    headers = {"Accept": accept} if accept else {}
    with APP.test_request_context(
        "/" + query,
        method="POST",
        data=data,
        content_type=content_type,
        headers=headers,
        **kwargs,
    ) as context:
        request: Request = context.request
        body = (
            b""
            if content_type and content_type.startswith(("multipart", "application/x-www"))
            else request.get_data()
        )
        return inputs.parse(request, body, settings)


def test_form_url_answers_the_bare_float_by_default() -> None:
    parsed = parse({"url": f"  {URL}  "}, inputs.FORM)
    assert parsed.sources == [Source(url=URL)]  # trimmed
    assert (parsed.kind, parsed.batch, parsed.text, parsed.mode) == ("form", False, True, None)


@pytest.mark.parametrize(
    ("accept", "text"),
    [
        (None, True),
        ("*/*", True),
        ("application/json", False),
        ("text/plain", True),
        ("application/json;q=0.5, text/plain", True),
        ("text/plain;q=0.2, application/json", False),
    ],
)
def test_form_follows_accept(accept: str | None, text: bool) -> None:
    assert parse({"url": URL}, inputs.FORM, accept).text is text


def test_form_without_url_is_a_400() -> None:
    with pytest.raises(InvalidRequest, match="url"):
        parse({"url": "  "}, inputs.FORM)
    with pytest.raises(InvalidRequest):
        parse({"other": URL}, inputs.FORM)


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/webp", "application/octet-stream"])
def test_raw_bodies_are_scored_as_bytes_and_answer_json_unless_asked(content_type: str) -> None:
    parsed = parse(b"\xff\xd8bytes", content_type)
    assert parsed.sources == [Source(data=b"\xff\xd8bytes")]
    assert (parsed.kind, parsed.batch, parsed.text) == ("raw", False, False)
    assert parse(b"x", content_type, accept="text/plain").text is True


def test_empty_raw_body_is_a_400() -> None:
    with pytest.raises(InvalidRequest, match="empty"):
        parse(b"", "image/png")


def test_multipart_file_part() -> None:
    parsed = parse({"file": (io.BytesIO(b"GIF89a..."), "a.gif")}, inputs.MULTIPART)
    assert parsed.sources == [Source(data=b"GIF89a...")]
    assert (parsed.kind, parsed.text) == ("multipart", False)


def test_multipart_url_field_and_its_mistakes() -> None:
    parsed = parse({"url": URL}, inputs.MULTIPART, accept="text/plain")
    assert parsed.sources == [Source(url=URL)] and parsed.text is True
    with pytest.raises(InvalidRequest, match="empty"):
        parse({"file": (io.BytesIO(b""), "a.jpg")}, inputs.MULTIPART)
    with pytest.raises(InvalidRequest, match="'file' part or a 'url'"):
        parse({"other": "x"}, inputs.MULTIPART)


# Werkzeug leaves the half-parsed part's spooled file for the garbage collector when the
# body ends mid-part; it is collected here so the warning stays with this test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_malformed_multipart_is_a_400_not_a_500() -> None:
    with pytest.raises(InvalidRequest):
        parse(
            b"--b\r\nContent-Disposition: form-data; name=file; filename=a\r\n\r\nno end",
            "multipart/form-data; boundary=b",
        )
    gc.collect()


def test_json_url_never_answers_text() -> None:
    parsed = parse(json.dumps({"url": URL}), inputs.JSON, accept="text/plain")
    assert parsed.sources == [Source(url=URL)]
    assert (parsed.kind, parsed.batch, parsed.text) == ("json", False, False)
    assert parse(json.dumps({"url": URL}), "application/vnd.x+json").kind == "json"


@pytest.mark.parametrize(
    "body",
    [b"[]", b'"x"', b"{}", b'{"url": 3}', b'{"url": ""}', b"not json", b"\xff\xfe", b""],
)
def test_json_mistakes_are_400s(body: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse(body, inputs.JSON)


def test_batch_of_urls() -> None:
    urls = [f"{URL}?{n}" for n in range(3)]
    parsed = parse(json.dumps({"urls": urls}), inputs.JSON)
    assert parsed.sources == [Source(url=u) for u in urls]
    assert (parsed.kind, parsed.batch, parsed.text) == ("batch", True, False)


@pytest.mark.parametrize("urls", [[], "https://a/b.jpg", [URL, 3], [URL, ""], [None], {"a": URL}])
def test_batch_validation(urls: Any) -> None:
    with pytest.raises(InvalidRequest, match="non-empty list"):
        parse(json.dumps({"urls": urls}), inputs.JSON)


def test_batch_size_is_capped_by_the_settings() -> None:
    small = Settings(max_batch_urls=2)
    assert len(parse(json.dumps({"urls": [URL] * 2}), inputs.JSON, settings=small).sources) == 2
    with pytest.raises(InvalidRequest, match="at most 2"):
        parse(json.dumps({"urls": [URL] * 3}), inputs.JSON, settings=small)


def test_preprocessing_from_the_query_or_the_json_body() -> None:
    assert parse(b"x", "image/jpeg", query="?preprocessing=reference").mode == "reference"
    body = json.dumps({"url": URL, "preprocessing": "reference"})
    assert parse(body, inputs.JSON).mode == "reference"
    # The query wins over the body.
    assert parse(body, inputs.JSON, query="?preprocessing=standard").mode == "standard"
    with pytest.raises(InvalidRequest, match="preprocessing"):
        parse(b"x", "image/jpeg", query="?preprocessing=fancy")
    with pytest.raises(InvalidRequest, match="preprocessing"):
        parse(json.dumps({"url": URL, "preprocessing": "fancy"}), inputs.JSON)


def test_unknown_or_missing_content_type() -> None:
    with pytest.raises(UnsupportedMediaType, match="text/html"):
        parse(b"<html>", "text/html")
    with pytest.raises(InvalidRequest, match="no Content-Type"):
        parse(b"x", None)


def test_a_form_over_the_body_cap_is_a_413() -> None:
    with pytest.raises(PayloadTooLarge):
        with APP.test_request_context(
            "/", method="POST", data={"url": "x" * 5000}, content_type=inputs.FORM
        ) as context:
            context.request.max_content_length = 100
            inputs.parse(context.request, b"", Settings(max_body_bytes=100))


def test_load_json_rejects_deep_nesting_with_a_400() -> None:
    assert inputs.load_json(b"") is None
    with pytest.raises(InvalidRequest):
        inputs.load_json(b"[" * 200_000)
