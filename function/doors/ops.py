"""Operations endpoints: liveness, readiness, metrics, the OpenAPI document, the index.

They never take a scoring slot or wait for the model, so probes and scrapes are answered while
every slot is busy.
"""

from __future__ import annotations

from functools import cached_property

from flask import Request, Response

from function import spec
from function.config import Settings
from function.doors import Call, Job
from function.errors import NotFound
from function.respond import Style, json_response

ALLOW = "GET, HEAD, POST, OPTIONS"


class OpsDoor:
    name = "ops"
    style: Style = "json"

    @cached_property
    def spec_yaml(self) -> str:
        return spec.SPEC_YAML.read_text(encoding="utf-8")

    @cached_property
    def spec_json(self) -> str:
        # Rendered at image build time; rendered here only in a checkout without it.
        return spec.openapi_json()

    def parse(self, request: Request, path: str, body: bytes, settings: Settings) -> Job | None:
        if request.method == "OPTIONS":
            return Job("ops", lambda call: Response(status=204, headers={"Allow": ALLOW}), 0)
        if request.method not in ("GET", "HEAD"):
            return None
        handlers = {
            "/healthz": self.healthz,
            "/readyz": self.readyz,
            "/metrics": lambda call: self.metrics(call, request.headers.get("Accept", "")),
            "/openapi.yaml": self.openapi_yaml,
            "/openapi.yml": self.openapi_yaml,
            "/openapi.json": self.openapi_json,
            # service-checker (Wikimedia's monitoring) reads the document at ``/?spec``.
            "/": self.openapi_json if "spec" in request.args else self.index,
        }
        handler = handlers.get(path)
        if handler is None:
            raise NotFound(f"no such endpoint: {path}")
        return Job("ops", handler, weight=0)

    @staticmethod
    def healthz(call: Call) -> Response:
        if not call.service.alive:
            return json_response({"status": "dead", "reason": "inference thread stopped"}, 503)
        return json_response({"status": "ok"})

    @staticmethod
    def readyz(call: Call) -> Response:
        service = call.service
        if service.ready:
            info = service.model.info
            return json_response({"status": "ready", "model": info and info.as_dict()})
        reason = (
            "inference thread stopped"
            if not service.alive
            else "draining"
            if service.draining
            else "model failed to load"
            if service.load_error
            else "loading"
        )
        return json_response({"status": "not_ready", "reason": reason}, 503, {"Retry-After": "1"})

    @staticmethod
    def metrics(call: Call, accept: str) -> Response:
        body, content_type = call.service.metrics.render(accept)
        return Response(body, status=200, content_type=content_type)

    def openapi_yaml(self, call: Call) -> Response:
        return Response(self.spec_yaml, status=200, mimetype="application/yaml")

    def openapi_json(self, call: Call) -> Response:
        return Response(self.spec_json, status=200, mimetype="application/json")

    @staticmethod
    def index(call: Call) -> Response:
        return json_response(
            {
                "service": "nsfwoid",
                "score": "POST / (see /openapi.json)",
                "health": "/healthz",
                "ready": "/readyz",
                "metrics": "/metrics",
            }
        )
