"""The README and docs/ as a reader meets them: short, links resolving, no tracker talk.

Model-free and fast, except the last test, which scores the README's upload example for real.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from flask import Flask

from function.wikimedia import filerepo
from tests.conftest import ROOT
from tests.imagehost import ImageHost
from tests.photos import photo_jpeg

README = ROOT / "README.md"
PAGES = sorted(
    [README, ROOT / "tests" / "README.md", ROOT / "convert" / "README.md"]
    + list((ROOT / "docs").glob("*.md"))
)
README_LIMIT = 9000


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
TRACKER = re.compile(r"\bissues?\s*#?\s*\d+", re.IGNORECASE)
JARGON = re.compile(r"\bthin margin\b", re.IGNORECASE)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _links(page: Path) -> Iterator[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    for match in LINK.finditer(text):
        yield match.group(1) or match.group(2)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return out


def test_readme_is_short() -> None:
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes; move detail into docs/"


def test_readme_starts_with_the_two_commands_ci_runs_one_of() -> None:
    text = README.read_text(encoding="utf-8")
    first_block = text.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands[:2] == ["make run", "make test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ci[-1] == "make test"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for link in _links(page):
        parts = urlsplit(link)
        if parts.scheme or link.startswith("mailto:"):
            continue
        target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
        if not target.is_relative_to(ROOT):
            broken.append(f"{link} (outside the repository)")
            continue
        if not target.exists():
            broken.append(link)
            continue
        if parts.fragment and target.suffix == ".md" and parts.fragment not in _anchors(target):
            broken.append(f"{link} (no such heading)")
    assert not broken, f"{_rel(page)}: broken links {broken}"


def test_anchor_rule_matches_github() -> None:
    page = ROOT / "docs" / "performance.md"
    assert "draft-decoding-vs-reference-mode" in _anchors(page)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_no_tracker_references_or_jargon(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    found = TRACKER.findall(text) + JARGON.findall(text)
    assert not found, f"{_rel(page)} speaks the project's internal language: {found}"


def _readme_upload_event() -> dict:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"-d '(\{\"event\".*?)'\n", text, re.DOTALL)
    assert match, "the README's upload example is gone"
    body = json.loads(match.group(1))
    assert isinstance(body, dict)
    return body


def test_readme_upload_example_is_a_recentchange_upload() -> None:
    event = _readme_upload_event()["event"]
    assert event["$schema"].startswith("/mediawiki/recentchange/")
    assert (event["type"], event["log_type"], event["namespace"]) == ("log", "upload", 6)


def test_readme_upload_example_is_scored(upload_app: Flask, image_host: ImageHost) -> None:
    body = _readme_upload_event()
    event = body["event"]
    name = filerepo.file_name(event["title"])
    url = filerepo.original_url(image_host.url(""), event["wiki"], name)
    image_host.file(urlsplit(url).path, photo_jpeg("astronaut", (320, 320)))
    answer = upload_app.test_client().post("/", json=body)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    scored = answer.get_json()
    assert scored["$schema"].startswith("/nsfwoid/image/scored/")
    assert 0.0 <= scored["score"] <= 1.0
    assert scored["page"]["page_title"] == "File:Example.jpg"
    assert scored["image"]["url"] == url
