"""The manual holds together: every relative link in the README and docs/ names a file that exists and, where it
has one, a heading of that file (GitHub's anchors); the README stays a short manual."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def prose(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


@cache
def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings (read once per page, however many links point at it)."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose(page.read_text()):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            out.add(base if count == 0 else f"{base}-{count}")
    return out


def test_slug_follows_github():
    assert slug("`make demo`, measured") == "make-demo-measured"
    assert slug("On the shipped base (2M images), at equal CPU minutes") == (
        "on-the-shipped-base-2m-images-at-equal-cpu-minutes"
    )
    assert slug("DPO and GRPO: every timestep, no reward gradient") == "dpo-and-grpo-every-timestep-no-reward-gradient"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path):
    broken = []
    for line in prose(page.read_text()):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(
                    f"{target}: no file {linked.relative_to(ROOT) if linked.is_relative_to(ROOT) else linked}"
                )
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{target}: no heading with anchor #{anchor} in {linked.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)} has broken links (fix the path or the heading):\n" + "\n".join(broken)


def test_readme_is_a_short_manual():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move measurements into docs/ (150 at most)"


def test_no_issue_numbers():
    """Code and docs say what a thing does or which target it meets, never which tracker issue asked for it."""
    pattern = re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE)
    files = [*PAGES, ROOT / "Makefile"]
    for folder in ("itercomp", "bench", "recipes", "tests"):
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in {".py", ".md", ".yaml", ".yml", ".toml"}]
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, "issue numbers in code or docs (say what the thing does instead):\n" + "\n".join(hits)
