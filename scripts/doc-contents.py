#!/usr/bin/env python3
"""Writes (or rewrites) the '## Contents' section of markdown files from their headings.

    python3 scripts/doc-contents.py README.md docs/*.md

The section goes before the first '##' heading and lists every '##' section (and '###'
below it, indented), linked by GitHub's anchors; tests/test_docs.py checks the result.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{2,3})\s+(.*?)\s*#*\s*$")


def slug(heading: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def rewrite(text: str) -> str:
    lines = text.splitlines()
    fenced = False
    headings: list[tuple[int, int, str]] = []  # (line, level, text)
    for number, line in enumerate(lines):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := _HEADING.match(line)):
            headings.append((number, len(match.group(1)), match.group(2)))
    # Drop an existing Contents section (heading up to the next heading).
    existing = [
        i for i, (_, level, title) in enumerate(headings) if level == 2 and title == "Contents"
    ]
    if existing:
        start = headings[existing[0]][0]
        end = headings[existing[0] + 1][0] if existing[0] + 1 < len(headings) else len(lines)
        del lines[start:end]
        return rewrite("\n".join(lines) + "\n")
    if not headings:
        return text
    seen: dict[str, int] = {}
    entries = []
    for _, level, title in headings:
        anchor = slug(title)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        anchor = anchor if count == 0 else f"{anchor}-{count}"
        entries.append(f"{'  ' * (level - 2)}- [{title}](#{anchor})")
    first = headings[0][0]
    block = ["## Contents", "", *entries, ""]
    return "\n".join(lines[:first] + block + lines[first:]) + "\n"


def main(paths: list[str]) -> None:
    for name in paths:
        path = Path(name)
        path.write_text(rewrite(path.read_text()))


if __name__ == "__main__":
    main(sys.argv[1:])
