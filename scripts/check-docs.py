#!/usr/bin/env python3
"""`make check-docs`: every relative link in README.md and docs/**/*.md
resolves, and README.md stays short.

A link resolves when the file (or folder) it names exists, relative to the
page that holds it, and its `#anchor`, if any, is the slug of a heading of
the page it names (GitHub's slugs: lowercase, punctuation other than `-`
and `_` dropped, spaces to `-`, a repeated heading numbered `-1`, `-2`,
...). Links with a scheme (https:, mailto:) are not followed. Exits 1
listing file:line of each broken link.

Usage: scripts/check-docs.py [ROOT]   (ROOT: the repository, default its own)
"""

import re
import sys
from pathlib import Path
from urllib.parse import unquote

README_MAX_LINES = 250

# [text](target) and ![alt](target), the text possibly over several lines;
# the target may carry a title: [text](target "title").
INLINE_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
# [label]: target
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
FENCE = re.compile(r"^ {0,3}(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def slug(heading):
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"<[^>]+>", "", heading)                    # inline HTML
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)    # links: their text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)                       # punctuation but - and _
    return text.replace(" ", "-")


def blank_fences(text):
    """The text with fenced code blocks blanked out (lines kept, so offsets
    still give line numbers)."""
    out = []
    fenced = None
    for line in text.split("\n"):
        m = FENCE.match(line)
        if fenced:
            if m and m.group(1) == fenced:
                fenced = None
            out.append("")
        elif m:
            fenced = m.group(1)
            out.append("")
        else:
            out.append(line)
    return "\n".join(out)


# Inline code: a run of backticks up to the same run, within a paragraph.
CODE_SPAN = re.compile(r"(`+)((?:(?!\n[ \t]*\n).)+?)\1", re.DOTALL)


def blank_code(text):
    """The text with fenced blocks and inline code spans blanked out."""
    return CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), blank_fences(text))


_ANCHORS = {}


def anchors(path):
    """The anchors a page's headings make."""
    cache = _ANCHORS
    if path not in cache:
        seen = {}
        found = set()
        for line in blank_fences(path.read_text(encoding="utf-8")).split("\n"):
            m = HEADING.match(line)
            if not m:
                continue
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        cache[path] = found
    return cache[path]


def check_page(page, root):
    problems = []
    text = blank_code(page.read_text(encoding="utf-8"))
    targets = [(m.start(), m.group(2)) for m in INLINE_LINK.finditer(text)]
    targets += [(m.start(), m.group(1)) for m in REFERENCE_DEF.finditer(text)]
    for offset, target in sorted(targets):
        line = text.count("\n", 0, offset) + 1
        where = f"{page.relative_to(root)}:{line}"
        if not target or SCHEME.match(target) or target.startswith("//"):
            if not target:
                problems.append(f"{where}: empty link")
            continue
        path_part, _, anchor = target.partition("#")
        path_part, anchor = unquote(path_part), unquote(anchor)
        if path_part:
            dest = (root / path_part.lstrip("/")) if path_part.startswith("/") else (page.parent / path_part)
            try:
                dest = dest.resolve()
                dest.relative_to(root)
            except ValueError:
                problems.append(f"{where}: {target}: leaves the repository")
                continue
            if not dest.exists():
                problems.append(f"{where}: {target}: no such file")
                continue
        else:
            dest = page
        if anchor:
            if dest.is_dir() or dest.suffix.lower() != ".md":
                problems.append(f"{where}: {target}: an anchor into a file that is not markdown")
            elif anchor not in anchors(dest):
                problems.append(f"{where}: {target}: no heading #{anchor} in {dest.relative_to(root)}")
    return problems


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent).resolve()
    readme = root / "README.md"
    pages = [readme] + sorted((root / "docs").glob("**/*.md"))
    problems = []
    for page in pages:
        if page.exists():
            problems += check_page(page, root)
        else:
            problems.append(f"{page.relative_to(root)}: missing")
    lines = len(readme.read_text(encoding="utf-8").splitlines()) if readme.exists() else 0
    if lines > README_MAX_LINES:
        problems.append(f"README.md: {lines} lines; at most {README_MAX_LINES} (move detail into docs/)")
    for p in problems:
        print(p)
    if problems:
        print(f"check-docs: {len(problems)} problem(s) in {len(pages)} page(s)", file=sys.stderr)
        return 1
    print(f"check-docs: {len(pages)} pages, every relative link resolves; README.md {lines} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
