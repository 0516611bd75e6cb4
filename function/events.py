"""CloudEvents in, a scored CloudEvent back (Knative Eventing's request/reply).

A Broker delivers an upload event through a Trigger; the reply we return becomes a new
event on the Broker, which a sink's Trigger picks up. Both HTTP modes are accepted and the
reply uses the mode of the request. Deliveries repeat (at-least-once), so replies are
deterministic for a given (source, id) and a bounded cache answers repeats without refetching.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_http, to_binary, to_structured

from function.config import PREPROCESSING_MODES, Settings
from function.errors import InvalidRequest, UnsupportedMediaType
from function.pipeline import Source

STRUCTURED = "application/cloudevents+json"
_REPLY_NAMESPACE = uuid.UUID("0e6c4f55-5d0e-4c1b-9a37-9a3d1f1b6e2a")
_CORE_ATTRIBUTES = frozenset(
    {
        "id",
        "source",
        "type",
        "specversion",
        "datacontenttype",
        "dataschema",
        "subject",
        "time",
        "data",
        "data_base64",
    }
)
_RESERVED_DATA_KEYS = frozenset({"url", "preprocessing"})


def is_cloudevent(headers: Mapping[str, str]) -> bool:
    content_type = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    return "ce-specversion" in {k.lower() for k in headers} or content_type == STRUCTURED


@dataclass(frozen=True)
class ScoringEvent:
    """What an incoming event asks for."""

    id: str
    source: str
    type: str
    structured: bool
    image: Source
    mode: str | None
    echo: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[object, ...]:
        return (self.source, self.id, self.structured)


def parse(headers: Mapping[str, str], body: bytes) -> ScoringEvent:
    """Turn an HTTP request into a ScoringEvent, or raise a 4xx error."""
    content_type = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    structured = content_type == STRUCTURED
    try:
        # Keep data as raw bytes: we decide by datacontenttype whether it is JSON or an image.
        event = from_http(dict(headers), body, data_unmarshaller=lambda raw: raw)
    except GenericException as exc:
        raise InvalidRequest(f"malformed CloudEvent: {exc}") from exc
    attributes = event.get_attributes()
    data = event.get_data()
    data_type = str(attributes.get("datacontenttype") or "application/json").split(";")[0].lower()
    extensions = {k: v for k, v in attributes.items() if k not in _CORE_ATTRIBUTES}

    if data_type.startswith("image/") or data_type == "application/octet-stream":
        if isinstance(data, str):
            data = data.encode("latin-1")
        if not isinstance(data, bytes | bytearray) or not data:
            raise InvalidRequest("the event carries no image bytes")
        mode = extensions.pop("preprocessing", None)
        return _event(attributes, structured, Source(data=bytes(data)), mode, extensions)

    if data_type not in ("application/json", "text/json") and not data_type.endswith("+json"):
        raise UnsupportedMediaType(f"event data of type {data_type} is not accepted")
    payload = _json_object(data)
    url = payload.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidRequest("event data must be a JSON object with a 'url' string")
    echo = {k: v for k, v in payload.items() if k not in _RESERVED_DATA_KEYS}
    return _event(attributes, structured, Source(url=url), payload.get("preprocessing"), echo)


def _json_object(data: Any) -> dict[str, Any]:
    if isinstance(data, dict):
        return data
    try:
        payload = json.loads(data) if isinstance(data, str | bytes | bytearray) else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("event data is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise InvalidRequest("event data must be a JSON object")
    return payload


def _event(
    attributes: Mapping[str, Any],
    structured: bool,
    source: Source,
    mode: Any,
    echo: dict[str, Any],
) -> ScoringEvent:
    if mode is not None and mode not in PREPROCESSING_MODES:
        raise InvalidRequest(f"preprocessing must be one of {', '.join(PREPROCESSING_MODES)}")
    return ScoringEvent(
        id=str(attributes["id"]),
        source=str(attributes["source"]),
        type=str(attributes["type"]),
        structured=structured,
        image=source,
        mode=mode,
        echo=echo,
    )


def reply(
    event: ScoringEvent, result: Mapping[str, Any], settings: Settings
) -> tuple[dict[str, str], bytes]:
    """The scored event, in the request's HTTP mode: (headers, body)."""
    image = result["image"]
    data = {
        "score": result["score"],
        "image": {
            "sha1": image["sha1"],
            "sha1_base36": image["sha1_base36"],
            "url": event.image.url,
            "format": image["format"],
            "width": image["width"],
            "height": image["height"],
            "frames": image["frames"],
            "truncated": image["truncated"],
        },
        "model": result["model"],
        "preprocessing": result["preprocessing"],
        "echo": event.echo,
        "event": {"id": event.id, "source": event.source, "type": event.type},
    }
    if "frame_scores" in result:
        data["frame_scores"] = result["frame_scores"]
    attributes = {
        "type": settings.event_type,
        "source": settings.event_source,
        "subject": event.image.url or image["sha1"],
        # Same input event → same reply id, so a sink can drop duplicate deliveries.
        "id": str(uuid.uuid5(_REPLY_NAMESPACE, f"{event.source}\x00{event.id}")),
        "datacontenttype": "application/json",
    }
    out = CloudEvent(attributes, data)
    headers, body = to_structured(out) if event.structured else to_binary(out)
    return dict(headers), body if isinstance(body, bytes) else str(body).encode()


class EventCache:
    """A small LRU of replies by (source, id): repeats are answered without refetching."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[tuple[object, ...], tuple[int, dict[str, str], bytes]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...]) -> tuple[int, dict[str, str], bytes] | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: tuple[object, ...], value: tuple[int, dict[str, str], bytes]) -> None:
        if self._capacity <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
