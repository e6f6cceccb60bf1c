"""The docs' cross-references resolve inside the repository: every Markdown link (file and
#anchor), every backticked path of the repository's folders, every `../` path, and every quoted
section a page cites of another ("BENCHMARKS.md, "9. The test suite …"")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "datasets" / "README.md",
         *sorted((ROOT / "docs").glob("*.md"))]  # fmt: skip
FOLDERS = ("docs/", "jobs/", "platform/", "tests/", "datasets/", "cuda/", ".ci/")


def headings(page: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return [m.group(1).strip() for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def inside(path: Path) -> bool:
    return path.resolve() == ROOT or ROOT in path.resolve().parents


def problems(page: Path) -> list[str]:
    text, found = page.read_text(), []
    for m in re.finditer(r"\]\(([^)\s]+)\)", text):
        target = m.group(1)
        if re.match(r"[a-z]+:", target):
            continue  # a URL
        path, _, anchor = target.partition("#")
        file = (page.parent / path) if path else page
        if not (file.exists() and inside(file)):
            found.append(f"link {target}: no such file in the repository")
        elif anchor and file.suffix == ".md" and anchor not in {slug(h) for h in headings(file)}:
            found.append(f"link {target}: {file.name} has no such section")
    folders = "|".join(map(re.escape, FOLDERS))
    for m in re.finditer(r"`((?:\.\./)+[\w./-]+|(?:" + folders + r")[\w./:-]*)`", text):
        path, _, test = m.group(1).rstrip(".").partition("::")  # tests/test_x.py::test_name
        base = page.parent if path.startswith("../") else ROOT
        if not ((base / path).exists() and inside(base / path)):
            found.append(f"path {path}: not in the repository")
        elif test and f"def {test}(" not in (base / path).read_text():
            found.append(f"path {path}::{test}: no such test")
    for m in re.finditer(r"(\b[\w/]+\.md),? \"([^\"]{3,80})\"", text):
        name, section = m.group(1), " ".join(m.group(2).split())  # across a line break
        file = next((p for p in (page.parent / name, ROOT / name, ROOT / "docs" / name)
                     if p.exists()), None)  # fmt: skip
        if file is None:
            found.append(f"section {name} \"{section}\": no such page")
        elif not any(h.startswith(section.rstrip(".…")) or section in h for h in headings(file)):
            found.append(f"section {name} \"{section}\": no such heading")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cross_references_resolve(page):
    assert problems(page) == []


def test_section_citations_name_a_section_of_the_repository():
    """A "PAGE.md §N" in code, configs or docs names a page of this repository and one of its
    numbered sections ("## N. …"); a bare "§N" has no page to name."""
    import subprocess

    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")  # fmt: skip
    found = []
    for name in filter(None, files):
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".yaml", ".yml", ".cu", ".cpp", ".h", ""} or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for m in re.finditer(r"(?:(\b[\w/]+\.md)[ ,]+)?§\s?(\d+(?:\.\d+)*)", text):
            line = text.count("\n", 0, m.start()) + 1
            page, number = m.group(1), m.group(2)
            target = next((p for p in (ROOT / (page or "-"), ROOT / "docs" / (page or "-"))
                           if page and p.is_file()), None)  # fmt: skip
            if target is None:
                found.append(f"{name}:{line}: §{number} of {page or 'no page'}")
            elif not any(h.startswith(f"{number}. ") or h.startswith(f"{number} ")
                         for h in headings(target)):  # fmt: skip
                found.append(f"{name}:{line}: {page} has no section {number}")
    assert found == []


def test_the_reference_names_every_run_setting_and_variable():
    """docs/reference.md has a row for every `run.*` field of the config and every VIDTEMPO_*
    variable the code reads, and the words a newcomer asks about."""
    import dataclasses

    from vidtempo.config import RunConfig

    text = (ROOT / "docs" / "reference.md").read_text()
    for field in dataclasses.fields(RunConfig):
        assert f"`run.{field.name}`" in text, field.name
    code = " ".join(p.read_text() for p in (ROOT / "platform").rglob("*.py")) + (ROOT / "setup.py").read_text()
    names = set(re.findall(r"VIDTEMPO_[A-Z_]*[A-Z]", code))
    for name in sorted(n for n in names if not any(m != n and m.startswith(n) for m in names)):
        assert f"`{name}`" in text, name  # (a prefix the code matches on is not a variable)
    for word in ("pre-flight", "rung", "trial-epoch", "2x3", "8x4", "C++ compiler", "8 GB"):
        assert word in text, word
