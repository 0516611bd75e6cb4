"""The KServe front door: its v1 and v2 (Open Inference Protocol) REST endpoints, on the same
port and over the same pipeline as every other door, so a score is the same number here.

Protocol shapes live in ``function/kserve_protocol.py``; this door routes, parses the body
read by the app, scores each image through ``service.pipeline`` and has its errors rendered
in KServe's shape (``Style`` ``"kserve"``). Every path under ``/v1/`` and ``/v2`` is its own.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property

from flask import Request, Response

from function import kserve_protocol as protocol
from function.config import PREPROCESSING_MODES, Settings
from function.doors import Call, Job
from function.errors import InvalidRequest, MethodNotAllowed, NotFound, ScoringError
from function.pipeline import Source
from function.respond import Style, json_response

SERVER_VERSION = "1.0.0"

_V1_MODEL = re.compile(r"/v1/models/([^/:]+)")
_V1_PREDICT = re.compile(r"/v1/models/([^/:]+):predict")
_V2_MODEL = re.compile(r"/v2/models/([^/]+)")
_V2_MODEL_READY = re.compile(r"/v2/models/([^/]+)/ready")
_V2_INFER = re.compile(r"/v2/models/([^/]+)/infer")


def is_kserve_path(path: str) -> bool:
    return path == "/v2" or path.startswith(("/v1/", "/v2/"))


class KServeDoor:
    name = "kserve"
    style: Style = "kserve"

    def __init__(self, settings: Settings) -> None:
        self._pool_size = settings.max_in_flight

    @cached_property
    def _pool(self) -> ThreadPoolExecutor:
        # Admission takes one slot per image, so this pool never holds more than it lets in.
        return ThreadPoolExecutor(self._pool_size, thread_name_prefix="nsfwoid-kserve")

    def body_limit(self, path: str, settings: Settings) -> int | None:
        """Images travel as base64, a third larger than their bytes: room for one image at
        the byte cap plus the JSON around it (several images share that room)."""
        return protocol.body_cap(settings.max_body_bytes) if is_kserve_path(path) else None

    def parse(self, request: Request, path: str, body: bytes, settings: Settings) -> Job | None:
        if not is_kserve_path(path):
            return None
        if request.method in ("GET", "HEAD"):
            return Job("kserve", self._get(path), weight=0, style=self.style)
        if request.method == "OPTIONS":
            return None  # the ops door's answer, as on every path
        if request.method != "POST":
            raise MethodNotAllowed(f"{request.method} is not supported")
        predict, infer = _V1_PREDICT.fullmatch(path), _V2_INFER.fullmatch(path)
        match = predict or infer
        if match is None:
            raise NotFound(f"no such endpoint: POST {path}")
        protocol.check_model(match.group(1))
        mode = request.args.get("preprocessing")
        if mode is not None and mode not in PREPROCESSING_MODES:
            raise InvalidRequest(f"preprocessing must be one of {', '.join(PREPROCESSING_MODES)}")
        limits = {
            "max_instances": settings.max_batch_urls,
            "max_image_bytes": settings.max_body_bytes,
        }
        if predict:
            images = protocol.parse_v1(body, **limits)

            def v1(call: Call) -> Response:
                scores = self._scores(images, mode, call, "instances[{}]")
                return json_response(protocol.render_v1(scores))

            return Job("kserve_v1", v1, weight=len(images), style=self.style)
        parsed = protocol.parse_v2(body, **limits)

        def v2(call: Call) -> Response:
            scores = self._scores(parsed.images, mode, call, "inputs[0].data[{}]")
            info = call.service.model.info
            rendered = protocol.render_v2(
                scores,
                request_id=parsed.id if parsed.id is not None else call.request_id,
                model_version=info.version if info else None,
            )
            return json_response(rendered)

        return Job("kserve_v2", v2, weight=len(parsed.images), style=self.style)

    # --- GET: health and metadata -------------------------------------------------------
    def _get(self, path: str) -> Callable[[Call], Response]:
        """The handler of ``GET path`` (raises ``NotFound`` for an unknown one)."""
        fixed: dict[str, Callable[[Call], Response]] = {
            "/v1/models": lambda call: json_response({"models": [protocol.MODEL_NAME]}),
            "/v2": lambda call: json_response(protocol.server_metadata(SERVER_VERSION)),
            "/v2/health/live": lambda call: json_response({"live": True}),
            "/v2/health/ready": _server_ready,
        }
        if path in fixed:
            return fixed[path]
        for pattern, handler in (
            (_V1_MODEL, _model_ready),
            (_V2_MODEL_READY, _model_ready),
            (_V2_MODEL, _model_metadata),
        ):
            match = pattern.fullmatch(path)
            if match:
                protocol.check_model(match.group(1))
                return handler
        raise NotFound(f"no such endpoint: {path}")

    def _scores(self, images: list[bytes], mode: str | None, call: Call, where: str) -> list[float]:
        """Every image's score, in order. The first image that fails fails the request, named
        in the message: KServe answers a predict whole or not at all."""
        pipeline = call.service.pipeline

        def one(data: bytes) -> float:
            result = pipeline.score(Source(data=data), mode=mode, deadline=call.deadline)
            return float(result["score"])

        # Each image runs in a copy of this request's context, so its log lines carry its id.
        futures = [self._pool.submit(contextvars.copy_context().run, one, data) for data in images]
        scores: list[float] = []
        for index, future in enumerate(futures):
            try:
                scores.append(future.result())
            except ScoringError as error:
                for rest in futures[index + 1 :]:
                    rest.cancel()
                raise _at(error, where.format(index)) from error
        call.note("instances", len(scores))
        return scores


def _unready(message: str) -> Response:
    return json_response({"error": message}, 503, {"Retry-After": "1"})


def _server_ready(call: Call) -> Response:
    if call.service.ready:
        return json_response({"ready": True})
    return _unready("Server is not ready.")


def _model_ready(call: Call) -> Response:
    if not call.service.ready:
        return _unready(f"Model with name {protocol.MODEL_NAME} is not ready.")
    return json_response({"name": protocol.MODEL_NAME, "ready": True})


def _model_metadata(call: Call) -> Response:
    info = call.service.model.info
    return json_response(
        protocol.model_metadata(
            version=info.version if info else None, runtime=call.service.settings.runtime
        )
    )


def _at(error: ScoringError, where: str) -> ScoringError:
    """The same error, its message naming the image."""
    copy: Callable[..., ScoringError] = type(error)
    return copy(
        f"{where}: {error.message}",
        code=error.code,
        status=error.status,
        retry_after=error.retry_after,
    )
