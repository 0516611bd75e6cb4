"""Responses: results as JSON or a bare float, and the one place errors become HTTP."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Literal

from flask import Response

from function.errors import ScoringError, SourceMissing

Style = Literal["json", "text", "event", "kserve"]
"""How a door's callers want errors: our JSON, a plain-text line (the bare-float form), our
JSON with the event path's retry rules, or KServe's ``{"error": "…"}``."""

EVENT_RETRY_AFTER = 5
"""Seconds before an event whose image is not visible yet is worth delivering again."""

logger = logging.getLogger("nsfwoid")


def json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    body = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    return Response(body, status=status, headers=dict(headers or {}), mimetype="application/json")


def text_response(
    text: str, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(text + "\n", status=status, headers=dict(headers or {}), mimetype="text/plain")


def score_text(score: float) -> str:
    """The bare score, as the old open_nsfw-- service printed it: ``repr`` keeps every digit."""
    return repr(float(score))


def status_of(error: ScoringError, style: Style = "json") -> tuple[int, int | None]:
    """HTTP status and Retry-After seconds of ``error`` for callers of ``style``.

    Knative Eventing retries 404, 409, 429 and every 5xx, and dead-letters other 4xx. On the
    event path a file the image host does not serve *yet* is the upload race, not a mistake:
    it is answered 503 so that delivery retries."""
    if style == "event" and isinstance(error, SourceMissing):
        return 503, EVENT_RETRY_AFTER
    if style == "kserve" and 400 <= error.status < 500 and error.status not in _KSERVE_OWN:
        # KServe answers every fault of the input as its ``InvalidInput``: a 400.
        return 400, error.retry_after
    return error.status, error.retry_after


_KSERVE_OWN = (404, 405, 408, 413)
"""4xx statuses a KServe caller gets as they are: unknown model or endpoint, method, a body
too slow or too large (the HTTP layer's, not the model's, answers)."""


def error_message(error: ScoringError) -> str:
    """What the caller is told: the message, except for 500s (the detail is in the log)."""
    status = error.status
    return error.message if status < 500 or status in (502, 503, 504) else "internal error"


def error_payload(error: ScoringError, request_id: str | None) -> dict[str, Any]:
    return {
        "error": {"code": error.code, "message": error_message(error)},
        "request_id": request_id,
    }


def error_response(error: ScoringError, request_id: str | None, style: Style = "json") -> Response:
    """The only mapping from our error hierarchy to an HTTP response."""
    status, retry_after = status_of(error, style)
    headers = {"X-Request-Id": request_id} if request_id else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if style == "text":
        return text_response(f"error: {error.code}: {error_message(error)}", status, headers)
    if style == "kserve":
        return json_response({"error": error_message(error)}, status, headers)
    return json_response(error_payload(error, request_id), status, headers)
