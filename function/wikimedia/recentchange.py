"""Which Event Platform events are file uploads, read into one small record.

``mediawiki.recentchange`` carries every change of every wiki; an upload is its log entry
``upload/upload`` (new file), ``upload/overwrite`` (new version) or ``upload/revert`` (an old
version made current again) in the File namespace. ``mediawiki.page_change.v1`` creates of File
pages can stand in for it (they carry no file hash). Everything else is skipped with a reason
that metrics count; a canary (``meta.domain == "canary"``) is a pipeline health probe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from function.wikimedia import filerepo

FILE_NAMESPACE = 6
UPLOAD_ACTIONS = frozenset({"upload", "overwrite", "revert"})
RECENTCHANGE = "recentchange"
PAGE_CHANGE = "page_change"

SKIP_REASONS = (
    "canary",
    "not_upload",
    "not_file_namespace",
    "not_file_create",
    "page_change_off",
    "unknown_wiki",
    "malformed",
    "file_type",
)
"""Why an event is answered without a reply: the ``reason`` label of the skip counter."""


@dataclass(frozen=True)
class Upload:
    """One file version to score, as the event describes it."""

    stream: str  # the event's meta.stream
    wiki: str  # database name, e.g. commonswiki
    title: str  # the File page's title as the event spells it
    file_name: str  # without namespace prefix, underscores
    log_action: str  # upload, overwrite or revert
    domain: str | None = None
    sha1_base36: str | None = None  # log_params.img_sha1, when the event carries it
    upload_dt: str | None = None  # log_params.img_timestamp as ISO-8601 UTC
    log_id: int | None = None
    page_id: int | None = None
    meta_id: str | None = None
    request_id: str | None = None
    uri: str | None = None
    dt: str | None = None  # the event's own time (meta.dt)

    @property
    def page_title(self) -> str:
        """The prefixed DB key (underscores), as page entities in events carry it."""
        return self.title.replace(" ", "_")

    @property
    def sha1_hex(self) -> str | None:
        return filerepo.sha1_hex(self.sha1_base36) if self.sha1_base36 else None


@dataclass(frozen=True)
class Skip:
    reason: str


def stream_kind(data: Mapping[str, Any]) -> str | None:
    """``recentchange``, ``page_change``, or None for anything that is not such an event.

    Recognised by ``$schema`` or ``meta.stream``, never by the CloudEvent ``type``: a
    KafkaSource calls every record ``dev.knative.kafka.event``."""
    schema = data.get("$schema")
    meta = data.get("meta")
    stream = meta.get("stream") if isinstance(meta, Mapping) else None
    if (isinstance(schema, str) and schema.startswith("/mediawiki/recentchange/")) or (
        isinstance(stream, str) and stream.endswith("mediawiki.recentchange")
    ):
        return RECENTCHANGE
    if (isinstance(schema, str) and schema.startswith("/mediawiki/page/change/")) or (
        isinstance(stream, str) and stream.startswith("mediawiki.page_change")
    ):
        return PAGE_CHANGE
    return None


def read(data: Mapping[str, Any], *, page_change: bool = False) -> Upload | Skip:
    """An upload to score, or why not. ``data`` must be a recognised stream (``stream_kind``)."""
    meta = data.get("meta")
    if not isinstance(meta, Mapping):
        return Skip("malformed")
    if meta.get("domain") == "canary":
        return Skip("canary")
    if stream_kind(data) == PAGE_CHANGE:
        return _page_change(data, meta) if page_change else Skip("page_change_off")
    return _recentchange(data, meta)


def _recentchange(data: Mapping[str, Any], meta: Mapping[str, Any]) -> Upload | Skip:
    if (
        data.get("type") != "log"
        or data.get("log_type") != "upload"
        or data.get("log_action") not in UPLOAD_ACTIONS
    ):
        return Skip("not_upload")
    if data.get("namespace") != FILE_NAMESPACE:
        return Skip("not_file_namespace")
    params = data.get("log_params")
    params = params if isinstance(params, Mapping) else {}
    sha1 = params.get("img_sha1")
    if sha1 is not None and not _is_base36_sha1(sha1):
        return Skip("malformed")
    return _upload(
        data.get("wiki"),
        data.get("title"),
        meta,
        log_action=str(data["log_action"]),
        sha1_base36=sha1,
        upload_dt=mw_timestamp(params.get("img_timestamp")),
        log_id=_integer(data.get("log_id")),
    )


def _page_change(data: Mapping[str, Any], meta: Mapping[str, Any]) -> Upload | Skip:
    page = data.get("page")
    if data.get("page_change_kind") != "create" or not isinstance(page, Mapping):
        return Skip("not_file_create")
    if page.get("namespace_id") != FILE_NAMESPACE:
        return Skip("not_file_namespace")
    return _upload(
        data.get("wiki_id"),
        page.get("page_title"),
        meta,
        log_action="upload",
        upload_dt=data.get("dt") if isinstance(data.get("dt"), str) else None,
        page_id=_integer(page.get("page_id")),
    )


def _upload(wiki: Any, title: Any, meta: Mapping[str, Any], **facts: Any) -> Upload | Skip:
    if not isinstance(wiki, str) or not isinstance(title, str):
        return Skip("malformed")
    try:
        filerepo.site_and_lang(wiki)
    except ValueError:
        return Skip("unknown_wiki")
    try:
        name = filerepo.file_name(title)
    except ValueError:
        return Skip("malformed")
    return Upload(
        stream=str(meta.get("stream") or ""),
        wiki=wiki,
        title=title,
        file_name=name,
        domain=_text(meta.get("domain")),
        meta_id=_text(meta.get("id")),
        request_id=_text(meta.get("request_id")),
        uri=_text(meta.get("uri")),
        dt=_text(meta.get("dt")),
        **facts,
    )


def mw_timestamp(value: Any) -> str | None:
    """MediaWiki's 14-digit ``YYYYMMDDHHMMSS`` (UTC) as ISO-8601, or None if it is not one."""
    if not isinstance(value, str) or len(value) != 14 or not value.isdigit():
        return None
    try:
        moment = datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_base36_sha1(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        filerepo.sha1_hex(value)
    except ValueError:
        return False
    return True


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
