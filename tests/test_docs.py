"""The README stays a short guide with a table of contents, and no link in it or in docs/
leads nowhere: every relative link names a file that exists and, for a heading anchor in
one of our markdown files, a heading that exists (as GitHub spells its anchor)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
README_MAX_LINES = 420

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE_CODE = re.compile(r"`+[^`]*`+")
# [text](target) and ![alt](target); the text may hold inline code but no brackets.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a '#' in a shell block is no heading)."""
    lines: list[str] = []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def _headings(text: str) -> list[Heading]:
    found = []
    for line in _prose_lines(text):
        match = _HEADING.match(line)
        if match:
            found.append(Heading(len(match.group(1)), match.group(2)))
    return found


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation gone, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    """Every heading anchor of a file; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in _headings(path.read_text()):
        slug = _slug(heading.text)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _links(text: str) -> list[str]:
    links = []
    for line in _prose_lines(text):
        links.extend(_LINK.findall(_INLINE_CODE.sub("", line)))
    return links


def _contents(path: Path) -> list[str]:
    """The link targets listed under the file's '## Contents' heading."""
    lines = _prose_lines(path.read_text())
    start = lines.index("## Contents")
    targets = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        targets.extend(_LINK.findall(line))
    return targets


def test_readme_is_a_short_guide() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines"


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.relative_to(REPO).as_posix())
def test_contents_come_first_and_list_every_section(path: Path) -> None:
    headings = _headings(path.read_text())
    sections = [h for h in headings if h.level == 2]
    assert sections and sections[0].text == "Contents", "no '## Contents' before the first section"
    listed = _contents(path)
    assert all(target.startswith("#") for target in listed)
    # Every section is listed, in order; the anchors resolving is the next test's job.
    expected = [f"#{_slug(h.text)}" for h in sections[1:]]
    assert [t for t in listed if t in expected] == expected


def _broken_links(path: Path, root: Path = REPO) -> list[str]:
    broken = []
    for target in _links(path.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto: ...: not ours to check here
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists() or not linked.is_relative_to(root):
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no such heading in {linked.relative_to(root)}")
    return broken


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(path: Path) -> None:
    broken = _broken_links(path)
    assert not broken, f"{path.relative_to(REPO)}: " + "; ".join(broken)


def test_the_checks_see_what_is_wrong(tmp_path: Path) -> None:
    # The tests above pass on our files; this shows that what they rest on can fail.
    (tmp_path / "other.md").write_text("# Other\n\n## Yes\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# T\n\n## Contents\n\n- [A `b`, c](#a-b-c)\n\n## A `b`, c\n\n```sh\n# no\n```\n"
        "[ok](other.md#yes) [gone](missing.md) [no anchor](other.md#no) `[code](x.md)`\n"
    )
    assert _anchors(page) == {"t", "contents", "a-b-c"}
    assert _contents(page) == ["#a-b-c"]
    assert _broken_links(page, tmp_path) == [
        "missing.md: no such file",
        "other.md#no: no such heading in other.md",
    ]
