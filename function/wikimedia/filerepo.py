"""Where a wiki's file lives on the upload host, and which rendition of it to score.

Wikimedia's file store lays originals out by the MD5 of the file name
(``<base>/<site>/<lang>/<m0>/<m0m1>/<name>``) and thumbnails beside them under ``thumb/``, named
by the media handler of the file's type. These rules are MediaWiki's ``FileRepo``/``File``
naming as Wikimedia configures it (hashed directories, names past 160 bytes abbreviated).
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from urllib.parse import quote

STANDARD_WIDTHS = (20, 40, 60, 120, 250, 330, 500, 960, 1280, 1920, 3840)
"""Wikimedia's standard thumbnail widths: other widths are rendered on demand, if at all, and
are not cached at the edge, so asking for them would load the thumbnailers for nothing."""

ABBREVIATE_OVER_BYTES = 160
"""Names longer than this (UTF-8 bytes) are called ``thumbnail.<ext>`` in thumbnail names (what
Wikimedia sets as the file repo's abbreviation threshold), keeping paths under file-system
limits."""

# Wikis whose files live under wikipedia/<name> though they are not a language's Wikipedia.
_SPECIAL_WIKIS = {
    "commonswiki": ("wikipedia", "commons"),
    "metawiki": ("wikipedia", "meta"),
    "specieswiki": ("wikipedia", "species"),
    "mediawikiwiki": ("wikipedia", "mediawiki"),
    "wikidatawiki": ("wikipedia", "wikidata"),
    "foundationwiki": ("wikipedia", "foundation"),
    "incubatorwiki": ("wikipedia", "incubator"),
    "outreachwiki": ("wikipedia", "outreach"),
    "sourceswiki": ("wikipedia", "sources"),
    "wikimaniawiki": ("wikipedia", "wikimania"),
    "testwiki": ("wikipedia", "test"),
    "test2wiki": ("wikipedia", "test2"),
    "testcommonswiki": ("wikipedia", "testcommons"),
    "testwikidatawiki": ("wikipedia", "testwikidata"),
}
# Database-name suffix → project directory. Longest first, so "wikimedia" wins over "wiki".
_SUFFIXES = (
    ("wiktionary", "wiktionary"),
    ("wikiversity", "wikiversity"),
    ("wikivoyage", "wikivoyage"),
    ("wikisource", "wikisource"),
    ("wikimedia", "wikimedia"),
    ("wikibooks", "wikibooks"),
    ("wikiquote", "wikiquote"),
    ("wikinews", "wikinews"),
    ("wiki", "wikipedia"),
)
_BASE36 = re.compile(r"[0-9a-z]+")
_LANG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


class Kind(enum.Enum):
    """How a file type is scored."""

    RASTER = "raster"  # a still image we decode: the original, or a thumbnail when too large
    VECTOR = "vector"  # no raster original: always the rendered thumbnail
    DOCUMENT = "document"  # PDF, DjVu: the rendered first page (behind a setting)
    VIDEO = "video"  # the poster frame thumbnail (behind a setting)
    UNSCORABLE = "unscorable"  # audio, 3D models, XCF…: nothing we can score


@dataclass(frozen=True)
class FileType:
    kind: Kind
    mime: str
    thumb_prefix: str = ""  # handler parameters before "<width>px"
    thumb_infix: str = ""  # between "<width>px" and the name (video: "-")
    thumb_ext: str | None = None  # the thumbnail's own extension, when it differs


_JPEG = FileType(Kind.RASTER, "image/jpeg")
_TYPES = {
    "jpg": _JPEG,
    "jpeg": _JPEG,
    "jpe": _JPEG,
    "png": FileType(Kind.RASTER, "image/png"),
    "gif": FileType(Kind.RASTER, "image/gif"),
    "webp": FileType(Kind.RASTER, "image/webp", thumb_ext="png"),
    "tif": FileType(Kind.RASTER, "image/tiff", "lossy-page1-", thumb_ext="jpg"),
    "tiff": FileType(Kind.RASTER, "image/tiff", "lossy-page1-", thumb_ext="jpg"),
    "svg": FileType(Kind.VECTOR, "image/svg+xml", thumb_ext="png"),
    "pdf": FileType(Kind.DOCUMENT, "application/pdf", "page1-", thumb_ext="jpg"),
    "djvu": FileType(Kind.DOCUMENT, "image/vnd.djvu", "page1-", thumb_ext="jpg"),
    "djv": FileType(Kind.DOCUMENT, "image/vnd.djvu", "page1-", thumb_ext="jpg"),
    "webm": FileType(Kind.VIDEO, "video/webm", thumb_infix="-", thumb_ext="jpg"),
    "ogv": FileType(Kind.VIDEO, "video/ogg", thumb_infix="-", thumb_ext="jpg"),
    "mpg": FileType(Kind.VIDEO, "video/mpeg", thumb_infix="-", thumb_ext="jpg"),
    "mpeg": FileType(Kind.VIDEO, "video/mpeg", thumb_infix="-", thumb_ext="jpg"),
}
_UNSCORABLE = FileType(Kind.UNSCORABLE, "application/octet-stream")


def site_and_lang(db_name: str) -> tuple[str, str]:
    """``commonswiki`` → ``("wikipedia", "commons")``, ``enwiktionary`` → ``("wiktionary", "en")``,
    ``zh_min_nanwiki`` → ``("wikipedia", "zh-min-nan")``. ValueError for anything else."""
    if db_name in _SPECIAL_WIKIS:
        return _SPECIAL_WIKIS[db_name]
    for suffix, site in _SUFFIXES:
        lang = db_name.removesuffix(suffix)
        if lang != db_name:
            if lang and set(lang) <= _LANG_CHARS and lang[0].isalpha():
                return site, lang.replace("_", "-")
            break
    raise ValueError(f"not a Wikimedia wiki database name: {db_name!r}")


def file_name(title: str) -> str:
    """The file's name from its page title: no namespace prefix (in any language), underscores.

    A File page title always has its namespace's prefix (``File:``, ``Datei:``, ``Fichier:``…);
    the name itself may contain colons, so only the first one ends the prefix."""
    prefix, colon, name = title.partition(":")
    if not colon or not prefix or not name.strip():
        raise ValueError(f"not a prefixed file page title: {title!r}")
    return name.strip().replace(" ", "_")


def extension(name: str) -> str:
    return name.rpartition(".")[2].lower() if "." in name else ""


def file_type(name: str) -> FileType:
    return _TYPES.get(extension(name), _UNSCORABLE)


def hash_dirs(name: str) -> str:
    """``<m0>/<m0m1>`` of the name's MD5, the directories the file repo spreads files over."""
    digest = hashlib.md5(name.encode("utf-8"), usedforsecurity=False).hexdigest()
    return f"{digest[0]}/{digest[:2]}"


def _encode(name: str) -> str:
    # PHP's rawurlencode: everything but A-Z a-z 0-9 - _ . ~ is escaped, as UTF-8.
    return quote(name, safe="")


def original_url(base: str, db_name: str, name: str) -> str:
    site, lang = site_and_lang(db_name)
    return f"{base.rstrip('/')}/{site}/{lang}/{hash_dirs(name)}/{_encode(name)}"


def thumb_name(name: str, width: int) -> str:
    """The thumbnail's file name as the media handler of the name's type makes it."""
    kind = file_type(name)
    short = name
    if len(name.encode("utf-8")) > ABBREVIATE_OVER_BYTES:
        ext = extension(name)
        short = f"thumbnail.{ext}" if ext else "thumbnail"
    thumb = f"{kind.thumb_prefix}{width}px-{kind.thumb_infix}{short}"
    if kind.thumb_ext is not None and kind.thumb_ext != extension(name):
        thumb += f".{kind.thumb_ext}"
    return thumb


def thumb_url(base: str, db_name: str, name: str, width: int) -> str:
    """The standard-width thumbnail; ``base`` is the upload host or a wiki's own thumbnail host."""
    if width not in STANDARD_WIDTHS:
        raise ValueError(f"{width} is not a standard thumbnail width")
    site, lang = site_and_lang(db_name)
    return (
        f"{base.rstrip('/')}/{site}/{lang}/thumb/{hash_dirs(name)}/"
        f"{_encode(name)}/{_encode(thumb_name(name, width))}"
    )


def sha1_hex(base36: str) -> str:
    """MediaWiki's ``img_sha1`` (base 36, 31 digits) as the usual 40 hex digits."""
    # int() alone would also take signs, underscores and spaces.
    if not 1 <= len(base36) <= 31 or not _BASE36.fullmatch(base36):
        raise ValueError(f"not a base-36 SHA-1: {base36!r}")
    value = int(base36, 36)
    if value >= 1 << 160:
        raise ValueError(f"not a base-36 SHA-1: {base36!r}")
    return f"{value:040x}"


def sha1_base36(hex_digest: str) -> str:
    """The hex SHA-1 in MediaWiki's ``img_sha1`` form (base 36, zero-padded to 31 digits)."""
    value = int(hex_digest, 16)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while value:
        value, rest = divmod(value, 36)
        out = digits[rest] + out
    return out.rjust(31, "0")
