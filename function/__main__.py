"""``python -m function PATH_OR_URL…``: score files and URLs from a shell, one JSON line each.

The same Pipeline as the service (same model, same preprocessing, same guards), loaded in
this process; nothing is sent to a server. Exit status 1 if any input failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from function.config import PREPROCESSING_MODES, RUNTIMES, ConfigError, Settings, variables
from function.errors import ScoringError
from function.logs import configure_logging
from function.pipeline import Source
from function.service import Service


def _default(name: str) -> str:
    return f"default: {variables()[name].env} or {getattr(Settings(), name)!r}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m function",
        description="Score images (files or http(s) URLs) with open_nsfw; one JSON line each.",
    )
    parser.add_argument("inputs", nargs="+", metavar="PATH_OR_URL")
    parser.add_argument(
        "--preprocessing",
        choices=PREPROCESSING_MODES,
        default=None,
        help=_default("preprocessing"),
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=None,
        help=_default("runtime"),
    )
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    return parser


def _source(item: str) -> Source:
    if item.startswith(("http://", "https://")) or "://" in item:
        return Source(url=item)
    return Source(data=Path(item).read_bytes())


def _progress(items: Sequence[str], stream: TextIO, enabled: bool) -> Iterable[str]:
    if not enabled or len(items) < 2 or not stream.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, file=stream, unit="image", leave=False)


def run(argv: Sequence[str], environ: dict[str, str], out: TextIO, err: TextIO) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=err)
        return 2
    if args.runtime:
        settings = replace(settings, runtime=args.runtime)
    # stdout carries the results; logs (warnings and worse) go to stderr.
    configure_logging("WARNING", err)
    service = Service(settings)
    service.start(wait=True)
    if not service.model.ready:
        print(f"model failed to load: {service.load_error}", file=err)
        return 2
    failed = 0
    try:
        for item in _progress(args.inputs, err, not args.no_progress):
            line: dict[str, Any] = {"source": item}
            try:
                line |= service.pipeline.score(_source(item), mode=args.preprocessing)
            except ScoringError as exc:
                failed += 1
                line["error"] = {"code": exc.code, "message": exc.message, "status": exc.status}
            except OSError as exc:  # a path that cannot be read
                failed += 1
                line["error"] = {"code": "unreadable_file", "message": exc.strerror or str(exc)}
            out.write(json.dumps(line) + "\n")
            out.flush()
    finally:
        service.stop()
    return 1 if failed else 0


def main() -> None:
    sys.exit(run(sys.argv[1:], dict(os.environ), sys.stdout, sys.stderr))


if __name__ == "__main__":
    main()
