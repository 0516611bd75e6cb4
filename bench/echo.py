"""The HTTP floor: functions-framework on gunicorn with our server's options and allocator
settings, and a function that only reads the body and answers a small JSON object. No model,
no pipeline, no logging.

``python -m bench.echo`` serves it on ``$PORT``. The classes phase posts each image to it in
the same rotation as the other sides, so "floor + HTTP" (decode + inference + this) reads as the
least any server built as ours is (functions-framework, gunicorn's threaded worker) could take.
"""

from __future__ import annotations

import os
from typing import Any

import flask
import functions_framework

from function.allocator import configure_allocator
from function.config import Settings
from function.serve import Server


@functions_framework.http
def echo(request: flask.Request) -> dict[str, int]:
    """Read the whole body in one call (the least a scoring function must do) and say how
    much arrived."""
    length = request.content_length or 0
    data = request.environ["wsgi.input"].read(length) if length else b""
    return {"bytes": len(data)}


def _after_fork(worker: Any) -> None:
    """As our worker, less the service: the same allocator settings, so a large body costs
    here what it costs there (function/allocator.py)."""
    configure_allocator()


class EchoServer(Server):
    """``function.serve.Server`` with the same gunicorn options, serving ``echo`` instead."""

    def load_config(self) -> None:
        super().load_config()
        self.cfg.set("post_worker_init", _after_fork)
        self.cfg.set("accesslog", None)  # the floor writes no log line

    def load(self) -> flask.Flask:
        app = functions_framework.create_app("echo", __file__, "http")
        assert isinstance(app, flask.Flask)
        return app


if __name__ == "__main__":
    EchoServer(Settings.from_env(os.environ)).run()
