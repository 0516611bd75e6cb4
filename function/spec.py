"""The OpenAPI document: written in YAML, served as JSON.

The image renders the JSON once at build time (``python -m function.spec --out ...``), so a cold
start neither parses YAML nor needs PyYAML for it. A checkout without the rendered file (or with
one older than the YAML) renders on first use instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SPEC_YAML = Path(__file__).with_name("openapi.yaml")
SPEC_JSON = SPEC_YAML.with_suffix(".json")


def render(source: Path = SPEC_YAML) -> str:
    import yaml  # only where nothing was rendered at build time

    return json.dumps(yaml.safe_load(source.read_text(encoding="utf-8")))


def openapi_json(source: Path = SPEC_YAML, rendered: Path = SPEC_JSON) -> str:
    """The rendered document when it is present and not older than the YAML, else a fresh one."""
    try:
        if rendered.stat().st_mtime >= source.stat().st_mtime:
            return rendered.read_text(encoding="utf-8")
    except FileNotFoundError:
        pass
    return render(source)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render function/openapi.yaml to JSON.")
    parser.add_argument("--out", type=Path, default=SPEC_JSON)
    args = parser.parse_args(argv)
    args.out.write_text(render(), encoding="utf-8")


if __name__ == "__main__":
    main()
