"""Plain HTTP scoring: a form with ``url=`` (the bare float), JSON, multipart, raw bytes, and
``{"urls": [...]}`` batches whose items are fetched, decoded and scored side by side.

A batch takes one scoring slot per URL (``Job.weight``), so the pool its items run on never
holds more work than admission let in: one batch pointed at slow hosts cannot stall another.
"""

from __future__ import annotations

import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from flask import Request, Response

from function import inputs
from function.config import Settings
from function.doors import Call, Job
from function.errors import ScoringError
from function.logs import log
from function.pipeline import Source
from function.respond import Style, error_payload, json_response, score_text, text_response

logger = logging.getLogger("nsfwoid")


class PlainDoor:
    name = "plain"
    style: Style = "json"

    def __init__(self, settings: Settings) -> None:
        self._pool_size = settings.max_in_flight

    @cached_property
    def _pool(self) -> ThreadPoolExecutor:
        # Admission bounds the items in flight at max_in_flight, so this never queues.
        return ThreadPoolExecutor(self._pool_size, thread_name_prefix="nsfwoid-batch")

    def parse(self, request: Request, path: str, body: bytes, settings: Settings) -> Job | None:
        if request.method != "POST":
            return None
        parsed = inputs.parse(request, body, settings)
        style: Style = "text" if parsed.text else "json"
        if parsed.batch:
            return Job(parsed.kind, lambda call: self._batch(parsed, call), len(parsed.sources))
        return Job(parsed.kind, lambda call: self._one(parsed, call), style=style)

    @staticmethod
    def _one(parsed: inputs.ScoreRequest, call: Call) -> Response:
        result = call.service.pipeline.score(
            parsed.sources[0], mode=parsed.mode, deadline=call.deadline, notes=call.note
        )
        call.note("score", result["score"])
        if parsed.text:
            return text_response(score_text(result["score"]))
        return json_response(result | {"request_id": call.request_id})

    def _batch(self, parsed: inputs.ScoreRequest, call: Call) -> Response:
        pipeline = call.service.pipeline

        def one(source: Source) -> dict[str, Any]:
            try:
                result = pipeline.score(source, mode=parsed.mode, deadline=call.deadline)
                return result | {"url": source.url}
            except ScoringError as error:
                log(
                    logger,
                    logging.INFO,
                    "batch item failed",
                    source_host=urlsplit(source.url or "").hostname,
                    outcome=error.code,
                    status=error.status,
                )
                return error_payload(error, None) | {"url": source.url, "status": error.status}

        # Each item runs in a copy of this request's context, so its log lines carry the
        # request id (a pool thread would otherwise log with no context at all).
        futures = [
            self._pool.submit(contextvars.copy_context().run, one, source)
            for source in parsed.sources
        ]
        results = [future.result() for future in futures]
        return json_response({"results": results, "request_id": call.request_id})
