"""The front door for Wikimedia upload events: an event in, a scored (or failed) event back.

Three shapes arrive on ``POST /``: a CloudEvent in binary or structured mode whose data is an
Event Platform event (what a KafkaSource makes of ``mediawiki.recentchange``, whatever its
``type``), and ChangeProp's plain JSON ``{"event": …}``. The reply takes the request's shape.
Events that are not uploads get 200 and no reply, so the broker neither retries nor
dead-letters them; uploads whose file is not served yet (or not in this version yet) get a
retryable 503; uploads that can never be scored get a ``…image.failed`` event, so a store
learns of them too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Request, Response

from function import events
from function.config import Settings
from function.doors import Call, Job
from function.errors import FileNotReady, ScoringError, SourceMissing, SourceUnavailable
from function.pipeline import Source
from function.respond import Style
from function.wikimedia import filerepo, recentchange, scored
from function.wikimedia.filerepo import Kind
from function.wikimedia.recentchange import Skip, Upload

BINARY, PLAIN = "binary", "plain"
# The host has no such file, or not for us yet: on this path that is the upload race.
_HOST_MISSING = frozenset({"source_not_found", "source_forbidden", "source_unavailable"})
# Errors of the original that its thumbnail avoids: too many bytes, or too many pixels.
_TOO_BIG = frozenset({"source_too_large", "image_too_large"})


@dataclass(frozen=True)
class Incoming:
    """A Wikimedia event and how it came: ``binary``, ``structured`` or ``plain`` (ChangeProp)."""

    data: Mapping[str, Any]
    delivery: scored.Delivery
    mode: str


def claim(headers: Mapping[str, str], body: bytes) -> Incoming | None:
    """The Wikimedia event in this request, or None when the request is not one (another door's).

    Only the data's ``$schema``/``meta.stream`` decide; a request that does not parse is left to
    the door that would have taken it, which reports the error as before."""
    lowered = {key.lower(): value for key, value in events.decode_headers(headers).items()}
    content_type = lowered.get("content-type", "").split(";", 1)[0].strip().lower()
    binary = "ce-specversion" in lowered
    if not _is_json(content_type or ("application/json" if binary else "")):
        return None  # an image, a form, multipart: not an event (and its bytes are not read)
    if b"mediawiki" not in body:
        # Both markers name the stream (``/mediawiki/…``, ``mediawiki.…``): a cheap test that
        # spares every other JSON request a second parse.
        return None
    if binary:
        data = _json_object(body)
        delivery = scored.Delivery(
            *(_text(lowered.get(f"ce-{name}")) for name in ("id", "source", "type"))
        )
        mode = BINARY
    elif content_type == events.STRUCTURED:
        envelope = _json_object(body) or {}
        data = envelope.get("data") if isinstance(envelope.get("data"), dict) else None
        delivery = scored.Delivery(
            *(_text(envelope.get(name)) for name in ("id", "source", "type"))
        )
        mode = "structured"
    else:
        envelope = _json_object(body) or {}
        data = envelope.get("event") if isinstance(envelope.get("event"), dict) else None
        delivery, mode = scored.Delivery(), PLAIN
    if data is None or recentchange.stream_kind(data) is None:
        return None
    return Incoming(data, delivery, mode)


class UploadsDoor:
    name = "upload"
    style: Style = "json"

    def parse(self, request: Request, path: str, body: bytes, settings: Settings) -> Job | None:
        if request.method != "POST":
            return None
        incoming = claim(dict(request.headers), body)
        if incoming is None:
            return None
        read = recentchange.read(incoming.data, page_change=settings.upload_page_change)
        if isinstance(read, Upload):
            upload, kind = read, filerepo.file_type(read.file_name).kind
            if kind is not Kind.UNSCORABLE and (
                kind not in (Kind.DOCUMENT, Kind.VIDEO) or settings.score_rendered_media
            ):
                return Job("upload", lambda call: _Uploads(call).answer(upload, kind, incoming))
            read = Skip("file_type")
        reason = read.reason
        # Most of the stream is skipped: answered without a scoring slot or the model, so a
        # loading or busy instance still drains it.
        return Job("upload", lambda call: _skip(reason, call), weight=0)


def _skip(reason: str, call: Call) -> Response:
    call.service.metrics.upload_events.labels("skipped", reason).inc()
    call.context.update(input="upload", upload_outcome="skipped", skip_reason=reason)
    return Response(b"", status=200)


class _Uploads:
    """One upload's scoring, with the service and request it runs in."""

    def __init__(self, call: Call) -> None:
        self.service = call.service
        self.call = call

    def answer(self, upload: Upload, kind: Kind, incoming: Incoming) -> Response:
        metrics = self.service.metrics
        context = self.call.context
        context.update(wiki=upload.wiki, file_name=upload.file_name, log_action=upload.log_action)
        if upload.meta_id:
            context["event_meta_id"] = upload.meta_id
        key = ("upload", scored.input_key(upload, incoming.delivery), incoming.mode)
        cached = self.service.event_cache.get(key)
        if isinstance(cached, tuple):
            metrics.event_duplicates.inc()
            context["duplicate"] = True
            return Response(cached[1], status=200, headers=cached[0])
        try:
            data, ok = self._score(upload, self._renditions(upload, kind), incoming)
        except ScoringError as error:
            metrics.upload_events.labels("retry", error.code).inc()
            raise
        outcome = ("scored", "ok") if ok else ("failed", data["error"]["code"])
        metrics.upload_events.labels(*outcome).inc()
        context["upload_outcome"] = outcome[0]
        if ok:
            context["score"] = data["score"]
        reply = self._reply(upload, data, ok, incoming)
        self.service.event_cache.put(key, reply)
        return Response(reply[1], status=200, headers=reply[0])

    def _renditions(self, upload: Upload, kind: Kind) -> list[scored.Rendition]:
        """What to fetch, in order: the original of a still raster first, else the thumbnail."""
        settings = self.service.settings
        original = filerepo.original_url(settings.upload_base_url, upload.wiki, upload.file_name)
        thumb_base = dict(settings.thumb_base_urls).get(upload.wiki, settings.upload_base_url)
        width = settings.thumb_width
        thumb = filerepo.thumb_url(thumb_base, upload.wiki, upload.file_name, width)
        thumbnail = scored.Rendition(thumb, original, width)
        if kind is Kind.RASTER:
            return [scored.Rendition(original, original), thumbnail]
        return [thumbnail]

    def _score(
        self, upload: Upload, renditions: list[scored.Rendition], incoming: Incoming
    ) -> tuple[dict[str, Any], bool]:
        """(event data, scored?) for the first rendition that can be scored."""
        pipeline = self.service.pipeline
        context, deadline = self.call.context, self.call.deadline
        for index, rendition in enumerate(renditions):
            facts: dict[str, Any] = {}
            context["image_variant"] = rendition.variant  # never the URL: logs name hosts only
            # Only the original's bytes can be checked against the event's SHA-1.
            expected = upload.sha1_hex if rendition.thumb_width is None else None
            try:
                result = pipeline.score(
                    Source(url=rendition.url),
                    deadline=deadline,
                    notes=_both(facts, context),
                    expect_sha1=expected,
                )
            except ScoringError as error:
                if error.code in _TOO_BIG and index + 1 < len(renditions):
                    continue  # the thumbnail is small by construction
                if (
                    isinstance(error, SourceMissing | SourceUnavailable)
                    or error.code in _HOST_MISSING
                ):
                    # 404/403/410, 429, 5xx, unreachable: the message says which.
                    raise FileNotReady(
                        f"the file is not served yet: {error.message}",
                        # A host's own Retry-After (429, 503) when it asks for longer.
                        retry_after=max(error.retry_after or 0, FileNotReady.retry_after),
                    ) from error
                if error.status >= 500:
                    raise  # ours (overloaded, deadline, a bug) or the host's timeout: retryable
                return self._failed(upload, rendition, error, incoming), False
            data = scored.scored(
                upload,
                rendition,
                result,
                delivery=incoming.delivery,
                image_bytes=int(facts.get("image_bytes", 0)),
            )
            context["sha1_verified"] = data["image"]["sha1_verified"]
            return data, True
        raise AssertionError("unreachable: the last rendition returns or raises")

    def _failed(
        self, upload: Upload, rendition: scored.Rendition, error: ScoringError, incoming: Incoming
    ) -> dict[str, Any]:
        info = self.service.model.info
        return scored.failed(
            upload,
            rendition,
            code=error.code,
            message=error.message,
            model_version=info.version if info else "unknown",
            delivery=incoming.delivery,
        )

    def _reply(
        self, upload: Upload, data: dict[str, Any], ok: bool, incoming: Incoming
    ) -> events.Reply:
        if incoming.mode == PLAIN:
            text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            return {"Content-Type": "application/json"}, text.encode()
        settings = self.service.settings
        attributes = {
            "type": settings.event_type if ok else settings.failed_event_type,
            "source": settings.event_source,
            "id": data["meta"]["id"],
            "subject": scored.subject(upload, data),
            "time": data["meta"]["dt"],
            "datacontenttype": "application/json",
            "dataschema": data["$schema"],
        }
        return events.serialize(attributes, data, structured=incoming.mode != BINARY)


def _both(facts: dict[str, Any], context: dict[str, Any]) -> Callable[[str, Any], None]:
    def note(key: str, value: Any) -> None:
        facts[key] = value
        context[key] = value

    return note


def _is_json(content_type: str) -> bool:
    return content_type in ("application/json", "text/json") or content_type.endswith("+json")


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    return value if isinstance(value, dict) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
