"""Reports: load a suite's results from the store, compute (``stats``), draw (``figures``) and render
self-contained HTML (figures embedded as base64 PNG) plus markdown, PNG and CSV files under
``<out>/reports/<suite>/``.

A report *kind* is a plugin like a method: a ``ReportKind`` subclass registered with ``@report_kind(...)``
in a module that the ``ffbench.reports`` entry-point group names (``reports/comparison.py``,
``reports/ablation.py``, ``reports/layers.py`` are ffbench's own). A kind is a template (``template``,
an HTML ``string.Template``) plus ``build(ctx) -> list[Section]``: which statistics and figures it shows.
Sections hold text (a small markdown subset), tables (a raw DataFrame saved as CSV and a formatted one
shown) and figures; rendering to HTML and markdown is shared.
"""
from __future__ import annotations

import argparse
import base64
import html
import math
import re
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ffbench import stats
from ffbench.registry import Registry
from ffbench.stats import cell_summaries  # noqa: F401  (re-exported for the tracking layer)

REPORTS = Registry("reports")


def report_kind(name: str, summary: str, **card_fields: Any) -> Callable:
    """Class decorator: register a ``ReportKind`` subclass under ``name``."""
    return REPORTS.register(name=name, summary=summary, family=card_fields.pop("family", "report"), **card_fields)


# ====================================================================== document model
@dataclass
class Block:
    kind: str  # text | note | table | figure
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

    def text(self, md: str) -> "Section":
        self.blocks.append(Block("text", text=md.strip()))
        return self

    def note(self, md: str) -> "Section":
        self.blocks.append(Block("note", text=md.strip()))
        return self

    def table(self, name: str, raw: pd.DataFrame, display: pd.DataFrame | None = None, caption: str = "") -> "Section":
        shown = display if display is not None else raw.drop(columns=["curves"], errors="ignore")
        self.blocks.append(Block("table", name=_slug(name), caption=caption, table=raw, display=shown))
        return self

    def figure(self, name: str, fig, caption: str = "") -> "Section":
        from ffbench.figures import png_bytes

        self.blocks.append(Block("figure", name=_slug(name), caption=caption, png=png_bytes(fig)))
        return self


def _slug(s: str) -> str:
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


# ====================================================================== context handed to a kind
@dataclass
class Options:
    metric: str = stats.METRIC
    control: str = "bp"
    rope: float | Mapping[str, float] | None = None
    all_pairs: bool = False
    confirmatory: Sequence[tuple[str, str]] | None = None
    alpha: float = stats.ALPHA
    confidence: float = stats.CONFIDENCE
    n_resamples: int = stats.N_RESAMPLES
    seed: int = stats.SEED
    split: str = "test"  # per-layer diagnostics
    delay_fraction: float = 0.9
    power: float = stats.POWER
    deltas: Sequence[float] = (0.002, 0.005, 0.01)


class ReportContext:
    """What a kind sees: the tidy tables, the factors, the options, and cached shared statistics."""

    def __init__(self, suite: str, frame: pd.DataFrame, tuning: pd.DataFrame, options: Options,
                 factors: Sequence[str] | None = None, older_versions: int = 0):
        self.suite = suite
        self.options = options
        self.raw = frame
        self.frame, self.factors = stats.prepare(frame, factors, options.metric)
        self.suite_version = int(self.frame["suite_version"].max()) if "suite_version" in self.frame and len(self.frame) else None
        self.older_versions = older_versions
        self.tuning = tuning
        self.axes = stats.axes_of(self.factors)
        self.task_cols = [f for f in self.factors if f != "method"]
        self.frame["task"] = self._task(self.frame)
        self.cache: dict[str, Any] = {}

    def _task(self, df: pd.DataFrame) -> pd.Series:
        """'dataset / backbone / axis=level ...' (axes that do not apply, '-', left out)."""
        cols = [c for c in self.task_cols if c in df]
        if not cols:
            return pd.Series("all", index=df.index)

        def label(row) -> str:
            parts = [str(v) if c in stats.BASE_FACTORS else f"{c}={v}" for c, v in zip(cols, row)
                     if v is not None and str(v) != stats.NA]
            return " / ".join(parts) or "all"

        return pd.Series([label(r) for r in df[cols].itertuples(index=False)], index=df.index, dtype=object)

    def with_task(self, df: pd.DataFrame) -> pd.DataFrame:
        """``df`` with a 'task' label column joined from the non-method factor columns it has."""
        if df is None or not len(df) or "task" in df:
            return df
        return df.assign(task=self._task(df))

    def cached(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = fn()
        return self.cache[key]

    # shared statistics -------------------------------------------------------
    @property
    def methods(self) -> list[str]:
        return sorted(self.frame["method"].astype(str).unique()) if "method" in self.frame else []

    def cells(self) -> pd.DataFrame:
        o = self.options
        return self.cached("cells", lambda: self.with_task(stats.cell_table(
            self.frame, o.metric, self.factors, confidence=o.confidence, n_resamples=o.n_resamples, rng=o.seed)))

    def comparisons(self) -> pd.DataFrame:
        o = self.options
        return self.cached("comparisons", lambda: self.with_task(stats.compare(
            self.frame, o.metric, control=o.control, factors=self.factors, confirmatory=o.confirmatory,
            all_pairs=o.all_pairs, rope=o.rope, alpha=o.alpha, confidence=o.confidence,
            n_resamples=o.n_resamples, rng=o.seed)))

    def counts(self) -> dict[str, int]:
        return self.frame["status"].value_counts().to_dict()

    def rope_text(self) -> str:
        r = self.options.rope
        if r is None:
            return f"±{stats.ROPE * 100:g} pp (the default) on every dataset"
        if isinstance(r, Mapping):
            return "; ".join(f"{k}: ±{v * 100:g} pp" for k, v in r.items())
        return f"±{float(r) * 100:g} pp on every dataset"

    def methods_section(self, extra: Sequence[str] = ()) -> Section:
        """The statement every report carries: data, n, seeds, intervals, tests, corrections, ROPE, RNG."""
        o = self.options
        counts = self.counts()
        seeds = sorted(self.frame["seed"].unique()) if "seed" in self.frame else []
        lines = [
            f"- Suite **{self.suite}**, version {self.suite_version}; {len(self.frame)} evaluation runs: "
            + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            + (f" ({self.older_versions} runs of older suite versions are not used)" if self.older_versions else "")
            + ".",
            f"- Metric: `{o.metric}` (test accuracy at the best-validation epoch unless stated), shown in %.",
            f"- Seeds (common random numbers: the same seed gives every method the same split, order and "
            f"augmentation): {', '.join(map(str, seeds)) or 'none'}. Runs of different methods with the same "
            "other factor levels and seed are paired.",
            "- Failed, pending and running runs are counted in every table (failures, missing) and left out of "
            "the estimates, which are over the finished runs only.",
            f"- Intervals: {o.confidence:.0%} bootstrap, BCa (percentile when BCa is undefined; a point when all "
            f"values are equal), {o.n_resamples} resamples, numpy Generator (PCG64) seeded {o.seed} afresh for "
            "each estimate; stratified-bootstrap (percentile) intervals resample seeds within strata; curve bands "
            "are t intervals over seeds.",
            f"- Comparisons: paired t-test on the per-seed differences (p_t), Wilcoxon signed-rank as a robustness "
            f"check (no p below 0.05 is possible with fewer than {stats.WILCOXON_FLOOR} pairs), Hedges' g "
            "(pooled SD, exact small-sample correction) and the probability of superiority P(A>B)+½P(=), both "
            "with paired bootstrap intervals. Confirmatory family (each method vs the control "
            f"`{o.control}`{', as declared' if o.confirmatory else ''}): Holm; exploratory family (other pairs): "
            f"Benjamini–Hochberg. α = {o.alpha:g}.",
            f"- ROPE (region of practical equivalence): {self.rope_text()}.",
            f"- Verdict: *equivalent* if the CI of the difference lies within ±ROPE and the corrected TOST p < "
            f"{o.alpha:g}; else *better* / *worse* if the corrected paired-t p < {o.alpha:g} and the CI excludes 0 "
            f"on that side; otherwise *insufficient evidence* (also whenever fewer than {stats.MIN_PAIRS} seeds "
            "pair up).",
        ]
        lines += list(extra)
        return Section("How these numbers were made").text("\n".join(lines))


# ====================================================================== kinds
class ReportKind:
    """Base class of report kinds. ``applicable`` says why a kind has nothing to show (or None)."""

    title: str = "Report"
    order: int = 50
    template: str = ""  # an HTML string.Template ($title, $subtitle, $toc, $body, $generated); "" = default

    def applicable(self, ctx: ReportContext) -> str | None:
        return None

    def build(self, ctx: ReportContext) -> list[Section]:
        raise NotImplementedError


def registered_kinds(names: Sequence[str] | None = None) -> list[tuple[str, type[ReportKind]]]:
    """Registered kinds (all when ``names`` is None), in their ``order``."""
    if names:
        return [(n, REPORTS.get(n).obj) for n in names]
    entries = [(n, REPORTS.get(n).obj) for n in REPORTS.names()]
    return sorted(entries, key=lambda e: (getattr(e[1], "order", 50), e[0]))


# ====================================================================== rendering
HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1150px;
     padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;
margin-top:2rem} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;font-size:.82rem;margin:.6rem 0;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right;white-space:nowrap}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
figure{margin:1rem 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption,.caption{font-size:.85rem;color:#555}
.note{background:#fff8e1;border-left:4px solid #f4a261;padding:.4rem .8rem;margin:.6rem 0}
code{background:#f4f4f4;padding:0 .2rem} nav ul{columns:2;font-size:.9rem}
</style></head><body>
<h1>$title</h1><p class="sub">$subtitle</p>
<nav><ul>$toc</ul></nav>
$body
<hr><p class="sub">$generated</p>
</body></html>
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


def _html_table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, na_rep="—", border=0, escape=True, float_format=lambda v: f"{v:.4g}")


def render(title: str, subtitle: str, sections: list[Section], *, kind: str, fig_dir: str, template: str = ""
           ) -> tuple[str, str]:
    """(html, markdown) of a report; figures embedded in the HTML, linked (``fig_dir``/name.png) in the markdown."""
    toc, body, md = [], [], [f"# {title}", "", f"_{subtitle}_", ""]
    for i, sec in enumerate(sections):
        anchor = f"s{i}-{_slug(sec.title)}"
        toc.append(f'<li><a href="#{anchor}">{html.escape(sec.title)}</a></li>')
        body.append(f'<section><h2 id="{anchor}">{html.escape(sec.title)}</h2>')
        md += [f"## {sec.title}", ""]
        for b in sec.blocks:
            if b.kind == "text":
                body.append(md_to_html(b.text))
                md += [b.text, ""]
            elif b.kind == "note":
                body.append(f'<div class="note">{md_to_html(b.text)}</div>')
                md += ["> " + b.text.replace("\n", "\n> "), ""]
            elif b.kind == "table":
                if b.caption:
                    body.append(f'<p class="caption">{_inline(b.caption)}</p>')
                    md += [f"*{b.caption}*", ""]
                shown = b.display if b.display is not None else b.table
                if shown is None or not len(shown):
                    body.append("<p><em>(empty)</em></p>")
                    md += ["_(empty)_", ""]
                else:
                    body.append(_html_table(shown))
                    md += [_md_table(shown), ""]
            elif b.kind == "figure":
                data = base64.b64encode(b.png or b"").decode()
                alt = html.escape(b.caption or b.name)
                body.append(f'<figure><img class="fig" data-name="{html.escape(b.name)}" alt="{alt}" '
                            f'src="data:image/png;base64,{data}"><figcaption>{_inline(b.caption)}</figcaption></figure>')
                md += [f"![{b.caption or b.name}]({fig_dir}/{b.name}.png)", ""]
                if b.caption:
                    md += [f"*{b.caption}*", ""]
        body.append("</section>")
    generated = f"ffbench report '{kind}', generated {time.strftime('%Y-%m-%d %H:%M:%S')}"
    page = string.Template(template or HTML_TEMPLATE).safe_substitute(
        title=html.escape(title), subtitle=_inline(subtitle), toc="\n".join(toc), body="\n".join(body),
        generated=html.escape(generated))
    md += ["---", generated, ""]
    return page, "\n".join(md)


# ====================================================================== building
def report_dir(out_dir: str | Path, suite: str) -> Path:
    return Path(out_dir) / "reports" / _slug(suite)


def report_files(out_dir: str | Path, suite: str) -> list[Path]:
    """Every file of the suite's reports (HTML, markdown, PNG, CSV), for the tracker to attach as
    artifacts; artifact paths relative to ``report_dir(out_dir, suite)`` keep the layout."""
    d = report_dir(out_dir, suite)
    return sorted(p for p in d.rglob("*") if p.is_file()) if d.exists() else []


def load_tables(store: Any, suite: str, suite_version: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(evaluation frame, tuning frame, number of runs of other suite versions left out)."""
    frame = store.frame(suite, role="evaluation")
    if not len(frame):
        known = _suites_in(store)
        raise ValueError(f"no evaluation runs of suite {suite!r} in {store.url}; suites there: "
                         f"{', '.join(known) or 'none'}")
    tuning = store.frame(suite, role="tuning")
    v = int(frame["suite_version"].max()) if suite_version is None else int(suite_version)
    older = int((frame["suite_version"] != v).sum())
    frame = frame[frame["suite_version"] == v].reset_index(drop=True)
    if len(tuning):
        tuning = tuning[tuning["suite_version"] == v].reset_index(drop=True)
    if not len(frame):
        raise ValueError(f"suite {suite!r} has no evaluation runs of version {v}")
    return frame, tuning, older


def _suites_in(store: Any) -> list[str]:
    import sqlalchemy as sa

    from ffbench.store import runs

    with store.engine.connect() as c:
        return sorted(r for (r,) in c.execute(sa.select(runs.c.suite).distinct()))


def build_report(out_dir: str | Path, suite: str, kinds: Sequence[str] | None = None, control: str = "bp",
                 rope: float | Mapping[str, float] | None = None, *, metric: str = stats.METRIC,
                 all_pairs: bool = False, confirmatory: Sequence[tuple[str, str]] | None = None,
                 factors: Sequence[str] | None = None, alpha: float = stats.ALPHA,
                 confidence: float = stats.CONFIDENCE, n_resamples: int = stats.N_RESAMPLES,
                 seed: int = stats.SEED, split: str = "test", delay_fraction: float = 0.9,
                 suite_version: int | None = None, store: Any = None, frame: pd.DataFrame | None = None,
                 tuning: pd.DataFrame | None = None) -> list[Path]:
    """Build the report kinds (all registered ones when ``kinds`` is None; those with nothing to show are
    skipped and listed in the index) for ``suite`` from the store at ``<out_dir>/results.db`` (or
    ``store``: a Store or a location; or ``frame``/``tuning`` directly). Writes
    ``<out_dir>/reports/<suite>/{index,<kind>}.{html,md}``, ``figures/<kind>/*.png`` and
    ``tables/<kind>/*.csv``; returns every path written. ``rope``: a number (fraction of accuracy, e.g.
    0.005 = 0.5 pp) or {dataset: number, 'default': number}; None = 0.5 pp."""
    out_dir = Path(out_dir)
    older = 0
    if frame is None:
        from ffbench.store import Store

        if store is None:
            loc = out_dir / "results.db"
            if not loc.exists():
                raise FileNotFoundError(f"no results store at {loc}; run the suite first (ffbench run SUITE --out {out_dir})")
            store = Store(loc)
        elif not hasattr(store, "frame"):
            store = Store(store)
        frame, tuning, older = load_tables(store, suite, suite_version)
    options = Options(metric=metric, control=control, rope=rope, all_pairs=all_pairs, confirmatory=confirmatory,
                      alpha=alpha, confidence=confidence, n_resamples=n_resamples, seed=seed, split=split,
                      delay_fraction=delay_fraction)
    ctx = ReportContext(suite, frame, tuning if tuning is not None else pd.DataFrame(), options, factors, older)
    root = report_dir(out_dir, suite)
    root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    built, skipped = [], []
    for name, cls in registered_kinds(kinds):
        kind = cls()
        reason = kind.applicable(ctx)
        if reason and kinds is None:
            skipped.append((name, reason))
            continue
        sections = [ctx.methods_section()]
        if reason:
            sections.append(Section("Not applicable").note(reason))
        else:
            sections += kind.build(ctx)
        written += _write_kind(root, name, kind, ctx, sections)
        built.append((name, kind.title))
    titles = {_slug(n): getattr(c, "title", n) for n, c in registered_kinds()}
    titles.update({_slug(n): t for n, t in built})
    present = [(p.stem, titles.get(p.stem, p.stem)) for p in sorted(root.glob("*.html")) if p.stem != "index"]
    written += _write_index(root, ctx, present, skipped)  # this build's kinds and those built before
    return written


def _write_kind(root: Path, name: str, kind: ReportKind, ctx: ReportContext, sections: list[Section]) -> list[Path]:
    import shutil

    paths = []
    fig_rel, tab_rel = f"figures/{_slug(name)}", f"tables/{_slug(name)}"
    for d in (root / fig_rel, root / tab_rel):  # this kind's files of an earlier build: replaced, not mixed
        if d.is_dir():
            shutil.rmtree(d)
    for sec in sections:
        for b in sec.blocks:
            if b.kind == "figure" and b.png:
                p = root / fig_rel / f"{b.name}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(b.png)
                paths.append(p)
            elif b.kind == "table" and b.table is not None and len(b.table):
                p = root / tab_rel / f"{b.name}.csv"
                p.parent.mkdir(parents=True, exist_ok=True)
                b.table.drop(columns=[c for c in ("curves",) if c in b.table]).to_csv(p, index=False)
                paths.append(p)
    title = f"{kind.title}: {ctx.suite}"
    subtitle = (f"suite version {ctx.suite_version} · metric {ctx.options.metric} · control {ctx.options.control} · "
                f"ROPE {ctx.rope_text()} · {ctx.options.n_resamples} bootstrap resamples, seed {ctx.options.seed}")
    page, md = render(title, subtitle, sections, kind=name, fig_dir=fig_rel, template=kind.template)
    for ext, text in (("html", page), ("md", md)):
        p = root / f"{_slug(name)}.{ext}"
        p.write_text(text, encoding="utf-8")
        paths.append(p)
    return paths


def _write_index(root: Path, ctx: ReportContext, built: list[tuple[str, str]], skipped: list[tuple[str, str]]
                 ) -> list[Path]:
    sec = Section("Reports")
    sec.text("\n".join(f"- **{t}**: [HTML]({_slug(n)}.html) · [markdown]({_slug(n)}.md)" for n, t in built)
             or "none built")
    if skipped:
        sec.note("Skipped (nothing to show):\n\n" + "\n".join(f"- {n}: {why}" for n, why in skipped))
    page, md = render(f"ffbench reports: {ctx.suite}", f"suite version {ctx.suite_version}", [sec], kind="index",
                      fig_dir="figures")
    links = "".join(f'<li><a href="{_slug(n)}.html">{html.escape(t)}</a></li>' for n, t in built)
    page = page.replace("<nav><ul>", f"<nav><ul>{links}", 1)
    paths = [root / "index.html", root / "index.md"]
    paths[0].write_text(page, encoding="utf-8")
    paths[1].write_text(md, encoding="utf-8")
    return paths


# ====================================================================== command line
def parse_rope(values: Sequence[str] | None) -> float | dict[str, float] | None:
    """'--rope-pp 0.5' (all datasets) and/or '--rope-pp mnist=0.2' (one dataset), in percentage points."""
    if not values:
        return None
    out: dict[str, float] = {}
    for v in values:
        name, _, num = v.rpartition("=")
        try:
            out[name or "default"] = float(num) / 100.0
        except ValueError:
            raise SystemExit(f"--rope-pp {v!r}: expected a number of percentage points, or DATASET=NUMBER") from None
    return out["default"] if list(out) == ["default"] else out


def add_report_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``ffbench report SUITE --out DIR [--kind ...]``."""
    parser.add_argument("suite", nargs="?", help="suite name (as stored) or suite file")
    parser.add_argument("--out", help="output directory of the suite (holds results.db); default ffbench-out/SUITE")
    parser.add_argument("--kind", action="append", metavar="KIND",
                        help="report kind (repeatable); default: every registered kind with something to show")
    parser.add_argument("--list-kinds", action="store_true", help="list the registered report kinds and exit")
    parser.add_argument("--control", help="the method others are compared with (default: the suite's, else bp)")
    parser.add_argument("--rope-pp", action="append", metavar="[DATASET=]PP",
                        help=f"ROPE half-width in percentage points, for all datasets or one (repeatable); "
                             f"default {stats.ROPE * 100:g}")
    parser.add_argument("--metric", default=stats.METRIC, help=f"metric column (default {stats.METRIC})")
    parser.add_argument("--all-pairs", action="store_true", help="also compare every pair of methods (exploratory, BH)")
    parser.add_argument("--alpha", type=float, default=stats.ALPHA, help=f"significance level (default {stats.ALPHA})")
    parser.add_argument("--resamples", type=int, default=stats.N_RESAMPLES,
                        help=f"bootstrap resamples (default {stats.N_RESAMPLES})")
    parser.add_argument("--seed", type=int, default=stats.SEED, help=f"bootstrap RNG seed (default {stats.SEED})")
    parser.add_argument("--suite-version", type=int, help="suite version to report (default: the latest)")
    parser.add_argument("--split", default="test", choices=("test", "val"), help="split for per-layer diagnostics")
    parser.add_argument("--store", help="results store location or SQLAlchemy URL (default OUT/results.db)")
    return parser


def main_report(args: argparse.Namespace) -> int:
    if getattr(args, "list_kinds", False):
        for c in REPORTS.list():
            print(f"{c.name:12s} {c.summary}")
        return 0
    if not args.suite:
        print("ffbench report: a SUITE is required", flush=True)
        return 2
    name, control = args.suite, args.control
    try:
        from ffbench.suite import load

        s = load(args.suite)
        name, control = s.name, control or s.control
    except Exception:  # a suite no longer on disk can still be reported from the store
        if args.suite.endswith(".toml"):
            raise
    control = control or "bp"
    out = Path(args.out) if args.out else Path("ffbench-out") / name
    if args.kind:
        unknown = [k for k in args.kind if k not in REPORTS]
        if unknown:
            print(f"unknown report kind(s) {', '.join(unknown)}; registered: {', '.join(REPORTS.names())}")
            return 2
    paths = build_report(out, name, args.kind, control=control, rope=parse_rope(args.rope_pp), metric=args.metric,
                         all_pairs=args.all_pairs, alpha=args.alpha, n_resamples=args.resamples, seed=args.seed,
                         split=args.split, suite_version=args.suite_version, store=args.store)
    for p in paths:
        if p.suffix in (".html", ".md"):
            print(p)
    print(f"{len(paths)} files under {report_dir(out, name)}")
    return 0
