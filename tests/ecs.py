"""Reading the service's ECS JSON log lines in tests."""

from __future__ import annotations

import json
from typing import Any

REQUIRED = ("@timestamp", "log.level", "message", "ecs.version")


def field(entry: dict[str, Any], name: str) -> Any:
    """An ECS field by its dotted name, whether the line nests it or writes it dotted."""
    if name in entry:
        return entry[name]
    head, _, rest = name.partition(".")
    inner = entry.get(head)
    if rest and isinstance(inner, dict):
        return field(inner, rest)
    return None


def entries(text: str) -> list[dict[str, Any]]:
    """Every non-empty line as a JSON object with the fields ECS requires; fails otherwise."""
    parsed = []
    for line in text.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        missing = [name for name in REQUIRED if field(entry, name) is None]
        assert not missing, (missing, line)
        parsed.append(entry)
    return parsed
