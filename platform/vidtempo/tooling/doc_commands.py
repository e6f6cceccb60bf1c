"""The shell commands a page of the docs shows, as a reader would paste them: the ```bash fences of
a Markdown file (or of one of its sections), continuation lines joined, comments dropped, in the
page's order. The cluster rehearsal executes these (rehearsal.py); tests read them too.

    fenced_commands(Path("docs/cluster.md"))
    fenced_commands(Path("datasets/README.md"), section="Something-Something V1")
"""

from __future__ import annotations

import re
from pathlib import Path


def section_text(text: str, section: str | None) -> str:
    """The text under the heading that starts with `section` (to the next heading of its level or
    above); all of it when `section` is None."""
    if section is None:
        return text
    lines = text.splitlines(keepends=True)
    fenced, heads = False, []  # (line, level, title) of the headings outside fences
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"(#+)\s+(.*)", line)
        if m:
            heads.append((i, len(m.group(1)), m.group(2)))
    for n, (i, level, title) in enumerate(heads):
        if title.startswith(section):
            end = next((j for j, lv, _ in heads[n + 1 :] if lv <= level), len(lines))
            return "".join(lines[i + 1 : end])
    raise ValueError(f"no section starting with {section!r}")


def strip_comment(line: str) -> str:
    """`line` without a trailing `# …` comment (a `#` at a word's start, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def fenced_commands(path: str | Path, section: str | None = None) -> list[str]:
    """Each command of the page's ```bash (or ```sh) fences, as one line."""
    text = section_text(Path(path).read_text(), section)
    commands = []
    for block in re.findall(r"^```(?:bash|sh|shell)\n(.*?)^```", text, flags=re.S | re.M):
        for line in re.sub(r"\s*\\\n\s*", " ", block).splitlines():
            line = strip_comment(line).strip()
            if line:
                commands.append(line)
    return commands
