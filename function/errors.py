"""One small error hierarchy; each class carries its HTTP status and code as data.

``respond.error_response`` is the only place these become HTTP. Messages are safe to show
to the caller; anything internal goes to the log, never into a response body.

Status choices follow Knative Eventing's retry rules (it retries 404, 409, 429 and every 5xx,
and no other 4xx): permanent faults of the input are 4xx, transient faults of the image host
are 502/503/504 so that a just-uploaded file that is not fetchable yet heals by retry.
"""

from __future__ import annotations


class ScoringError(Exception):
    status: int = 500
    code: str = "internal_error"
    retry_after: int | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if retry_after is not None:
            self.retry_after = retry_after


class InvalidRequest(ScoringError, ValueError):
    status, code = 400, "invalid_request"


class NotFound(ScoringError, LookupError):
    status, code = 404, "not_found"


class MethodNotAllowed(ScoringError):
    status, code = 405, "method_not_allowed"


class RequestTimeout(ScoringError, TimeoutError):
    """The caller did not send its whole body in time."""

    status, code = 408, "request_timeout"


class PayloadTooLarge(ScoringError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ScoringError, ValueError):
    status, code = 415, "unsupported_media_type"


class UndecodableImage(ScoringError, ValueError):
    status, code = 422, "undecodable_image"


class ImageTooLarge(UndecodableImage):
    code = "image_too_large"


class SourceNotAllowed(ScoringError, ValueError):
    """Refused before any connection: scheme, userinfo, host not allowed, private address."""

    status, code = 422, "source_not_allowed"


class SourceTooLarge(ScoringError):
    status, code = 422, "source_too_large"


class TooManyRedirects(ScoringError):
    status, code = 422, "too_many_redirects"


class SourceMissing(ScoringError):
    """The image host has no such file (404/410) or refuses it (403, code ``source_forbidden``).

    A caller's mistyped URL on plain HTTP; on the event path a just-uploaded file may not be
    visible yet, so the event door answers it as retryable (``respond``)."""

    status, code = 422, "source_not_found"


class SourceUnavailable(ScoringError):
    """The image host failed or is overloaded: retryable on purpose."""

    status, code, retry_after = 502, "source_unavailable", 5


class SourceTimeout(ScoringError, TimeoutError):
    status, code, retry_after = 504, "source_timeout", 5


class Overloaded(ScoringError):
    status, code, retry_after = 503, "overloaded", 1


class NotReady(ScoringError):
    status, code, retry_after = 503, "not_ready", 1


class DeadlineExceeded(ScoringError, TimeoutError):
    status, code, retry_after = 504, "deadline_exceeded", 1


class InternalError(ScoringError):
    """A bug or a model failure. The message shown to callers stays generic."""

    status, code = 500, "internal_error"
