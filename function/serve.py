"""``python -m function.serve``: the function on gunicorn, started the TensorFlow-safe way.

functions-framework's own CLI builds the app (and so imports the function and whatever it
loads) in gunicorn's master, *before* forking the worker; a runtime with threads of its own
(onnxruntime, XNNPACK, TensorFlow) does not survive a fork. Here gunicorn loads
functions-framework's app in the worker process itself (no ``preload_app``), and the model is
loaded there, after the fork, by ``post_worker_init``. Readiness stays 503 until the load and
one warm-up inference are done.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import functions_framework
import gunicorn.app.base
from flask import Flask

from function.allocator import configure_allocator
from function.config import ConfigError, Settings
from function.fetch import check_ca_bundle
from function.logs import GunicornJsonLogger, NativeStderr, configure_logging, log
from function.service import Service

SOURCE = Path(__file__).with_name("main.py")
TARGET = "score"
EXTENSION = "nsfwoid"
logger = logging.getLogger("nsfwoid")


def service_of(app: Flask) -> Service:
    """The service that ``main.py`` registered on functions-framework's Flask app."""
    service = app.extensions[EXTENSION]
    assert isinstance(service, Service)
    return service


def post_worker_init(worker: Any) -> None:
    """In the worker, after the fork: load the model and make SIGTERM drain readiness first."""
    # Before the first decode: libtiff's stderr lines become JSON log lines, and glibc hands
    # large freed blocks back at once but keeps what every request needs again
    # (function/allocator.py says why).
    NativeStderr()
    configure_allocator()
    service = service_of(worker.wsgi)
    service.start()
    gunicorn_handler = signal.getsignal(signal.SIGTERM)
    delay = service.settings.drain_seconds
    heard = threading.Event()

    def stop_accepting(signum: int, frame: FrameType | None) -> None:
        # gunicorn's own handler stops accepting and lets requests in flight finish within
        # graceful_timeout (it only flags the worker's loop, so any thread may call it).
        if delay:
            log(logger, logging.INFO, "drain delay over: no longer accepting requests")
        if callable(gunicorn_handler):
            gunicorn_handler(signum, frame)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # Readiness turns 503 first so the router stops sending; requests that still arrive
        # during the delay are served. The handler must return at once: the worker's loop,
        # which accepts connections, runs on this very thread.
        service.begin_shutdown()
        if heard.is_set():
            return
        heard.set()
        if not delay:
            stop_accepting(signum, frame)
            return
        timer = threading.Timer(delay, stop_accepting, (signum, frame))
        timer.name, timer.daemon = "nsfwoid-drain", True
        timer.start()

    signal.signal(signal.SIGTERM, on_sigterm)


class Server(gunicorn.app.base.BaseApplication):
    def __init__(self, settings: Settings) -> None:
        self.options = {
            "bind": f"0.0.0.0:{settings.port}",
            "workers": 1,  # one model per container; Knative scales containers, not workers
            "worker_class": "gthread",
            # Admission control answers 503 beyond max_in_flight, so a few threads more than
            # that keep probes, metrics and those fast 503s answered while scoring is full.
            "threads": settings.max_in_flight + 8,
            "timeout": 0,  # a long inference is not a hung worker; our deadline handles it
            # The master waits this long for the worker after SIGTERM: the drain delay, then
            # the longest request.
            "graceful_timeout": math.ceil(
                settings.drain_seconds + max(settings.request_deadline + 5, 10)
            ),
            "keepalive": 5,
            "accesslog": "-",
            "errorlog": "-",
            "logger_class": GunicornJsonLogger,
            "loglevel": settings.log_level.lower(),
            "post_worker_init": post_worker_init,
            "limit_request_line": 8190,
            # gunicorn's control socket wants a writable $HOME; a read-only, non-root
            # container has none, and nothing here uses it.
            "control_socket_disable": True,
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        # Called in the worker (preload_app is off): imports main.py after the fork.
        app = functions_framework.create_app(TARGET, str(SOURCE), "http")
        assert isinstance(app, Flask)
        return app


def main() -> None:
    try:
        settings = Settings.from_env(os.environ)
        check_ca_bundle(settings)  # here too, so that the worker never starts without it
    except ConfigError as error:
        # One log line a log pipeline can read, not a traceback; 2 as for a usage error.
        configure_logging()
        log(logger, logging.ERROR, f"invalid configuration: {error}", variable=error.variable)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, service_name=settings.service_name)
    Server(settings).run()


if __name__ == "__main__":
    main()
