"""The event a score (or a permanent failure) is published as, ready for a store to keep.

Event Platform conventions (``$schema``, ``meta``, ``dt``) and Lift Wing's
``predicted_classification``, so Wikimedia's event tooling and Lift Wing's consumers can read
it. The schemas live beside the code (``function/schemas/``). Ids are deterministic: the same
input event scored by the same model version gets the same id whichever cluster, delivery or
mode it came by, so a store can drop duplicates.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from function.wikimedia import filerepo
from function.wikimedia.recentchange import FILE_NAMESPACE, Upload

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
SCORED_SCHEMA = "/nsfwoid/image/scored/1.0.0"
FAILED_SCHEMA = "/nsfwoid/image/failed/1.0.0"
SCORED_STREAM = "nsfwoid.image_scored.v1"
FAILED_STREAM = "nsfwoid.image_failed.v1"
MODEL_NAME = "open_nsfw"
_NAMESPACE = uuid.UUID("5b0f6a8e-2f51-4a53-9a4e-6f1d8c0b7e21")


@dataclass(frozen=True)
class Rendition:
    """What was (or would be) fetched for one upload."""

    url: str
    original_url: str
    thumb_width: int | None = None  # None: the original

    @property
    def variant(self) -> str:
        return "original" if self.thumb_width is None else "thumbnail"


@dataclass(frozen=True)
class Delivery:
    """How the input event reached us: its CloudEvent attributes, if it came as one."""

    id: str | None = None
    source: str | None = None
    type: str | None = None


def schema_path(schema_uri: str) -> Path:
    """``/nsfwoid/image/scored/1.0.0`` → its YAML file in the repository."""
    return SCHEMAS / (schema_uri.strip("/") + ".yaml")


def input_key(upload: Upload, delivery: Delivery) -> str:
    """What identifies the input event: Event Platform's ``meta.id``, which is the same on every
    Kafka cluster and every redelivery; else the CloudEvent (source, id); else the file version."""
    if upload.meta_id:
        return f"meta:{upload.meta_id}"
    if delivery.id is not None:
        return f"ce:{delivery.source}\x00{delivery.id}"
    return f"file:{upload.wiki}\x00{upload.file_name}\x00{upload.sha1_base36}\x00{upload.log_id}"


def event_id(upload: Upload, delivery: Delivery, model_version: str, kind: str) -> str:
    return str(
        uuid.uuid5(_NAMESPACE, f"{kind}\x00{input_key(upload, delivery)}\x00{model_version}")
    )


def iso_now(now: datetime | None = None) -> str:
    moment = now or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def scored(
    upload: Upload,
    rendition: Rendition,
    result: Mapping[str, Any],
    *,
    delivery: Delivery,
    image_bytes: int,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The scored event's data. ``result`` is the pipeline's result for the fetched bytes."""
    image = result["image"]
    fetched_sha1 = str(image["sha1"])
    expected = upload.sha1_hex
    original = rendition.thumb_width is None
    # The original's hash: the event's when it has one, else that of the original we fetched.
    sha1 = expected or (fetched_sha1 if original else None)
    nsfw = float(result["score"])
    model_version = str(result["model"]["version"])
    data: dict[str, Any] = {
        "$schema": SCORED_SCHEMA,
        "meta": _meta(
            upload, SCORED_STREAM, event_id(upload, delivery, model_version, "scored"), now
        ),
        "dt": _event_dt(upload, now),
        "score": nsfw,
        "wiki_id": upload.wiki,
        "page": _page(upload),
        "image": _image(upload, rendition, sha1)
        | {
            "sha1_verified": bool(original and expected is not None and expected == fetched_sha1),
            "fetched_sha1": fetched_sha1,
            "mime": _MIME.get(str(image["format"]), "application/octet-stream"),
            "width": int(image["width"]),
            "height": int(image["height"]),
            "bytes": image_bytes,
        },
        "predicted_classification": {
            "model_name": MODEL_NAME,
            "model_version": model_version,
            "predictions": ["nsfw" if nsfw >= 0.5 else "sfw"],
            "probabilities": {"nsfw": nsfw, "sfw": 1.0 - nsfw},
        },
        "scoring": {
            "preprocessing": str(result["preprocessing"]),
            "truncated": bool(image["truncated"]),
            "frames_scored": len(result.get("frame_scores") or ()) or 1,
            "duration_ms": float(result.get("timing_ms", {}).get("total", 0.0)),
        },
        "source_event": _source_event(upload, delivery),
    }
    return data


def failed(
    upload: Upload,
    rendition: Rendition,
    *,
    code: str,
    message: str,
    model_version: str,
    delivery: Delivery,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The failed event's data: a permanent reason this file version gets no score."""
    return {
        "$schema": FAILED_SCHEMA,
        "meta": _meta(
            upload, FAILED_STREAM, event_id(upload, delivery, model_version, "failed"), now
        ),
        "dt": _event_dt(upload, now),
        "wiki_id": upload.wiki,
        "page": _page(upload),
        "image": _image(upload, rendition, upload.sha1_hex),
        "error": {"code": code, "message": message},
        "model_version": model_version,
        "source_event": _source_event(upload, delivery),
    }


def subject(upload: Upload, data: Mapping[str, Any]) -> str:
    """The CloudEvent ``subject``: the file version's SHA-1 where known, else its page."""
    sha1 = data.get("image", {}).get("sha1")
    return str(sha1) if sha1 else f"{upload.wiki}:{upload.page_title}"


_MIME = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
    "MPO": "image/jpeg",
}


def _meta(upload: Upload, stream: str, id_: str, now: datetime | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"stream": stream, "id": id_, "dt": iso_now(now)}
    for key, value in (
        ("domain", upload.domain),
        ("uri", upload.uri),
        ("request_id", upload.request_id),
    ):
        if value:
            meta[key] = value
    return meta


def _event_dt(upload: Upload, now: datetime | None) -> str:
    return upload.upload_dt or upload.dt or iso_now(now)


def _page(upload: Upload) -> dict[str, Any]:
    page: dict[str, Any] = {"namespace_id": FILE_NAMESPACE, "page_title": upload.page_title}
    if upload.page_id is not None:
        page["page_id"] = upload.page_id
    return page


def _image(upload: Upload, rendition: Rendition, sha1: str | None) -> dict[str, Any]:
    image: dict[str, Any] = {
        "url": rendition.url,
        "original_url": rendition.original_url,
        "variant": rendition.variant,
        "file_name": upload.file_name,
        "log_action": upload.log_action,
    }
    if rendition.thumb_width is not None:
        image["thumb_width"] = rendition.thumb_width
    if sha1:
        image["sha1"] = sha1
        image["sha1_base36"] = filerepo.sha1_base36(sha1)
    if upload.upload_dt:
        image["upload_dt"] = upload.upload_dt
    if upload.log_id is not None:
        image["log_id"] = upload.log_id
    return image


def _source_event(upload: Upload, delivery: Delivery) -> dict[str, str]:
    facts = {
        "id": delivery.id,
        "source": delivery.source,
        "type": delivery.type,
        "meta_id": upload.meta_id,
        "stream": upload.stream or None,
    }
    return {key: value for key, value in facts.items() if value}
