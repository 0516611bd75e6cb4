"""Wikimedia's service-checker, re-implemented from its documented behaviour for tests.

The real tool (``service-checker-swagger``, GPL, not on PyPI) fetches the OpenAPI document at
``/?spec``, runs every ``x-amples`` example of every ``get``/``post`` operation against the
live service, and prints Nagios-style results. This module follows the rules recorded in
shared/wikimedia/SOURCES.md section 3, point by point, so that a test can tell whether the real
checker would call the service healthy:

* spec: ``GET {service}{spec_path}``, JSON else YAML, a mapping with ``paths``; the base path
  is ``servers[0].url`` (else ``basePath``) glued on as a plain string;
* probed: ``get`` and ``post`` without ``x-monitor: false``; a ``get`` without ``x-amples``
  once as a bare GET expecting 200; a ``post`` without them not at all;
* an example is merged over ``{request: {}, response: {status: 200}, title: Untitled test}``
  one top-level key at a time (a ``response`` without ``status`` is a KeyError: CRITICAL);
* URL templates ``{x}``, ``{/x}``, ``{+x}`` from ``params`` then ``x-default-params``,
  ``quote_plus``-encoded, a missing one empty; GET ``query`` over ``x-default-query``;
* POST bodies by the ``Content-Type`` key: JSON-dumped, raw, or else form-encoded;
* status equal; headers and leaves equal-or-prefix or ``/regex/`` (``re.search``); leaves
  compared as ``str(value)``; a one-element expected list checks every actual element;
* all checks concurrently, within an overall budget (8 s); no redirects; one retry.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

import urllib3
import yaml

OK, WARNING, CRITICAL = 0, 1, 2
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL"}
USER_AGENT = "ServiceChecker-WMF/0.1.2"
DEFAULT = {"request": {}, "response": {"status": 200}, "title": "Untitled test"}
_TEMPLATE = re.compile(r"\{([/+]?)([^}]+)\}")


class BodyMismatch(Exception):
    """A WARNING: the answer came, with the wrong content."""


class Critical(Exception):
    """A CRITICAL: wrong status or header."""


@dataclass(frozen=True)
class Check:
    path: str  # the path as written in the document (messages name it so)
    method: str
    example: dict[str, Any]

    @property
    def title(self) -> str:
        return str(self.example["title"])


@dataclass
class Result:
    code: int
    output: str
    checks: list[Check] = field(default_factory=list)


def fetch_spec(pool: urllib3.PoolManager, base: str, host: str, spec_path: str) -> dict:
    """The document at the spec path, as the tool reads it (failures raise, as its do)."""
    response = pool.request("GET", base + spec_path, headers=_headers(host), redirect=False)
    text = response.data.decode("utf-8")
    try:
        spec = json.loads(text)
    except ValueError:
        spec = yaml.safe_load(text)
    if not isinstance(spec, dict) or "paths" not in spec:
        raise ValueError(f"no spec with paths at {spec_path}")
    return spec


def checks(spec: dict[str, Any]) -> list[Check]:
    found = []
    for path, item in spec["paths"].items():
        for method in ("get", "post"):
            operation = (item or {}).get(method)
            if operation is None or operation.get("x-monitor", True) is False:
                continue
            examples = operation.get("x-amples") or ([{}] if method == "get" else [])
            for example in examples:
                found.append(Check(path, method.upper(), {**DEFAULT, **example}))
    return found


def expand(template: str, params: dict[str, Any]) -> str:
    def one(match: re.Match[str]) -> str:
        operator, name = match.groups()
        value = params.get(name)
        if operator == "+":
            values = value if isinstance(value, list) else [] if value is None else [value]
            return "/".join(quote_plus(str(v)) for v in values)
        text = "" if value is None else quote_plus(str(value))
        return ("/" + text if text else "") if operator == "/" else text

    return _TEMPLATE.sub(one, template)


def matches(expected: Any, actual: Any) -> bool:
    """One value: ``/regex/`` searched, else equal or a prefix, on ``str()`` of both."""
    expected, actual = str(expected), str(actual)
    if len(expected) > 1 and expected.startswith("/") and expected.endswith("/"):
        return re.search(expected.strip("/"), actual) is not None
    return actual == expected or actual.startswith(expected)


def compare_body(expected: Any, actual: Any, where: str = "") -> None:
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            raise BodyMismatch(f"responds with a {type(actual).__name__} at path {where or '/'}")
        for key, value in expected.items():
            if key not in actual:
                raise BodyMismatch(f"responds with a missing key at path {where}/{key}")
            compare_body(value, actual[key], f"{where}/{key}")
    elif isinstance(expected, list):
        if not isinstance(actual, list):
            raise BodyMismatch(f"responds with a {type(actual).__name__} at path {where or '/'}")
        if len(expected) == 1 and len(actual) > 1:
            pairs = [(expected[0], item) for item in actual]
        elif len(expected) != len(actual):
            raise BodyMismatch(f"responds with a list of unexpected length at path {where}")
        else:
            pairs = list(zip(expected, actual, strict=True))
        for index, (wanted, item) in enumerate(pairs):
            compare_body(wanted, item, f"{where}/{index}")
    elif expected is not None and not matches(expected, actual):
        raise BodyMismatch(f"responds with unexpected value at path {where} => {actual}")


def _headers(host: str, extra: dict[str, Any] | None = None) -> dict[str, str]:
    return {"Host": host, "User-Agent": USER_AGENT, **{k: str(v) for k, v in (extra or {}).items()}}


def _send(pool: urllib3.PoolManager, check: Check, base: str, host: str, spec: dict) -> Any:
    request = check.example["request"]
    params = {**spec.get("x-default-params", {}), **request.get("params", {})}
    url = base + _base_path(spec) + expand(check.path, params)
    headers = _headers(host, request.get("headers"))
    if check.method == "GET":
        query = {**spec.get("x-default-query", {}), **request.get("query", {})}
        if query:
            url += "?" + urlencode(query)
        return pool.request("GET", url, headers=headers, redirect=False)
    body = request.get("body")
    content_type = str(request.get("headers", {}).get("Content-Type", "")).lower()
    if content_type == "application/json":
        data = json.dumps(body).encode()
    elif content_type == "application/octet-stream":
        raw = json.dumps(body) if isinstance(body, dict | list) else body
        data = raw.encode("utf-8") if isinstance(raw, str) else raw
    else:  # urllib3's request_encode_body: form-urlencoded, not multipart
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        data = urlencode(body or {}).encode()
    return pool.request("POST", url, body=data, headers=headers, redirect=False)


def _base_path(spec: dict[str, Any]) -> str:
    servers = spec.get("servers") or []
    base = servers[0].get("url", "") if servers else spec.get("basePath", "")
    return str(base).rstrip("/")


def run_check(pool: urllib3.PoolManager, check: Check, base: str, host: str, spec: dict) -> tuple:
    """(level, message) for one example, with the tool's wording."""
    try:
        wanted = check.example["response"]
        response = _send(pool, check, base, host, spec)
        if response.status != wanted["status"]:
            message = f"returned the unexpected status {response.status}"
            raise Critical(f"{message} (expecting: {wanted['status']})")
        for name, value in (wanted.get("headers") or {}).items():
            actual = response.headers.get(name)
            if actual is None or not matches(value, actual):
                raise Critical(f"has header {name} with value {actual} (expecting: {value})")
        if "body" in wanted:
            text = response.data.decode("utf-8")
            if isinstance(wanted["body"], dict | list):
                compare_body(wanted["body"], json.loads(text))
            elif wanted["body"] is not None and not matches(wanted["body"], text):
                raise BodyMismatch(f"responds with unexpected body: {text[:200]}")
    except BodyMismatch as problem:
        return WARNING, f"Test {check.title} {problem}"
    except Critical as problem:
        return CRITICAL, f"Test {check.title} {problem}"
    except Exception as problem:  # connection errors, malformed JSON, a KeyError, ...
        return CRITICAL, f"Test {check.title} generic error: {problem}"
    return OK, ""


def run(
    host_ip: str,
    service_url: str,
    *,
    spec: dict[str, Any] | None = None,
    spec_path: str = "/?spec",
    timeout: float = 5,
    budget: float = 8,
) -> Result:
    """``service-checker-swagger -t TIMEOUT [-s SPEC_PATH] HOST_IP SERVICE_URL``; ``spec``
    replaces the served document (to try modified copies of it)."""
    parts = urlsplit(service_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    base = f"{parts.scheme}://{host_ip}:{port}{parts.path.rstrip('/')}"
    host = parts.hostname or host_ip
    pool = urllib3.PoolManager(timeout=timeout, retries=urllib3.Retry(1, redirect=False))
    try:
        try:
            document = spec if spec is not None else fetch_spec(pool, base, host, spec_path)
        except Exception as problem:  # the tool dies with a traceback: exit 1
            return Result(1, f"Traceback: could not read the spec: {problem!r}")
        found = checks(document)
        # Not a ``with`` block: leaving one waits for every thread, budget or not.
        executor = ThreadPoolExecutor(max_workers=max(len(found), 1))
        futures = [executor.submit(run_check, pool, c, base, host, document) for c in found]
        wait(futures, timeout=budget)
        outcomes = []
        for check, future in zip(found, futures, strict=True):
            if future.done():
                outcomes.append((check, *future.result()))
            else:
                message = f"Test {check.title} timed out before a response was received"
                outcomes.append((check, CRITICAL, message))
        executor.shutdown(wait=False, cancel_futures=True)
    finally:
        pool.clear()
    failed = [(c, level, message) for c, level, message in outcomes if level != OK]
    if not failed:
        return Result(OK, "All endpoints are healthy", found)
    worst = max(level for _, level, _ in failed)
    lines = [f"{c.path} ({c.title}) is {NAMES[level]}: {m}" for c, level, m in failed]
    return Result(worst, "; ".join(lines), found)


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def unanchored_numbers(spec: dict[str, Any]) -> list[str]:
    """Expected JSON-body leaves that would pass a wrong number: a plain number or numeric text
    is an equal-*or-prefix* match (``0`` passes ``0.93``), and so is a regex without both
    anchors. The real tool calls such a service healthy; this finds them in the document."""
    problems = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}/{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{where}/{index}")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            problems.append(f"{where}: the number {value} is matched as a prefix")
        elif isinstance(value, str) and _NUMBER.fullmatch(value):
            problems.append(f"{where}: {value!r} is matched as a prefix")
        elif isinstance(value, str) and len(value) > 1 and value[0] == value[-1] == "/":
            pattern = value.strip("/")
            if not (pattern.startswith("^") and pattern.endswith("$")):
                problems.append(f"{where}: the regex {value} is not anchored at both ends")

    for check in checks(spec):
        body = check.example.get("response", {}).get("body")
        if isinstance(body, dict | list):
            walk(body, f"{check.method} {check.path} ({check.title}) body")
    return problems
