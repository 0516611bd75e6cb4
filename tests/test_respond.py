"""``function.respond``: the one mapping from the error hierarchy to HTTP, in every style."""

from __future__ import annotations

import json
import math

import pytest

from function import errors
from function.errors import ScoringError
from function.respond import (
    EVENT_RETRY_AFTER,
    Style,
    error_message,
    error_response,
    json_response,
    score_text,
    status_of,
    text_response,
)

ALL_ERRORS: list[type[ScoringError]] = [
    cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, ScoringError)
]


def test_every_error_class_is_covered() -> None:
    assert errors.ScoringError in ALL_ERRORS and errors.FileNotReady in ALL_ERRORS
    assert len(ALL_ERRORS) >= 18


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda cls: cls.__name__)
def test_json_style_carries_status_code_retry_after_and_request_id(
    cls: type[ScoringError],
) -> None:
    error = cls("the detail")
    response = error_response(error, "req-1")
    assert response.status_code == cls.status
    assert response.mimetype == "application/json"
    assert response.headers["X-Request-Id"] == "req-1"
    payload = json.loads(response.get_data())
    assert payload["error"]["code"] == cls.code
    assert payload["request_id"] == "req-1"
    if cls.retry_after is None:
        assert "Retry-After" not in response.headers
    else:
        assert response.headers["Retry-After"] == str(cls.retry_after)
    hidden = cls.status >= 500 and cls.status not in (502, 503, 504)
    assert payload["error"]["message"] == ("internal error" if hidden else "the detail")


def test_caller_mistakes_are_4xx_and_retryable_faults_say_when() -> None:
    for cls in (
        errors.InvalidRequest,
        errors.UnsupportedMediaType,
        errors.UndecodableImage,
        errors.ImageTooLarge,
        errors.SourceNotAllowed,
        errors.SourceTooLarge,
        errors.PayloadTooLarge,
    ):
        assert 400 <= status_of(cls("x"))[0] < 500, cls
    for retryable in (errors.SourceUnavailable, errors.SourceTimeout, errors.Overloaded):
        status, retry_after = status_of(retryable("x"))
        assert status in (502, 503, 504) and retry_after is not None and retry_after >= 1


def test_500_messages_are_hidden_in_every_style() -> None:
    secret = "Traceback: /srv/secret/path line 12"
    error = errors.InternalError(secret)
    assert error_message(error) == "internal error"
    styles: tuple[Style, ...] = ("json", "text", "event", "kserve")
    for style in styles:
        response = error_response(error, "r", style)
        assert response.status_code == 500
        assert secret not in response.get_data(as_text=True)
    # A 5xx that is the source's fault keeps its message: it tells the caller what to fix.
    assert error_message(errors.SourceUnavailable("the host said 503")) == "the host said 503"


def test_a_custom_status_on_the_base_class_is_honoured() -> None:
    error = ScoringError("boom", code="odd", status=418, retry_after=7)
    response = error_response(error, None)
    assert response.status_code == 418 and response.headers["Retry-After"] == "7"
    assert "X-Request-Id" not in response.headers  # no id, no header
    assert json.loads(response.get_data())["request_id"] is None


def test_event_style_retries_a_missing_file() -> None:
    missing = errors.SourceMissing("the file is not there (yet)")
    assert status_of(missing, "json") == (422, None)  # a plain caller's mistake
    assert status_of(missing, "event") == (503, EVENT_RETRY_AFTER)  # the upload race: retry
    response = error_response(missing, "ev-1", "event")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(EVENT_RETRY_AFTER)
    assert json.loads(response.get_data())["error"]["code"] == "source_not_found"
    # Other caller mistakes on the event path stay 4xx, so Knative dead-letters them.
    assert status_of(errors.UndecodableImage("x"), "event") == (422, None)
    assert status_of(errors.SourceTimeout("x"), "event") == (504, 5)


def test_text_style_is_one_plain_line() -> None:
    response = error_response(errors.UndecodableImage("not an image"), "t-1", "text")
    assert response.status_code == 422 and response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == "error: undecodable_image: not an image\n"
    assert response.headers["X-Request-Id"] == "t-1"


def test_kserve_style_is_a_bare_error_string() -> None:
    response = error_response(errors.InvalidRequest("bad tensor"), "k-1", "kserve")
    assert response.status_code == 400
    assert json.loads(response.get_data()) == {"error": "bad tensor"}


def test_score_text_keeps_every_digit() -> None:
    value = 0.123456789012345678
    assert float(score_text(value)) == value
    assert score_text(1) == "1.0"


def test_json_response_refuses_nan_and_is_compact() -> None:
    response = json_response({"a": [1, 2]}, 201, {"X-A": "b"})
    assert response.get_data() == b'{"a":[1,2]}' and response.status_code == 201
    assert response.headers["X-A"] == "b"
    with pytest.raises(ValueError):
        json_response({"score": math.nan})
    assert text_response("0.5").get_data() == b"0.5\n"
