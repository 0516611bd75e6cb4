"""The KServe front door: its v1 and v2 (Open Inference Protocol) REST endpoints, on the same
port and over the same pipeline as every other door, so a score is the same number here.

Protocol shapes live in ``function/kserve_protocol.py``; this module routes, reads the body,
scores each image through ``service.pipeline`` and answers in KServe's error shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Request, Response
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from function import kserve_protocol as protocol
from function.config import PREPROCESSING_MODES
from function.errors import InvalidRequest, NotFound, NotReady, PayloadTooLarge, ScoringError
from function.pipeline import Source
from function.respond import json_response, kserve_error_response
from function.service import Service

SERVER_VERSION = "1.0.0"

_V1_MODEL = re.compile(r"/v1/models/([^/:]+)")
_V1_PREDICT = re.compile(r"/v1/models/([^/:]+):predict")
_V2_MODEL = re.compile(r"/v2/models/([^/]+)")
_V2_MODEL_READY = re.compile(r"/v2/models/([^/]+)/ready")
_V2_INFER = re.compile(r"/v2/models/([^/]+)/infer")

PREFIXES = ("/v1/", "/v2/")


def is_kserve_path(path: str) -> bool:
    """Every path under ``/v1/`` and ``/v2`` belongs to this door (``POST`` elsewhere scores)."""
    return path == "/v2" or path.startswith(PREFIXES)


class KServeDoor:
    def __init__(self, service: Service) -> None:
        self.service = service
        # Several instances of one request are decoded side by side; inference still batches.
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="nsfwoid-kserve")

    # --- GET: health and metadata -------------------------------------------------------
    def get(self, path: str) -> Response | None:
        """The answer to ``GET path``, or None when the path is not one of this door's."""
        service = self.service
        if path == "/v1/models":
            return json_response({"models": [protocol.MODEL_NAME]})
        if path == "/v2":
            return json_response(protocol.server_metadata(SERVER_VERSION))
        if path == "/v2/health/live":
            return json_response({"live": True})
        if path == "/v2/health/ready":
            if service.ready:
                return json_response({"ready": True})
            return self._unready("Server is not ready.")
        for pattern, answer in (
            (_V1_MODEL, self._model_ready),
            (_V2_MODEL_READY, self._model_ready),
            (_V2_MODEL, self._model_metadata),
        ):
            match = pattern.fullmatch(path)
            if match:
                try:
                    protocol.check_model(match.group(1))
                except NotFound as error:
                    return kserve_error_response(error, None)
                return answer()
        return None

    def _unready(self, message: str) -> Response:
        return json_response({"error": message}, 503, {"Retry-After": "1"})

    def _model_ready(self) -> Response:
        if not self.service.ready:
            return self._unready(f"Model with name {protocol.MODEL_NAME} is not ready.")
        return json_response({"name": protocol.MODEL_NAME, "ready": True})

    def _model_metadata(self) -> Response:
        info = self.service.model.info
        return json_response(
            protocol.model_metadata(
                version=info.version if info else None, runtime=self.service.settings.runtime
            )
        )

    # --- POST: predict and infer --------------------------------------------------------
    def post(
        self,
        path: str,
        request: Request,
        request_id: str,
        deadline: float,
        context: dict[str, Any],
    ) -> Response:
        """Score a v1 predict or a v2 infer request (raises ``ScoringError`` on a fault)."""
        settings = self.service.settings
        limits = {
            "max_instances": settings.max_batch_urls,
            "max_image_bytes": settings.max_body_bytes,
        }
        predict, infer = _V1_PREDICT.fullmatch(path), _V2_INFER.fullmatch(path)
        if not (predict or infer):
            raise NotFound(f"no such endpoint: POST {path}")
        protocol.check_model((predict or infer).group(1))  # type: ignore[union-attr]
        mode = request.args.get("preprocessing")
        if mode is not None and mode not in PREPROCESSING_MODES:
            raise InvalidRequest(f"preprocessing must be one of {', '.join(PREPROCESSING_MODES)}")
        body = read_body(request, protocol.body_cap(settings.max_body_bytes))
        if not self.service.model.ready:
            raise NotReady(f"Model with name {protocol.MODEL_NAME} is not ready.")
        if predict:
            images = protocol.parse_v1(body, **limits)
            context["instances"] = len(images)
            scores = self._scores(images, mode, deadline, "instances[{}]")
            return json_response(protocol.render_v1(scores))
        parsed = protocol.parse_v2(body, **limits)
        context["instances"] = len(parsed.images)
        scores = self._scores(parsed.images, mode, deadline, "inputs[0].data[{}]")
        info = self.service.model.info
        return json_response(
            protocol.render_v2(
                scores,
                request_id=parsed.id if parsed.id is not None else request_id,
                model_version=info.version if info else None,
            )
        )

    def _scores(
        self, images: list[bytes], mode: str | None, deadline: float, where: str
    ) -> list[float]:
        """Every image's score, in order; the first failing image fails the request, its
        index named in the message (KServe answers a predict whole, or not at all)."""
        pipeline = self.service.pipeline

        def one(data: bytes) -> float:
            return float(pipeline.score(Source(data=data), mode=mode, deadline=deadline)["score"])

        futures = [self._pool.submit(one, data) for data in images]
        scores: list[float] = []
        for index, future in enumerate(futures):
            try:
                scores.append(future.result())
            except ScoringError as error:
                for rest in futures[index + 1 :]:
                    rest.cancel()
                raise _at(error, where.format(index)) from error
        return scores


def _at(error: ScoringError, where: str) -> ScoringError:
    """The same error, its message naming the image."""
    copy: Callable[..., ScoringError] = type(error)
    return copy(
        f"{where}: {error.message}",
        code=error.code,
        status=error.status,
        retry_after=error.retry_after,
    )


def read_body(request: Request, cap: int) -> bytes:
    """The whole body, refused past ``cap`` bytes before it is buffered."""
    too_large = f"the request body is larger than {cap} bytes"
    if (request.content_length or 0) > cap:
        request._cached_data = b""
        raise PayloadTooLarge(too_large)
    # One byte past the cap: werkzeug cuts a chunked body *at* its limit without an error.
    request.max_content_length = cap + 1
    try:
        body = request.get_data(cache=True)
    except RequestEntityTooLarge as exc:
        request._cached_data = b""
        raise PayloadTooLarge(too_large) from exc
    except ClientDisconnected as exc:
        request._cached_data = b""
        raise InvalidRequest("the request body ended early") from exc
    if len(body) > cap:
        raise PayloadTooLarge(too_large)
    return body
