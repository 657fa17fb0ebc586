#!/usr/bin/env python
"""Copy the generated benchmark pages into docs/BENCHMARKS.md, so the overview never drifts from them.

Each section of ``docs/BENCHMARKS.md`` whose second paragraph reads
``*Written by `scripts/<x>.py` into `docs/<PAGE>.md`; included here verbatim.*`` is replaced, up to the next
``## <n>.`` section, by the current text of ``docs/<PAGE>.md``, its headings moved so that its top heading
is level 3 (under the ``## <n>.`` section).
Everything else is left alone.

    python scripts/assemble_benchmarks.py            # rewrite docs/BENCHMARKS.md in place
    python scripts/assemble_benchmarks.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
INCLUDE = re.compile(r"^\*Written by `[^`]+` into `docs/(?P<page>[\w.-]+\.md)`; included here verbatim\.\*$")
SECTION = re.compile(r"^## \d+\. ")


def _shifted(text: str) -> str:
    """The page with its headings moved so its top heading is level 3 (outside fenced code blocks)."""
    lines, fenced, heading = text.rstrip("\n").splitlines(), False, []
    for line in lines:
        fenced = not fenced if line.startswith("```") else fenced
        heading.append(not fenced and re.match(r"^#+ ", line) is not None)
    top = min((len(line) - len(line.lstrip("#")) for line, h in zip(lines, heading) if h), default=3)
    shift = "#" * max(0, 3 - top)
    return "\n".join(shift + line if h else line for line, h in zip(lines, heading))


def assemble(overview: str, docs: Path = DOCS) -> str:
    lines = overview.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        m = INCLUDE.match(line)
        i += 1
        if not m:
            continue
        page = docs / m.group("page")
        if not page.is_file():
            raise SystemExit(f"{page} does not exist: run the benchmark that writes it first")
        while i < len(lines) and not SECTION.match(lines[i]):  # drop the old copy
            i += 1
        out += ["", _shifted(page.read_text()), ""]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report whether docs/BENCHMARKS.md is up to date")
    args = ap.parse_args(argv)
    path = DOCS / "BENCHMARKS.md"
    old = path.read_text()
    new = assemble(old)
    if args.check:
        print("up to date" if new == old else "docs/BENCHMARKS.md is out of date: run scripts/assemble_benchmarks.py")
        return 0 if new == old else 1
    path.write_text(new)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
