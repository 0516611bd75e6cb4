"""An HTTP request (not a CloudEvent) → what to score and how to answer.

Accepted on ``POST``: a form with ``url`` (answered with the bare score, as the old service
did), multipart with a ``file`` part or a ``url`` field, JSON ``{"url"}`` / ``{"urls": [...]}``,
and a raw ``image/*`` or ``application/octet-stream`` body, already read (capped and
time-bounded) by ``function.body``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flask import Request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from function.config import PREPROCESSING_MODES, Settings
from function.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from function.pipeline import Source

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
JSON = "application/json"
RAW = ("application/octet-stream",)


@dataclass(frozen=True)
class ScoreRequest:
    sources: list[Source]
    kind: str  # metrics label: form | multipart | json | batch | raw
    batch: bool
    text: bool
    mode: str | None


def wants_text(request: Request, *, default: bool) -> bool:
    """Bare float or JSON? Follow ``Accept`` when it prefers one; ``*/*`` keeps the default."""
    accept = request.accept_mimetypes
    json_q, text_q = accept["application/json"], accept["text/plain"]
    return default if json_q == text_q else text_q > json_q


def prefers_text(request: Request) -> bool:
    """Bare float answers: the form's default (the old service's ``curl -d url=…``); the other
    single-image forms when ``Accept`` prefers ``text/plain``; JSON bodies never."""
    content_type = (request.mimetype or "").lower()
    if content_type == JSON or content_type.endswith("+json"):
        return False
    return wants_text(request, default=content_type == FORM)


def parse(request: Request, body: bytes, settings: Settings) -> ScoreRequest:
    """What to score, from a request whose ``body`` was already read (``function.body``)."""
    mode = request.args.get("preprocessing")
    if mode is not None and mode not in PREPROCESSING_MODES:
        raise InvalidRequest(f"preprocessing must be one of {', '.join(PREPROCESSING_MODES)}")
    content_type = (request.mimetype or "").lower()
    try:
        if content_type == FORM:
            url = request.form.get("url", "").strip()
            if not url:
                raise InvalidRequest("the form needs a 'url' field")
            return ScoreRequest([Source(url=url)], "form", False, prefers_text(request), mode)
        if content_type == MULTIPART:
            return _multipart(request, mode)
        if content_type == JSON or content_type.endswith("+json"):
            return _json(body, settings, mode)
        if content_type.startswith("image/") or content_type in RAW:
            if not body:
                raise InvalidRequest("the request body is empty: send the image bytes")
            return ScoreRequest([Source(data=body)], "raw", False, prefers_text(request), mode)
    except RequestEntityTooLarge as exc:
        raise PayloadTooLarge(
            f"the request body is larger than {settings.max_body_bytes} bytes"
        ) from exc
    except HTTPException as exc:  # werkzeug's parsers: malformed multipart and the like
        raise InvalidRequest("the request body could not be parsed") from exc
    if not content_type:
        raise InvalidRequest(
            "no Content-Type: send a form with url=, JSON, multipart or an image body"
        )
    raise UnsupportedMediaType(f"Content-Type {content_type} is not accepted")


def load_json(body: bytes) -> Any:
    """Parsed JSON, or a 400 for anything that is not (deep nesting included)."""
    try:
        return json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: ``[[[[…`` a few hundred KB deep exhausts the parser's stack.
        raise InvalidRequest("the body is not valid JSON") from exc


def _multipart(request: Request, mode: str | None) -> ScoreRequest:
    upload = request.files.get("file")
    if upload is not None:
        data = upload.read()
        if not data:
            raise InvalidRequest("the 'file' part is empty")
        return ScoreRequest([Source(data=data)], "multipart", False, prefers_text(request), mode)
    url = request.form.get("url", "").strip()
    if url:
        return ScoreRequest([Source(url=url)], "multipart", False, prefers_text(request), mode)
    raise InvalidRequest("multipart requests need a 'file' part or a 'url' field")


def _json(body: bytes, settings: Settings, mode: str | None) -> ScoreRequest:
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise InvalidRequest('the JSON body must be an object: {"url": ...} or {"urls": [...]}')
    body_mode = payload.get("preprocessing")
    if body_mode is not None and body_mode not in PREPROCESSING_MODES:
        raise InvalidRequest(f"preprocessing must be one of {', '.join(PREPROCESSING_MODES)}")
    mode = mode or body_mode
    if "urls" in payload:
        urls = payload["urls"]
        if (
            not isinstance(urls, list)
            or not urls
            or not all(isinstance(u, str) and u for u in urls)
        ):
            raise InvalidRequest("'urls' must be a non-empty list of URL strings")
        if len(urls) > settings.max_batch_urls:
            raise InvalidRequest(f"at most {settings.max_batch_urls} URLs per request")
        return ScoreRequest([Source(url=u) for u in urls], "batch", True, False, mode)
    url = payload.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidRequest('the JSON body needs a "url" string (or "urls": [...])')
    return ScoreRequest([Source(url=url)], "json", False, False, mode)
