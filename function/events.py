"""CloudEvents in, a scored CloudEvent back (Knative Eventing's request/reply).

A Broker delivers an upload event through a Trigger; the reply we return becomes a new
event on the Broker, which a sink's Trigger picks up. Both HTTP modes are accepted and the
reply uses the mode of the request. Deliveries repeat (at-least-once), so replies are
deterministic for a given (source, id) and a bounded cache answers repeats without refetching.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

# ``cloudevents.http.to_binary``/``to_structured`` are deprecated aliases that warn on every
# call; the ``conversion`` functions are the same code without the warning.
from cloudevents.conversion import to_binary, to_structured
from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_http

from function.config import PREPROCESSING_MODES, Settings
from function.errors import InvalidRequest, ScoringError, UnsupportedMediaType
from function.pipeline import Source

STRUCTURED = "application/cloudevents+json"

MAX_ATTRIBUTE_CHARS = 2048
"""Longest ``id``, ``source`` or ``type`` accepted. They key the duplicate cache and appear in
every log line and reply of the event; real producers use a UUID and a URI well under this."""

MAX_CACHED_REPLY_BYTES = 16 * 1024
"""Replies larger than this (a big ``echo``) are not kept for duplicates, which bounds the
cache at ~``NSFWOID_EVENT_CACHE_SIZE`` × 16 KiB; their redelivery is scored again, and gets
the same reply id."""

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
# Extensions added by the delivery machinery, not by the producer: they describe this delivery
# (arrival time, trace, dead-letter details), change between redeliveries, and are not echoed.
_DELIVERY_EXTENSIONS = frozenset({"traceparent", "tracestate"})
_DELIVERY_PREFIX = "knative"

Reply = tuple[dict[str, str], bytes]


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
    lowered = {k.lower() for k in headers}
    if not structured and "ce-specversion" in lowered:
        # The SDK takes binary mode only when all four are present and otherwise reads the body
        # as a structured event: name what is missing instead of failing on the image bytes.
        missing = [h for h in ("ce-id", "ce-source", "ce-type") if h not in lowered]
        if missing:
            raise InvalidRequest(f"binary-mode CloudEvent without {', '.join(missing)}")
    try:
        # Keep data as raw bytes: we decide by datacontenttype whether it is JSON or an image.
        event = from_http(_decode_headers(headers), body, data_unmarshaller=lambda raw: raw)
    except (
        GenericException,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        RecursionError,
    ) as exc:
        # The SDK raises more than its own exceptions on untrusted input: a structured body
        # that is not a JSON object fails inside it (AttributeError, JSONDecodeError), and one
        # nested a few hundred KB deep exhausts the JSON parser's stack (RecursionError).
        raise InvalidRequest("malformed CloudEvent") from exc
    attributes = event.get_attributes()
    for name in ("id", "source", "type"):
        # The SDK accepts "" or a JSON object here; the spec wants a non-empty string, and the
        # (source, id) pair is our idempotency key.
        if not isinstance(attributes.get(name), str) or not attributes[name]:
            raise InvalidRequest(f"malformed CloudEvent: '{name}' must be a non-empty string")
        if len(attributes[name]) > MAX_ATTRIBUTE_CHARS:
            raise InvalidRequest(
                f"malformed CloudEvent: '{name}' is longer than {MAX_ATTRIBUTE_CHARS} characters"
            )
    data = event.get_data()
    data_type = str(attributes.get("datacontenttype") or "application/json").split(";")[0].lower()
    extensions = {
        k: v
        for k, v in attributes.items()
        if k not in _CORE_ATTRIBUTES
        and k not in _DELIVERY_EXTENSIONS
        and not k.startswith(_DELIVERY_PREFIX)
    }

    if data_type.startswith("image/") or data_type == "application/octet-stream":
        if isinstance(data, str):
            # Structured mode with "data" instead of "data_base64": the SDK hands back the JSON
            # text, not the image, so there are no bytes to decode.
            raise InvalidRequest("a structured event carries image bytes in 'data_base64'")
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


def _decode_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Undo the HTTP binding's percent-encoding of ``ce-*`` values (the 1.x SDK does not).

    WSGI hands header values over as latin-1 text; a producer that sent raw UTF-8 is read back
    as UTF-8 before the ``%XX`` sequences are decoded.
    """
    decoded: dict[str, str] = {}
    for key, value in headers.items():
        if key.lower().startswith("ce-"):
            try:
                value = value.encode("latin-1").decode("utf-8")
            except (UnicodeEncodeError, UnicodeDecodeError):
                pass  # not UTF-8 bytes: keep the text as it came
            value = unquote(value)
        decoded[key] = value
    return decoded


def _encode_header(value: str) -> str:
    """Percent-encode as the HTTP binding requires: UTF-8, and all but printable ASCII."""
    return "".join(c if "!" <= c <= "~" and c not in '"%' else quote(c, safe="") for c in value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 overflows to inf, which is not JSON either
        raise ValueError(f"{text} is out of range")
    return value


def _json_object(data: Any) -> dict[str, Any]:
    if isinstance(data, dict):
        return data
    try:
        # NaN/Infinity are not JSON: echoing them back would make the reply invalid JSON.
        payload = (
            json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
            if isinstance(data, str | bytes | bytearray)
            else None
        )
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting
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


def reply(event: ScoringEvent, result: Mapping[str, Any], settings: Settings) -> Reply:
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
    if event.structured:
        headers, body = to_structured(out)
    else:
        headers, body = to_binary(out)
        # A URL subject may hold any Unicode; an HTTP header may not (werkzeug writes latin-1).
        headers = {
            k: _encode_header(v) if k.lower().startswith("ce-") else v for k, v in headers.items()
        }
    return dict(headers), body if isinstance(body, bytes) else str(body).encode()


@dataclass(frozen=True)
class Failure:
    """A permanent error as plain data: a repeat meets the same answer without the original
    exception, whose traceback would keep the request, its body and the decoded image alive."""

    status: int
    code: str
    message: str

    def error(self) -> ScoringError:
        return ScoringError(self.message, code=self.code, status=self.status)


Outcome = Reply | Failure


def _size(key: tuple[object, ...], outcome: Outcome) -> int:
    """Bytes an entry keeps alive, near enough to bound the cache by."""
    size = 256 + sum(len(str(part)) for part in key)
    if isinstance(outcome, Failure):
        return size + len(outcome.message) + len(outcome.code)
    headers, body = outcome
    return size + len(body) + sum(len(k) + len(v) for k, v in headers.items())


class EventCache:
    """A small LRU of outcomes by (source, id): repeats are answered without refetching.

    An outcome is a reply, or a permanent (4xx) failure that a repeat must meet again;
    transient errors are never stored, so a redelivery after one is scored afresh. Both the
    number of entries and the bytes they hold are bounded.
    """

    def __init__(self, capacity: int, max_bytes: int = 8 * 1024 * 1024) -> None:
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._items: OrderedDict[tuple[object, ...], tuple[Outcome, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: tuple[object, ...]) -> Outcome | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[0]

    def put(self, key: tuple[object, ...], value: Outcome) -> None:
        if self._capacity <= 0:
            return
        if not isinstance(value, Failure) and len(value[1]) > MAX_CACHED_REPLY_BYTES:
            return
        size = _size(key, value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, size)
            self._bytes += size
            while self._items and (
                len(self._items) > self._capacity or self._bytes > self._max_bytes
            ):
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped
