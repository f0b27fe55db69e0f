"""report.md: GitHub-flavoured Markdown, figures as PNG files in ``figures/`` next to it (relative links)."""

from __future__ import annotations

import html
from pathlib import Path

from .document import Bullets, Details, Document, Figure, Heading, Paragraph, Table

FIGURE_DIR = "figures"


def _escape(text: str) -> str:
    """Escape the characters that would end a table cell or start emphasis/HTML."""
    for ch in ("\\", "|", "*", "`", "<", ">"):
        text = text.replace(ch, "\\" + ch)
    return text.replace("\n", " ")


def _table(table: Table) -> list[str]:
    def cell(c) -> str:
        text = _escape(c.text)
        if c.best and text:
            text = f"**{text}**"
        if c.note is not None:
            text += f" [{c.note}]"
        return text

    lines = []
    if table.caption:
        lines += [f"_{_escape(table.caption)}_", ""]
    lines.append("| " + " | ".join(_escape(c) for c in table.columns) + " |")
    lines.append("|" + "|".join(":---" if i < table.label_columns else "---:" for i in range(len(table.columns))) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    if table.notes:
        lines.append("")
        lines += [f"[{i}] {_escape(n)}  " for i, n in enumerate(table.notes, 1)]
    return lines


def to_markdown(doc: Document) -> str:
    """The Markdown text; figures are referenced as ``figures/<name>.png``."""
    lines = [f"# {_escape(doc.title)}", ""]
    heads = doc.headings()
    if heads:
        lines.append("Contents:")
        lines.append("")
        for h in heads:
            lines.append(f"{'  ' * (h.level - 2)}- [{_escape(h.text)}](#{h.anchor})")
        lines.append("")
    for block in doc.blocks:
        if isinstance(block, Heading):
            if block.level == 1:
                continue
            if block.anchor:
                lines.append(f'<a id="{block.anchor}"></a>')
                lines.append("")
            lines += [f"{'#' * block.level} {_escape(block.text)}", ""]
        elif isinstance(block, Paragraph):
            lines += [_escape(block.text), ""]
        elif isinstance(block, Bullets):
            lines += [f"- {_escape(item)}" for item in block.items] + [""]
        elif isinstance(block, Table):
            lines += _table(block) + [""]
        elif isinstance(block, Figure):
            lines += [f"![{_escape(block.alt or block.caption)}]({FIGURE_DIR}/{block.name}.png)", "",
                      f"_{_escape(block.caption)}_", ""]
        elif isinstance(block, Details):
            lines += ["<details>", f"<summary>{html.escape(block.summary)}</summary>", ""]
            if block.table is not None:
                lines += _table(block.table)
            else:
                fence = "~~~~" if "```" in block.text else "```"
                lines += [f"{fence}{block.language}", block.text, fence]
            lines += ["", "</details>", ""]
        else:
            raise TypeError(f"unknown report block {type(block).__name__}")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_markdown(doc: Document, out_dir: Path) -> tuple[Path, list[Path]]:
    """Write ``report.md`` and ``figures/*.png``; returns (report path, figure paths)."""
    out_dir = Path(out_dir)
    fig_dir = out_dir / FIGURE_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for fig in doc.figures():
        path = fig_dir / f"{fig.name}.png"
        path.write_bytes(fig.png)
        figures.append(path)
    report = out_dir / "report.md"
    report.write_text(to_markdown(doc), encoding="utf-8")
    return report, figures
