"""The functions-framework entry point (``--target score --source function/main.py``).

Only wiring lives here. Building the service is cheap (settings, metrics, an unloaded model);
the model loads when ``start`` runs in the serving process — ``function.serve`` calls it right
after gunicorn's fork, and any first request starts it otherwise.
"""

from __future__ import annotations

import os

import flask
import functions_framework

from function.app import App
from function.config import Settings
from function.service import Service

service = Service(Settings.from_env(os.environ))
app = App(service)
# functions-framework executes this module inside its Flask app's context: register the
# service on the app so the server (and tests) reach this very instance, not a second copy.
if flask.has_app_context():
    flask.current_app.extensions["nsfwoid"] = service


@functions_framework.http
def score(request: flask.Request) -> flask.Response:
    """Every path and method: scoring on POST, CloudEvents, and the operations endpoints."""
    service.start()  # idempotent; loads in the background if the server has not already
    return app(request)
