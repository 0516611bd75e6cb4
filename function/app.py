"""The one HTTP function: every request goes through ``App``, then through its front door.

``App`` does what every door shares (see ``function.doors``): the request id, the body read
once (capped, time-bounded, before any scoring slot), admission weighted by the images a
request scores, errors rendered in the door's style, metrics, and one log line per request.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Request, Response

from function.body import read_body
from function.doors import Call, Door, Job, OwnBodyLimit
from function.doors.cloudevents import CloudEventsDoor
from function.doors.kserve import KServeDoor
from function.doors.ops import ALLOW, OpsDoor
from function.doors.plain import PlainDoor
from function.doors.uploads import UploadsDoor
from function.errors import (
    DeadlineExceeded,
    InternalError,
    MethodNotAllowed,
    NotFound,
    NotReady,
    ScoringError,
)
from function.events import is_cloudevent
from function.inputs import prefers_text
from function.logs import log_context, log_request
from function.respond import Style, error_response
from function.service import Service

logger = logging.getLogger("nsfwoid")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(supplied: str) -> str:
    """The caller's X-Request-Id when it is a safe token (it is echoed and logged), else ours."""
    return supplied if _REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex


class App:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.doors: tuple[Door, ...] = (
            KServeDoor(service.settings),  # first: every GET and POST under /v1/ and /v2
            OpsDoor(),
            UploadsDoor(),  # before CloudEvents and plain JSON: it claims only Wikimedia events
            CloudEventsDoor(),
            PlainDoor(service.settings),  # last: it takes any POST the others did not
        )

    def __call__(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        rid = request_id(request.headers.get("X-Request-Id", ""))
        started = time.perf_counter()
        with log_context(request_id=rid) as context:
            job: Job | None = None
            styles = _Styles(request)
            outcome = "ok"
            failure: Exception | None = None
            try:
                job = self._parse(request, path, styles)
                response = self._run(job, Call(self.service, rid, self._deadline(), context))
            except ScoringError as error:
                outcome, failure = error.code, error
                if isinstance(error, DeadlineExceeded):
                    self.service.metrics.rejected.labels("deadline").inc()
                response = error_response(error, rid, styles.current)
                if isinstance(error, MethodNotAllowed):
                    response.headers["Allow"] = ALLOW
            except Exception as bug:  # logged whole (its stack on the line), the caller told little
                outcome, failure = "internal_error", bug
                response = error_response(InternalError("internal error"), rid, styles.current)
            response.headers["X-Request-Id"] = rid
            seconds = time.perf_counter() - started
            kind = job.kind if job is not None else "unknown"
            scoring = request.method == "POST" or (job is not None and job.weight > 0)
            if scoring:
                self._record(kind, outcome, seconds)
            if scoring or (failure is not None and not isinstance(failure, ScoringError)):
                # Scoring requests and bugs get their one line here; any other request gets
                # gunicorn's access line (function.logs).
                log_request(logger, request.environ, response, seconds, error=failure, input=kind)
            return response

    def _parse(self, request: Request, path: str, styles: _Styles) -> Job:
        settings = self.service.settings
        body = b""
        if request.method == "POST":
            body = read_body(request, self._body_limit(path, styles), settings.body_timeout)
        for door in self.doors:
            styles.asking(door)
            job = door.parse(request, path, body, settings)
            if job is not None:
                styles.current = job.style
                return job
        if request.method in ("GET", "HEAD", "POST", "OPTIONS"):
            raise NotFound(f"no such endpoint: {path}")
        raise MethodNotAllowed(f"{request.method} is not supported")

    def _body_limit(self, path: str, styles: _Styles) -> int:
        """The body cap for ``path``: a door's own (its style then renders a 413), else ours."""
        settings = self.service.settings
        for door in self.doors:
            if isinstance(door, OwnBodyLimit):
                limit = door.body_limit(path, settings)
                if limit is not None:
                    styles.asking(door)
                    return limit
        return settings.max_body_bytes

    def _run(self, job: Job, call: Call) -> Response:
        if job.weight == 0:
            return job.run(call)
        service = self.service
        with service.admitted(job.weight):
            if not service.model.ready:
                failed = service.load_error is not None
                raise NotReady(
                    "the model failed to load" if failed else "the model is still loading"
                )
            call.context["input"] = job.kind
            return job.run(call)

    def _deadline(self) -> float:
        return time.monotonic() + self.service.settings.request_deadline

    def _record(self, kind: str, outcome: str, seconds: float) -> None:
        metrics = self.service.metrics
        metrics.requests.labels(kind, outcome).inc()
        metrics.request_seconds.labels(kind).observe(seconds)


class _Styles:
    """How to render an error at each point of a request's life: before a door parsed it,
    a form post (``curl -d url=…``) is told in plain text and other inputs follow ``Accept``;
    then the door's own style while it parses, and the job's once there is one."""

    def __init__(self, request: Request) -> None:
        text = (
            request.method == "POST"
            and not is_cloudevent(dict(request.headers))
            and prefers_text(request)
        )
        self._default: Style = "text" if text else "json"
        self.current: Style = self._default

    def asking(self, door: Door) -> None:
        self.current = self._default if door.style == "json" else door.style
