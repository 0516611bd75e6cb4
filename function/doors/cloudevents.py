"""CloudEvents in, a scored CloudEvent back (Knative Eventing's request/reply).

Deliveries repeat (at-least-once): a bounded cache answers a repeat of a scored event, or of
one that failed for good, without fetching again. Transient failures are not kept, so the
redelivery after one is scored afresh; on this path a file the image host does not serve yet
is such a failure (``respond.status_of``), because an upload may not be visible everywhere.
"""

from __future__ import annotations

from flask import Request, Response

from function import events
from function.config import Settings
from function.doors import Call, Job
from function.errors import ScoringError
from function.respond import Style, status_of


class CloudEventsDoor:
    name = "event"
    style: Style = "event"

    def parse(self, request: Request, path: str, body: bytes, settings: Settings) -> Job | None:
        headers = dict(request.headers)
        if request.method != "POST" or not events.is_cloudevent(headers):
            return None
        event = events.parse(headers, body)
        return Job("event", lambda call: self._run(event, call), style="event")

    @staticmethod
    def _run(event: events.ScoringEvent, call: Call) -> Response:
        service = call.service
        call.context.update(
            event_id=event.id, event_source=event.source, event_type=event.type, input="event"
        )
        cached = service.event_cache.get(event.key)
        if cached is not None:
            service.metrics.event_duplicates.inc()
            call.note("duplicate", True)
            if isinstance(cached, events.Failure):
                raise cached.error()  # the same permanent answer, logged and counted as that
            headers, payload = cached
            return Response(payload, status=200, headers=headers)
        exemplar = {"event_id": event.id[:64]}
        try:
            result = service.pipeline.score(
                event.image, mode=event.mode, deadline=call.deadline, notes=call.note
            )
        except ScoringError as error:
            service.metrics.event(event.type, event.source, error.code).inc(exemplar=exemplar)
            status, _ = status_of(error, "event")
            if status < 500:  # permanent: a repeat must get the same answer
                message = error.message
                service.event_cache.put(event.key, events.Failure(status, error.code, message))
            raise
        service.metrics.event(event.type, event.source, "ok").inc(exemplar=exemplar)
        call.note("score", result["score"])
        headers, payload = events.reply(event, result, service.settings)
        service.event_cache.put(event.key, (headers, payload))
        return Response(payload, status=200, headers=headers)
