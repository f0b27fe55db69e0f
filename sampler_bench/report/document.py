"""The report as data: a flat list of blocks that the Markdown and HTML writers both render.

Building the content once and rendering it twice keeps report.md and report.html in step: a
number, a footnote or a figure cannot appear in one and be missing from the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Heading:
    level: int  # 1 = report title, 2 = model section, 3 = subsection
    text: str
    anchor: str = ""  # id for links from the table of contents


@dataclass(frozen=True)
class Paragraph:
    text: str  # plain text; writers escape it


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class TableCell:
    text: str
    best: bool = False  # the best value of its column (bold / highlighted)
    note: int | None = None  # footnote number (1-based) of the table's ``notes``


@dataclass(frozen=True)
class Table:
    """A table whose first ``label_columns`` columns are labels and the rest numbers."""

    columns: tuple[str, ...]
    rows: tuple[tuple[TableCell, ...], ...]
    notes: tuple[str, ...] = ()
    caption: str = ""
    label_columns: int = 1


@dataclass(frozen=True)
class Figure:
    name: str  # file name (``<name>.png``), unique within a report
    png: bytes  # while the report is assembled, a ``drawing.Drawing`` (drawn at the end, see build.draw_figures)
    caption: str
    alt: str = ""


@dataclass(frozen=True)
class Details:
    """A collapsible block of verbatim text (a spec TOML, a JSON blob, a cell index)."""

    summary: str
    text: str = ""
    language: str = ""
    table: Table | None = None  # a table instead of verbatim text


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> None:
        self.blocks.extend(blocks)

    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]

    def headings(self) -> list[Heading]:
        return [b for b in self.blocks if isinstance(b, Heading) and b.level > 1]


def slug(text: str) -> str:
    """A file- and anchor-safe name: lower case letters, digits and dashes."""
    out = []
    for ch in str(text).lower():
        out.append(ch if ch.isascii() and ch.isalnum() else "-")
    s = "-".join(part for part in "".join(out).split("-") if part)
    return s or "x"
