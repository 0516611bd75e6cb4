"""Responses: results as JSON or a bare float, and the one place errors become HTTP."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from flask import Response

from function.errors import ScoringError

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


def error_payload(error: ScoringError, request_id: str | None) -> dict[str, Any]:
    message = (
        error.message
        if error.status < 500 or error.status in (502, 503, 504)
        else (
            "internal error"  # 500s say little; the detail is in the log under this request id
        )
    )
    return {"error": {"code": error.code, "message": message}, "request_id": request_id}


def error_headers(error: ScoringError, request_id: str | None) -> dict[str, str]:
    headers = {"X-Request-Id": request_id} if request_id else {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    return headers


def error_response(error: ScoringError, request_id: str | None, *, text: bool = False) -> Response:
    """The only mapping from our error hierarchy to an HTTP response."""
    headers = error_headers(error, request_id)
    if text:
        body = error_payload(error, request_id)["error"]
        return text_response(f"error: {body['code']}: {body['message']}", error.status, headers)
    return json_response(error_payload(error, request_id), error.status, headers)


def kserve_status(error: ScoringError) -> int:
    """KServe's statuses: every fault of the input is its ``InvalidInput`` (400); an unknown
    model 404; a body over the cap stays 413; our transient 5xx keep their status (and
    ``Retry-After``), which a KServe client reads as retryable as it would KServe's 503."""
    if error.status in (404, 405, 413) or error.status >= 500:
        return error.status
    return 400


def kserve_error_response(error: ScoringError, request_id: str | None) -> Response:
    """KServe's error body, ``{"error": "<message>"}`` (500s say as little as ours do)."""
    message = error_payload(error, request_id)["error"]["message"]
    return json_response({"error": message}, kserve_status(error), error_headers(error, request_id))
