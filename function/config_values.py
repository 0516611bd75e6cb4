"""Parsers for configuration values: each takes the variable's text and returns the value, or
raises ``ValueError`` saying what was expected (``Settings.from_env`` adds the variable's name).
"""

from __future__ import annotations

from collections.abc import Callable

from function.wikimedia.filerepo import STANDARD_WIDTHS


def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true/false, got {raw!r}")


def positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(f"must be > 0, got {value}")
    return value


def byte_count(raw: str) -> int:
    """A byte count: plain digits, or with a Ki/Mi/Gi suffix as Kubernetes writes them."""
    text = raw.strip()
    for suffix, scale in (("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)):
        if text.endswith(suffix):
            return positive_int(text[: -len(suffix)]) * scale
    return positive_int(text)


def non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(f"must be >= 0, got {value}")
    return value


def non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"must be >= 0, got {raw!r}")
    return value


def positive_float(raw: str) -> float:
    value = non_negative_float(raw)
    if value == 0:
        raise ValueError("must be > 0")
    return value


def stripped(raw: str) -> str:
    return raw.strip()


def choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {raw!r}")
        return value

    return parse


def hosts(raw: str) -> tuple[str, ...]:
    names = tuple(h.strip().lower().rstrip(".") for h in raw.split(",") if h.strip())
    for host in names:
        if host.startswith("*") and not host.startswith("*."):
            raise ValueError(f"wildcards must look like '*.example.org', got {host!r}")
    return names


def exact_hosts(raw: str) -> tuple[str, ...]:
    names = hosts(raw)
    for host in names:
        if "*" in host:
            raise ValueError(f"exact host names only (no wildcards), got {host!r}")
    return names


def base_url(raw: str) -> str:
    url = raw.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if scheme.lower() not in ("http", "https") or not sep or not rest or "?" in rest:
        raise ValueError(f"expected an http(s) base URL, got {raw!r}")
    return url


def wiki_urls(raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        wiki, sep, url = item.partition("=")
        if not sep or not wiki.strip():
            raise ValueError(f"expected wiki=URL pairs, got {item!r}")
        pairs.append((wiki.strip(), base_url(url)))
    return tuple(pairs)


def standard_thumb_width(raw: str) -> int:
    value = int(raw)
    if value not in STANDARD_WIDTHS:
        widths = ", ".join(map(str, STANDARD_WIDTHS))
        raise ValueError(f"must be one of Wikimedia's standard widths ({widths}), got {value}")
    return value
