"""Every link and file reference a reader can follow resolves inside the repository.

README.md, checkpoints/README.md and docs/*.md: relative Markdown links (with their #anchors) and
backticked repository paths; the package's docstrings and comments: repository paths
(``docs/solvers.md``, ``tests/test_er_sde.py``, ...). Nothing may point at working notes outside
the repository (``../shared``, ``reference/*.md``, ``DESIGN.md``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = [ROOT / "README.md", ROOT / "checkpoints" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = sorted((ROOT / "sampler_bench").rglob("*.py"))

#: A path into this repository: one of its top-level folders, then a file name with an extension.
REPO_PATH = re.compile(r"(?<![\w/.-])((?:docs|sampler_bench|tests|benchmarks|checkpoints|reports|scripts)/[\w./-]*\w\.(?:py|md|toml|json|txt|sqlite))\b")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
#: References to notes that are not part of the repository.
OUTSIDE = re.compile(r"\.\./shared|reference/(?:solvers|physics|field|papers)\.md|DESIGN\.md")
#: Lines that name a file of *another* repository (its owner/name or commit is on the line).
FOREIGN = re.compile(r"@ [0-9a-f]{7}|github\.com|\b[\w-]+/[\w-]+ @|``cld_jax/|Newbeeer/")


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("doc", MARKDOWN, ids=_rel)
def test_every_relative_link_of_the_markdown_resolves(doc):
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target}: no file {path}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {_rel(path)}")
    assert not broken, f"{_rel(doc)}: {broken}"


@pytest.mark.parametrize("doc", MARKDOWN, ids=_rel)
def test_every_repository_path_in_the_markdown_exists(doc):
    text = doc.read_text()
    missing = sorted({p for p in REPO_PATH.findall(text) if "*" not in p and not (ROOT / p).exists()})
    assert not missing, f"{_rel(doc)} names files that do not exist: {missing}"


def test_every_repository_path_in_a_docstring_or_comment_exists():
    missing = []
    for source in SOURCES:
        for n, line in enumerate(source.read_text().splitlines(), 1):
            if FOREIGN.search(line):
                continue
            missing += [f"{_rel(source)}:{n}: {p}" for p in REPO_PATH.findall(line) if not (ROOT / p).exists()]
    assert not missing, missing


def test_nothing_points_at_notes_outside_the_repository():
    found = []
    for path in [*MARKDOWN, *SOURCES, *sorted((ROOT / "tests").glob("*.py"))]:
        if path == Path(__file__).resolve():
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{_rel(path)}:{n}: {line.strip()[:100]}")
    assert not found, found


def test_the_link_checker_finds_a_broken_link_and_a_missing_file(tmp_path):
    """The checks above can fail: a made-up link, anchor and path are reported."""
    doc = tmp_path / "x.md"
    doc.write_text("# Title\n[a](missing.md) [b](#nowhere) [c](#title) see `docs/no_such_page.md`\n")
    targets = LINK.findall(doc.read_text())
    assert targets == ["missing.md", "#nowhere", "#title"]
    assert not (tmp_path / "missing.md").exists() and "nowhere" not in anchors(doc) and "title" in anchors(doc)
    assert REPO_PATH.findall(doc.read_text()) == ["docs/no_such_page.md"]
    assert OUTSIDE.search("see ../shared/DESIGN.md") and OUTSIDE.search("reference/solvers.md §3")


def test_every_registered_solver_has_its_update_rule_in_docs_solvers_md():
    import sampler_bench as sb

    text = (ROOT / "docs" / "solvers.md").read_text()
    missing = [n for n in sb.solvers.available() if f"**{n}**" not in text]
    assert not missing, f"docs/solvers.md has no entry (**name**: update rule, paper, order) for {missing}"
