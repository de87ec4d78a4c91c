"""The document model of a report and its two renderings, self-contained HTML and markdown.

A report is a list of ``Section``s; a section holds text (a small markdown subset), notes, tables (the raw
DataFrame, saved as CSV, and a formatted one that is shown) and figures (PNG bytes). ``render`` turns the
sections into one HTML page (figures embedded as base64 PNG, from an HTML ``string.Template``) and one
markdown document (figures linked). The ``fmt_*`` helpers format numbers for the shown tables.

Layout rules live here once, for every kind: a shown table's ``verdict`` column comes first; a table
sits in a container that scrolls sideways with its first column frozen, so a wide table never widens the
page; a section of kind ``headline`` is set apart at the top; the page prints to PDF (print CSS).
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import string
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


# ====================================================================== document model
@dataclass
class Block:
    kind: str  # text | note | details | table | figure
    text: str = ""
    name: str = ""
    caption: str = ""
    table: pd.DataFrame | None = None  # raw values (CSV)
    display: pd.DataFrame | None = None  # formatted (shown)
    png: bytes | None = None


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    kind: str = ""  # "headline": set apart at the top of the page

    def text(self, md: str) -> Section:
        self.blocks.append(Block("text", text=md.strip()))
        return self

    def note(self, md: str) -> Section:
        self.blocks.append(Block("note", text=md.strip()))
        return self

    def details(self, summary: str, md: str) -> Section:
        """A collapsed note: what a reader may open but need not read (``<details>`` in HTML)."""
        self.blocks.append(Block("details", text=md.strip(), caption=summary))
        return self

    def table(self, name: str, raw: pd.DataFrame, display: pd.DataFrame | None = None, caption: str = "") -> Section:
        shown = verdict_first(display if display is not None else raw.drop(columns=["curves"], errors="ignore"))
        self.blocks.append(Block("table", name=slug(name), caption=caption, table=raw, display=shown))
        return self

    def figure(self, name: str, fig, caption: str = "") -> Section:
        self.blocks.append(Block("figure", name=slug(name), caption=caption, png=png_bytes(fig)))
        return self


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG, at the figure's own DPI, cropped to what is drawn."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi="figure", bbox_inches="tight")
    return buf.getvalue()


def natural_key(s: Any) -> list:
    """Sort key that orders 'classes=5' before 'classes=10' (numbers inside labels compared as numbers)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(s))]


def verdict_first(df: pd.DataFrame) -> pd.DataFrame:
    """The shown table with its verdict column first: what a reader looks for, never off the page."""
    cols = [c for c in df.columns if str(c).lower() == "verdict"]
    return df[cols + [c for c in df.columns if c not in cols]] if cols else df


def slug(s: str) -> str:
    """A file-name-safe form of a title or name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-") or "item"


# ====================================================================== formatting helpers (for kinds)
def fmt_num(x: Any, digits: int = 2, scale: float = 1.0) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "—" if x is None else str(x)
    return "—" if not math.isfinite(v) else f"{v * scale:.{digits}f}"


def fmt_sig(x: Any, digits: int = 3) -> str:
    """Significant digits (for quantities of any size: times, bytes)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "—"
    return "—" if not math.isfinite(v) else f"{v:.{digits}g}"


def fmt_pct(x: Any, digits: int = 2) -> str:
    return fmt_num(x, digits, 100.0)


def fmt_ci(value: Any, low: Any, high: Any, digits: int = 2, scale: float = 100.0, sig: bool = False) -> str:
    """'value [low, high]' (scaled; ``sig``: significant digits instead of decimals)."""
    f = (lambda x: fmt_sig(float(x) * scale, digits)) if sig else (lambda x: fmt_num(x, digits, scale))
    v = f(value)
    try:
        ok = np.isfinite(float(low)) and np.isfinite(float(high))
    except (TypeError, ValueError):
        ok = False
    return f"{v} [{f(low)}, {f(high)}]" if ok else v


def fmt_p(p: Any) -> str:
    try:
        v = float(p)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(v):
        return "—"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


# ====================================================================== rendering
HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
$css
</style></head><body>
<h1>$title</h1><p class="sub">$subtitle</p>
<nav><ul>$toc</ul></nav>
$body
<hr><p class="sub">$generated</p>
</body></html>
"""
CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1150px;
     padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem;overflow-wrap:anywhere} h2{font-size:1.25rem;border-bottom:1px solid #ddd;
padding-bottom:.2rem;margin-top:2rem} .sub{color:#666;margin-top:0;overflow-wrap:anywhere}
p,li{overflow-wrap:anywhere}
.table-wrap{max-width:100%;overflow-x:auto;margin:.6rem 0;border:1px solid #e4e4e4}
table{border-collapse:separate;border-spacing:0;font-size:.82rem}
th,td{border-right:1px solid #e4e4e4;border-bottom:1px solid #e4e4e4;padding:.25rem .5rem;text-align:right;
      white-space:nowrap;background:#fff}
th{background:#f4f4f4;position:sticky;top:0}
td:first-child,th:first-child{text-align:left;position:sticky;left:0;z-index:1;box-shadow:1px 0 0 #ccc}
th:first-child{z-index:2}
td.v-better{background:#d8f0ec} td.v-worse{background:#fbe0d8} td.v-equivalent{background:#dde8f2}
td.v-insufficient{background:#eee} td.t,td[class^="v-"]{text-align:left}
section.headline td.t,section.headline td[class^="v-"]{white-space:normal}
figure{margin:1rem 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption,.caption{font-size:.85rem;color:#555}
.note{background:#fff8e1;border-left:4px solid #f4a261;padding:.4rem .8rem;margin:.6rem 0}
details.skipped{font-size:.85rem;color:#555;margin:.6rem 0} details.skipped summary{cursor:pointer}
section.headline{background:#f5f8fb;border:1px solid #cfdbe6;border-radius:6px;padding:.2rem 1rem .6rem;margin:1rem 0}
section.headline h2{margin-top:.6rem;border:none}
code{background:#f4f4f4;padding:0 .2rem} nav ul{columns:2;font-size:.9rem}
@media (max-width:700px){body{margin:1rem auto;padding:0 .6rem} nav ul{columns:1} table{font-size:.75rem}
  figure{overflow-x:auto} figure img{max-width:none;width:auto}
  section.headline th,section.headline td{white-space:normal}
  figcaption{position:sticky;left:0;max-width:calc(100vw - 1.2rem)}}
@page{size:A4;margin:12mm}
@media print{
  body{max-width:none;margin:0;padding:0;font-size:9.5pt}
  nav{display:none} a{color:inherit;text-decoration:none}
  .table-wrap{overflow:visible;border:none} table{font-size:7pt;width:100%}
  th,td{white-space:normal;position:static;box-shadow:none}
  td.v-better,td.v-worse,td.v-equivalent,td.v-insufficient{-webkit-print-color-adjust:exact;print-color-adjust:exact}
  figure,tr,.note,section.headline{break-inside:avoid} h2{break-after:avoid}
  figure img{max-height:23cm;object-fit:contain}
}
"""


def _inline(s: str) -> str:
    s = html.escape(s, quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
    return re.sub(r"(?<![*\w])\*([^*]+)\*(?!\w)", r"<em>\1</em>", s)


def md_to_html(md: str) -> str:
    """The markdown subset the kinds write: paragraphs, '- ' lists, `code`, **bold**, *italic*, [links](url)."""
    out = []
    for para in re.split(r"\n\s*\n", md.strip()):
        lines = para.splitlines()
        if lines and all(ln.startswith("- ") or ln.startswith("  ") for ln in lines) and lines[0].startswith("- "):
            items, cur = [], []
            for ln in lines:
                if ln.startswith("- ") and cur:
                    items.append(" ".join(cur))
                    cur = []
                cur.append(ln[2:].strip() if ln.startswith("- ") else ln.strip())
            items.append(" ".join(cur))
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
        elif para.strip():
            out.append(f"<p>{_inline(' '.join(ln.strip() for ln in lines))}</p>")
    return "\n".join(out)


def _md_table(df: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "—"
        return str(v).replace("|", "\\|").replace("\n", " ")

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _html_cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


NUMERIC = re.compile(r"^\s*(?:[-−+<>≥≤~]|\d|—\s*$)")


def _cell_class(v: Any, verdict: bool) -> str:
    """Verdict cells coloured by verdict; text left-aligned, numbers (and intervals) right-aligned."""
    if verdict:
        word = str(v).split(" ", 1)[0]
        if word in ("better", "worse", "equivalent", "insufficient"):
            return f' class="v-{word}"'
    if isinstance(v, (int, float, np.integer, np.floating)) or v is None or NUMERIC.match(str(v)):
        return ""
    return ' class="t"'


def _html_table(df: pd.DataFrame, name: str = "") -> str:
    """The table in a container that scrolls sideways (first column frozen); verdict cells coloured."""
    cols = list(df.columns)
    verdict = [str(c).lower() == "verdict" for c in cols]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    rows = "".join(
        "<tr>" + "".join(f"<td{_cell_class(v, verdict[i])}>{_html_cell(v)}</td>" for i, v in enumerate(row)) + "</tr>"
        for row in df.itertuples(index=False)
    )
    return (
        f'<div class="table-wrap" data-table="{html.escape(name)}"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )


def render(
    title: str, subtitle: str, sections: list[Section], *, kind: str, fig_dir: str, template: str = ""
) -> tuple[str, str]:
    """(html, markdown) of a report; figures embedded in the HTML, linked (``fig_dir``/name.png) in the markdown."""
    toc, body, md = [], [], [f"# {title}", "", f"_{subtitle}_", ""]
    for i, sec in enumerate(sections):
        anchor = f"s{i}-{slug(sec.title)}"
        toc.append(f'<li><a href="#{anchor}">{html.escape(sec.title)}</a></li>')
        cls = f' class="{html.escape(sec.kind)}"' if sec.kind else ""
        body.append(f'<section{cls}><h2 id="{anchor}">{html.escape(sec.title)}</h2>')
        md += [f"## {sec.title}", ""]
        for b in sec.blocks:
            if b.kind == "text":
                body.append(md_to_html(b.text))
                md += [b.text, ""]
            elif b.kind == "note":
                body.append(f'<div class="note">{md_to_html(b.text)}</div>')
                md += ["> " + b.text.replace("\n", "\n> "), ""]
            elif b.kind == "details":
                body.append(
                    f'<details class="skipped"><summary>{_inline(b.caption)}</summary>{md_to_html(b.text)}</details>'
                )
                md += [f"{b.caption}:", "", b.text, ""]
            elif b.kind == "table":
                if b.caption:
                    body.append(f'<p class="caption">{_inline(b.caption)}</p>')
                    md += [f"*{b.caption}*", ""]
                shown = b.display if b.display is not None else b.table
                if shown is None or not len(shown):
                    body.append("<p><em>(empty)</em></p>")
                    md += ["_(empty)_", ""]
                else:
                    body.append(_html_table(shown, b.name))
                    md += [_md_table(shown), ""]
            elif b.kind == "figure":
                data = base64.b64encode(b.png or b"").decode()
                alt = html.escape(b.caption or b.name)
                body.append(
                    f'<figure><img class="fig" data-name="{html.escape(b.name)}" alt="{alt}" '
                    f'src="data:image/png;base64,{data}"><figcaption>{_inline(b.caption)}</figcaption></figure>'
                )
                md += [f"![{b.caption or b.name}]({fig_dir}/{b.name}.png)", ""]
                if b.caption:
                    md += [f"*{b.caption}*", ""]
        body.append("</section>")
    generated = f"ffbench report '{kind}', generated {time.strftime('%Y-%m-%d %H:%M:%S')}"
    page = string.Template(template or HTML_TEMPLATE).safe_substitute(
        css=CSS,
        title=html.escape(title),
        subtitle=_inline(subtitle),
        toc="\n".join(toc),
        body="\n".join(body),
        generated=html.escape(generated),
    )
    md += ["---", generated, ""]
    return page, "\n".join(md)
