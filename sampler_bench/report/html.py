"""report.html: one self-contained file (inline CSS, figures as base64 PNG data URIs, no script).

It opens from a mail attachment or an air-gapped cluster the same way: nothing is fetched.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from .document import Bullets, Details, Document, Figure, Heading, Paragraph, Table

CSS = """
:root { --line: #d9dde3; --head: #eef1f5; --best: #c9f2c7; --muted: #5b6470; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1f2328; background: #fff; line-height: 1.45; margin: 0 auto; max-width: 1280px;
       padding: 1.2rem 2rem 4rem; }
h1 { font-size: 1.7rem; border-bottom: 2px solid var(--line); padding-bottom: .3rem; }
h2 { font-size: 1.35rem; margin-top: 2.4rem; border-bottom: 1px solid var(--line); padding-bottom: .2rem; }
h3 { font-size: 1.08rem; margin-top: 1.6rem; }
nav.toc { background: #f7f8fa; border: 1px solid var(--line); border-radius: 6px; padding: .5rem 1rem;
          font-size: .9rem; }
nav.toc ul { margin: .2rem 0; padding-left: 1.2rem; }
a { color: #0b5cad; }
.tablewrap { overflow: auto; max-height: 75vh; margin: .4rem 0 .2rem; border: 1px solid var(--line);
             border-radius: 4px; width: fit-content; max-width: 100%; }
table { border-collapse: separate; border-spacing: 0; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { border-right: 1px solid var(--line); border-bottom: 1px solid var(--line); padding: 3px 9px;
         text-align: right; white-space: nowrap; }
th { background: var(--head); position: sticky; top: 0; z-index: 2; font-weight: 600; }
td.label, th.label { text-align: left; }
tr:nth-child(even) td { background: #fafbfc; }
td.best, tr:nth-child(even) td.best { background: var(--best); font-weight: 700; }
td.wrap { white-space: normal; min-width: 16rem; text-align: left; }
sup { color: #a33; font-size: 10px; }
p.caption { color: var(--muted); font-size: 12.5px; margin: .2rem 0 .3rem; max-width: 70rem; }
ol.notes { color: var(--muted); font-size: 12.5px; margin: .2rem 0 1rem; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12.5px; }
details { margin: .5rem 0; }
summary { cursor: pointer; color: #0b5cad; }
pre { background: #f6f8fa; border: 1px solid var(--line); padding: .6rem; overflow: auto; font-size: 12.5px; }
"""


def _e(text: str) -> str:
    """Escape text content (quotes stay readable: they only need escaping inside attributes)."""
    return html.escape(text, quote=False)


def _table(table: Table, wide_text: bool = False) -> str:
    e = _e
    head = "".join(
        f'<th class="label">{e(c)}</th>' if i < table.label_columns else f"<th>{e(c)}</th>"
        for i, c in enumerate(table.columns)
    )
    body = []
    for row in table.rows:
        cells = []
        for i, c in enumerate(row):
            classes = ["label"] if i < table.label_columns else []
            if c.best:
                classes.append("best")
            if wide_text and len(c.text) > 60:
                classes.append("wrap")
            attr = f' class="{" ".join(classes)}"' if classes else ""
            title = ' title="best in column"' if c.best else ""
            note = f"<sup>{c.note}</sup>" if c.note is not None else ""
            cells.append(f"<td{attr}{title}>{e(c.text)}{note}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    parts = []
    if table.caption:
        parts.append(f'<p class="caption">{e(table.caption)}</p>')
    parts.append(f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')
    if table.notes:
        parts.append('<ol class="notes">' + "".join(f"<li>{e(n)}</li>" for n in table.notes) + "</ol>")
    return "\n".join(parts)


def _toc(doc: Document) -> str:
    heads = doc.headings()
    if not heads:
        return ""
    out, level = ['<nav class="toc"><strong>Contents</strong>'], 1
    for h in heads:
        while level < h.level:
            out.append("<ul>")
            level += 1
        while level > h.level:
            out.append("</ul>")
            level -= 1
        out.append(f'<li><a href="#{h.anchor}">{html.escape(h.text)}</a></li>')
    out += ["</ul>"] * (level - 1) + ["</nav>"]
    return "\n".join(out)


def to_html(doc: Document) -> str:
    e = _e
    body = [f"<h1>{e(doc.title)}</h1>", _toc(doc)]
    for block in doc.blocks:
        if isinstance(block, Heading):
            if block.level == 1:
                continue
            anchor = f' id="{html.escape(block.anchor)}"' if block.anchor else ""
            body.append(f"<h{block.level}{anchor}>{e(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{e(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            body.append(_table(block))
        elif isinstance(block, Figure):
            data = base64.b64encode(block.png).decode("ascii")
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.alt or block.caption)}">'
                f"<figcaption>{e(block.caption)}</figcaption></figure>"
            )
        elif isinstance(block, Details):
            inner = _table(block.table, wide_text=True) if block.table is not None else f"<pre>{e(block.text)}</pre>"
            body.append(f"<details><summary>{e(block.summary)}</summary>\n{inner}\n</details>")
        else:
            raise TypeError(f"unknown report block {type(block).__name__}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(doc.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body>\n</html>\n"
    )


def write_html(doc: Document, out_dir: Path) -> Path:
    path = Path(out_dir) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_html(doc), encoding="utf-8")
    return path
