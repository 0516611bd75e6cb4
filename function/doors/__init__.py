"""Front doors: each turns one kind of request into calls of the one pipeline.

``function.app.App`` owns what every door shares: the request id, the body (read once,
capped and time-bounded by ``function.body``), admission, error rendering, metrics and the
one log line per request. A door only says whether a request is its own and what to do:

1. ``door.parse(request, path, body, settings)`` returns ``None`` when the request is not
   this door's (the next door is asked), or a ``Job``. Parsing does no scoring and no I/O
   beyond the body already read; it raises only 4xx ``ScoringError``s.
2. The app takes ``job.weight`` scoring slots (0 for operations endpoints, which never wait
   for the model), then calls ``job.run(call)`` for the ``Response``.
3. A ``ScoringError`` from either step is rendered by ``respond.error_response`` in
   ``job.style`` (or the door's ``style`` when parsing failed): the only place errors become
   HTTP.

Doors are asked in ``function.app.DOORS`` order; ``plain`` (forms, JSON, raw bytes) is last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from flask import Request, Response

from function.config import Settings
from function.respond import Style

if TYPE_CHECKING:
    from function.service import Service


@dataclass(frozen=True)
class Call:
    """What a job runs with: the service, and this request's id, deadline and log fields."""

    service: Service
    request_id: str
    deadline: float
    context: dict[str, Any] = field(default_factory=dict)

    def note(self, key: str, value: Any) -> None:
        """A fact for this request's log line (host, format, score)."""
        self.context[key] = value


@dataclass(frozen=True)
class Job:
    """One parsed request: how many scoring slots it takes, and how to answer it."""

    kind: str  # metrics label of the input kind: form, json, batch, raw, event, kserve…
    run: Callable[[Call], Response]
    weight: int = 1  # scoring slots: images scored side by side (0: no slot, no model)
    style: Style = "json"  # how errors are rendered for this caller


class Door(Protocol):
    name: str
    style: Style  # error rendering when parsing fails

    def parse(self, request: Request, path: str, body: bytes, settings: Settings) -> Job | None:
        """This door's ``Job`` for the request, ``None`` if it is another door's, or a 4xx."""
        ...


@runtime_checkable
class OwnBodyLimit(Protocol):
    """A door whose bodies may exceed ``max_body_bytes`` for its paths (base64 images are a
    third larger than the bytes they carry); the app reads them up to this limit instead."""

    def body_limit(self, path: str, settings: Settings) -> int | None:
        """The cap for a body sent to ``path``, or ``None`` when the path is not this door's."""
        ...
