"""docs/configuration.md, generated from the settings' field docs in ``function/config.py``.

python -m function.config_doc            print the page
python -m function.config_doc --write    write docs/configuration.md (``make docs``)
python -m function.config_doc --check    exit 1 if docs/configuration.md is not current
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields

from function.config import GROUPS, MIB, REPO_ROOT, Settings, Variable

PAGE = REPO_ROOT / "docs" / "configuration.md"
REGENERATE = "make docs"

INTRO = f"""\
# Configuration

<!-- Generated from function/config.py by `{REGENERATE}` (python -m function.config_doc --write):
     edit the field docs there, not this page. -->

Every setting is an environment variable, read once at start-up into one frozen `Settings`
(`function/config.py`, where each is documented beside its field). An unset or empty variable
keeps the default; a bad value stops the process with an error that names the variable.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def default_text(default: object, var: Variable) -> str:
    """The default as the page shows it: markdown, one line."""
    if var.shown_default is not None:
        return var.shown_default
    if default is None:
        return "*(none)*"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float):
        return f"`{default:g}`"
    if isinstance(default, int):
        if var.env.endswith("_BYTES") and default % MIB == 0:
            return f"`{default}` ({default // MIB} MiB)"
        return f"`{default}`"
    if default in ("", ()):
        return "*(empty)*"
    return f"`{default}`"


def render() -> str:
    rows: dict[str, list[str]] = {group: [] for group in GROUPS}
    for f in fields(Settings):
        var: Variable = f.metadata["variable"]
        if f.default is MISSING and var.shown_default is None:
            raise ValueError(f"{f.name}: a computed default needs shown_default for the docs")
        default = default_text(f.default, var)
        rows[var.group].append(f"| `{var.env}` | {_cell(default)} | {_cell(var.doc)} |")
    sections = [INTRO]
    for group, lines in rows.items():
        if lines:
            table = "\n".join(["| variable | default | meaning |", "|---|---|---|", *lines])
            sections.append(f"## {group}\n\n{table}\n")
    return "\n".join(sections)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m function.config_doc", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"write {PAGE.relative_to(REPO_ROOT)}")
    mode.add_argument("--check", action="store_true", help="exit 1 if the page is not current")
    args = parser.parse_args(argv)
    page = render()
    if args.write:
        PAGE.write_text(page, encoding="utf-8")
    elif args.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.is_file() else ""
        if current != page:
            print(f"{PAGE.relative_to(REPO_ROOT)} is stale: run `{REGENERATE}`", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
