"""Request dispatch: operations endpoints, scoring, and CloudEvents, on one HTTP function."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from flask import Request, Response
from werkzeug.exceptions import RequestEntityTooLarge

from function import events, inputs
from function.doors.kserve import KServeDoor, is_kserve_path
from function.errors import (
    DeadlineExceeded,
    InternalError,
    MethodNotAllowed,
    NotFound,
    NotReady,
    PayloadTooLarge,
    ScoringError,
)
from function.logs import log, log_context
from function.pipeline import Source
from function.respond import (
    error_payload,
    error_response,
    json_response,
    kserve_error_response,
    score_text,
    text_response,
)
from function.service import Service

logger = logging.getLogger("nsfwoid")
SPEC = Path(__file__).with_name("openapi.yaml")


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _request_id(supplied: str) -> str:
    """The caller's X-Request-Id when it is a safe token (it is echoed and logged), else ours."""
    return supplied if _REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex


class Router:
    def __init__(self, service: Service) -> None:
        self.service = service
        self._spec_yaml = SPEC.read_text()
        self._spec_json: str | None = None
        # A batch's URLs are fetched and decoded side by side; inference still batches.
        self._batch_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="nsfwoid-batch")
        self.kserve = KServeDoor(service)

    def __call__(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        if request.method in ("GET", "HEAD"):
            return self._get(path, request)
        if request.method == "POST":
            return self._post(request, path)
        if request.method == "OPTIONS":
            return Response(status=204, headers={"Allow": "GET, HEAD, POST, OPTIONS"})
        response = error_response(MethodNotAllowed(f"{request.method} is not supported"), None)
        response.headers["Allow"] = "GET, HEAD, POST, OPTIONS"
        return response

    # --- operations -------------------------------------------------------------------
    def _get(self, path: str, request: Request) -> Response:
        service = self.service
        if path == "/healthz":
            return json_response({"status": "ok"})
        if path == "/readyz":
            if service.ready:
                return json_response(
                    {
                        "status": "ready",
                        "model": service.model.info and service.model.info.as_dict(),
                    }
                )
            reason = (
                "draining"
                if service.draining
                else "model failed to load"
                if service.load_error
                else "loading"
            )
            return json_response(
                {"status": "not_ready", "reason": reason}, 503, {"Retry-After": "1"}
            )
        if path == "/metrics":
            body, content_type = service.metrics.render(request.headers.get("Accept", ""))
            return Response(body, status=200, content_type=content_type)
        if path in ("/openapi.yaml", "/openapi.yml"):
            return Response(self._spec_yaml, status=200, mimetype="application/yaml")
        if path == "/openapi.json":
            return Response(self._openapi_json(), status=200, mimetype="application/json")
        if is_kserve_path(path):
            answer = self.kserve.get(path)
            if answer is None:
                return kserve_error_response(NotFound(f"no such endpoint: {path}"), None)
            return answer
        if path == "/" and "spec" in request.args:  # where service-checker looks for it
            return Response(self._openapi_json(), status=200, mimetype="application/json")
        if path == "/":
            return json_response(
                {
                    "service": "nsfwoid",
                    "score": "POST / (see /openapi.json)",
                    "health": "/healthz",
                    "ready": "/readyz",
                    "metrics": "/metrics",
                }
            )
        return error_response(NotFound(f"no such endpoint: {path}"), None)

    def _openapi_json(self) -> str:
        if self._spec_json is None:
            self._spec_json = json.dumps(yaml.safe_load(self._spec_yaml))
        return self._spec_json

    # --- scoring ----------------------------------------------------------------------
    def _post(self, request: Request, path: str) -> Response:
        service = self.service
        request_id = _request_id(request.headers.get("X-Request-Id", ""))
        started = time.perf_counter()
        kserve = is_kserve_path(path)
        is_event = not kserve and events.is_cloudevent(dict(request.headers))
        kind = "kserve_" + path[1:3] if kserve else "event" if is_event else "unknown"
        # Decided before parsing, so that a form without a url is told so in plain text too.
        text = not is_event and not kserve and inputs.prefers_text(request)
        with log_context(request_id=request_id) as context:
            outcome = "ok"
            try:
                with service.admitted():
                    if not service.model.ready:
                        failed = service.load_error is not None
                        raise NotReady(
                            "the model failed to load" if failed else "the model is still loading"
                        )
                    deadline = time.monotonic() + service.settings.request_deadline
                    if kserve:
                        context["input"] = kind
                        response = self.kserve.post(path, request, request_id, deadline, context)
                    elif is_event:
                        response = self._event(request, request_id, deadline, context)
                    else:
                        parsed = inputs.parse(request, service.settings)
                        kind, text = parsed.kind, parsed.text
                        context["input"] = kind
                        response = self._score(parsed, request_id, deadline, context)
            except ScoringError as error:
                outcome = error.code
                response = self._error(error, request_id, text, kserve)
            except Exception:  # a bug: log it whole, tell the caller little
                outcome = "internal_error"
                logger.exception("unhandled error while scoring")
                response = self._error(InternalError("internal error"), request_id, text, kserve)
            duration = time.perf_counter() - started
            service.metrics.requests.labels(kind, outcome).inc()
            service.metrics.request_seconds.labels(kind).observe(duration)
            response.headers["X-Request-Id"] = request_id
            log(
                logger,
                logging.INFO if response.status_code < 500 else logging.WARNING,
                "scored" if outcome == "ok" else "request failed",
                input=kind,
                outcome=outcome,
                status=response.status_code,
                duration_ms=round(duration * 1000, 3),
            )
            return response

    def _error(self, error: ScoringError, request_id: str, text: bool, kserve: bool) -> Response:
        if isinstance(error, DeadlineExceeded):
            self.service.metrics.rejected.labels("deadline").inc()
        if kserve:
            return kserve_error_response(error, request_id)
        return error_response(error, request_id, text=text)

    def _score_one(
        self, source: Source, mode: str | None, deadline: float, context: dict[str, Any]
    ) -> dict[str, Any]:
        return self.service.pipeline.score(
            source, mode=mode, deadline=deadline, notes=context.__setitem__
        )

    def _score(
        self, parsed: inputs.ScoreRequest, request_id: str, deadline: float, context: dict[str, Any]
    ) -> Response:
        if not parsed.batch:
            result = self._score_one(parsed.sources[0], parsed.mode, deadline, context)
            context["score"] = result["score"]
            if parsed.text:
                return text_response(score_text(result["score"]))
            return json_response(result | {"request_id": request_id})

        def one(source: Source) -> dict[str, Any]:
            try:
                return self._score_one(source, parsed.mode, deadline, {}) | {"url": source.url}
            except ScoringError as error:
                return error_payload(error, None) | {"url": source.url, "status": error.status}

        results = list(self._batch_pool.map(one, parsed.sources))
        return json_response({"results": results, "request_id": request_id})

    # --- CloudEvents ------------------------------------------------------------------
    def _event(
        self, request: Request, request_id: str, deadline: float, context: dict[str, Any]
    ) -> Response:
        service = self.service
        limit = service.settings.max_body_bytes
        if (request.content_length or 0) > limit:
            raise PayloadTooLarge(f"the event is larger than {limit} bytes")
        # One byte past the cap: werkzeug cuts a chunked body *at* its limit without an error.
        request.max_content_length = limit + 1
        try:
            # Cached, so functions-framework's after-request read finds nothing left to read
            # (past the cap, that read raises: a 500).
            body = request.get_data(cache=True)
        except RequestEntityTooLarge as exc:
            request._cached_data = b""
            raise PayloadTooLarge(f"the event is larger than {limit} bytes") from exc
        if len(body) > limit:
            raise PayloadTooLarge(f"the event is larger than {limit} bytes")
        event = events.parse(dict(request.headers), body)
        context.update(
            event_id=event.id, event_source=event.source, event_type=event.type, input="event"
        )
        cached = service.event_cache.get(event.key)
        if cached is not None:
            service.metrics.event_duplicates.inc()
            context["duplicate"] = True
            if isinstance(cached, ScoringError):
                raise cached  # the same permanent answer, logged and counted as that error
            headers, payload = cached
            return Response(payload, status=200, headers=headers)
        counter = service.metrics.event(event.type, event.source, "ok")
        try:
            result = self._score_one(event.image, event.mode, deadline, context)
        except ScoringError as error:
            service.metrics.event(event.type, event.source, error.code).inc(
                exemplar={"event_id": event.id[:64]}
            )
            if error.status < 500:  # permanent: a repeat must get the same answer
                service.event_cache.put(event.key, error)
            raise
        counter.inc(exemplar={"event_id": event.id[:64]})
        context["score"] = result["score"]
        headers, payload = events.reply(event, result, service.settings)
        service.event_cache.put(event.key, (headers, payload))
        return Response(payload, status=200, headers=headers)
