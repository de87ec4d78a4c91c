"""Report kinds and building them: the ``ffbench.reports`` registry, the ``ReportKind`` base class,
and ``build_report``, which loads a suite's results (``report_context``), lets each kind compute
(``stats``) and draw (``figures``) its sections, renders them (``document``) and writes
``<out>/reports/<suite>/``: HTML and markdown per kind, an index, the figures as PNG, the tables as CSV.

A report *kind* is a plugin like a method: a ``ReportKind`` subclass registered with ``@report_kind(...)``
in a module that the ``ffbench.reports`` entry-point group names (``ffbench/reports/comparison.py``,
``ffbench/reports/ablation.py``, ``ffbench/reports/layers.py`` are ffbench's own). A kind is a template (``template``,
an HTML ``string.Template``) plus ``build(ctx) -> list[Section]``: which statistics and figures it shows.
Every page opens with the shared headline (``ReportContext.headline``, to which a kind adds its own lines
with ``headline(ctx)``) and the statement of methods, and closes with the papers it cites (``references``,
keys of ``report_context.REFERENCES``). The index opens with the same headline.
"""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ffbench import stats
from ffbench.analysis.document import Section, fmt_ci, render, slug
from ffbench.analysis.report_context import Options, ReportContext, load_tables, open_store, references_section
from ffbench.core.config import content_hash
from ffbench.core.paths import inside
from ffbench.core.registry import Registry

if TYPE_CHECKING:
    from ffbench.record.store import Store

REPORTS = Registry("reports", "ffbench.reports")


def report_kind(name: str, summary: str, **card_fields: Any) -> Callable:
    """Class decorator: register a ``ReportKind`` subclass under ``name``."""
    return REPORTS.register(name=name, summary=summary, family=card_fields.pop("family", "report"), **card_fields)


class ReportKind:
    """Base class of report kinds. ``applicable`` says why a kind has nothing to show (or None)."""

    title: str = "Report"
    order: int = 50
    template: str = ""  # an HTML string.Template ($css, $title, $subtitle, $toc, $body, $generated); "" = default
    references: tuple[str, ...] = ()  # keys of report_context.REFERENCES that the kind's text cites

    def applicable(self, ctx: ReportContext) -> str | None:
        return None

    def headline(self, ctx: ReportContext) -> list[str]:
        """The kind's own headline lines (markdown), shown under the shared headline."""
        return []

    def build(self, ctx: ReportContext) -> list[Section]:
        raise NotImplementedError


def registered_kinds(names: Sequence[str] | None = None) -> list[tuple[str, type[ReportKind]]]:
    """Registered kinds (all when ``names`` is None), in their ``order``."""
    if names:
        return [(n, REPORTS.get(n).obj) for n in names]
    entries = [(n, REPORTS.get(n).obj) for n in REPORTS.names()]
    return sorted(entries, key=lambda e: (getattr(e[1], "order", 50), e[0]))


def report_dir(out_dir: str | Path, suite: str) -> Path:
    return inside(out_dir, "reports", slug(suite))


def report_files(out_dir: str | Path, suite: str) -> list[Path]:
    """Every file of the suite's reports (HTML, markdown, PNG, CSV), for the tracker to attach as
    artifacts; artifact paths relative to ``report_dir(out_dir, suite)`` keep the layout."""
    d = report_dir(out_dir, suite)
    return sorted(p for p in d.rglob("*") if p.is_file() and p.name != BUILT_FROM) if d.exists() else []


def build_report(
    out_dir: str | Path,
    suite: str,
    kinds: Sequence[str] | None = None,
    control: str = "bp",
    rope: float | Mapping[str, float] | None = None,
    *,
    metric: str = stats.METRIC,
    all_pairs: bool = False,
    confirmatory: Sequence[tuple[str, str]] | None = None,
    factors: Sequence[str] | None = None,
    alpha: float = stats.ALPHA,
    confidence: float = stats.CONFIDENCE,
    n_resamples: int = stats.N_RESAMPLES,
    seed: int = stats.SEED,
    split: str = "test",
    delay_fraction: float = 0.9,
    suite_version: int | None = None,
    store: Any = None,
    frame: pd.DataFrame | None = None,
    tuning: pd.DataFrame | None = None,
    include_superseded: bool = False,
) -> list[Path]:
    """Build the report kinds (all registered ones when ``kinds`` is None; those with nothing to show are
    skipped and listed in the index) for ``suite`` from the store at ``<out_dir>/results.db`` (or
    ``store``: a Store or a location; or ``frame``/``tuning`` directly, whose factors are then ``factors``,
    or inferred from the columns when not given). Writes
    ``<out_dir>/reports/<suite>/{index,<kind>}.{html,md}``, ``figures/<kind>/*.png`` and
    ``tables/<kind>/*.csv``; returns every path written. ``rope``: a number (fraction of accuracy, e.g.
    0.005 = 0.5 pp) or {dataset: number, 'default': number}; None = 0.5 pp. The runs are the suite's results
    (``resultset``); ``include_superseded`` shows superseded cells' runs too, each apart. A page built before
    from other results (an earlier design or version, a kind that no longer applies) is removed, never linked."""
    out_dir = Path(out_dir)
    older, repeats, note = 0, None, None
    if frame is None:
        tables = load_tables(open_store(out_dir, store), suite, suite_version, include_superseded)
        frame, tuning, older, repeats = tables.frame, tables.tuning, tables.older_versions, tables.repeats
        factors, note = (tables.factors if factors is None else factors), tables.superseded_note
    options = Options(
        metric=metric,
        control=control,
        rope=rope,
        all_pairs=all_pairs,
        confirmatory=confirmatory,
        alpha=alpha,
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
        split=split,
        delay_fraction=delay_fraction,
    )
    ctx = ReportContext(
        suite,
        frame,
        tuning if tuning is not None else pd.DataFrame(),
        options,
        factors,
        older,
        repeats,
        superseded=note,
    )
    root = report_dir(out_dir, suite)
    root.mkdir(parents=True, exist_ok=True)
    results = _results_key(ctx, include_superseded)
    built_from = _built_from(root)
    written: list[Path] = []
    built, skipped = [], []
    for name, cls in registered_kinds(kinds):
        kind = cls()
        reason = kind.applicable(ctx)
        if reason and kinds is None:
            skipped.append((name, reason))
            continue
        sections = [ctx.headline([] if reason else kind.headline(ctx)), ctx.methods_section()]
        if reason:
            sections.append(Section("Not applicable").note(reason))
        else:
            sections += kind.build(ctx)
        sections.append(references_section(getattr(kind, "references", ())))
        written += _write_kind(root, name, kind, ctx, sections)
        built.append((name, kind.title))
        built_from[slug(name)] = results
    for name, _ in skipped:  # a kind that does not apply to these results keeps no page of earlier ones
        built_from.pop(slug(name), None)
    for page in sorted(root.glob("*.html")):  # pages of other results (another design or version): removed
        if page.stem != "index" and built_from.get(page.stem) != results:
            _remove_kind(root, page.stem)
            built_from.pop(page.stem, None)
    (root / BUILT_FROM).write_text(json.dumps(built_from, indent=1, sort_keys=True), encoding="utf-8")
    titles = {slug(n): getattr(c, "title", n) for n, c in registered_kinds()}
    titles.update({slug(n): t for n, t in built})
    present = [(p.stem, titles.get(p.stem, p.stem)) for p in sorted(root.glob("*.html")) if p.stem != "index"]
    written += _write_index(root, ctx, present, skipped)  # this build's kinds, and earlier ones of the same results
    return written


BUILT_FROM = ".built-from.json"  # kind -> the results its page was built from (``_results_key``)


def _results_key(ctx: ReportContext, include_superseded: bool) -> str:
    """What a page's numbers come from: the suite version and the cells of its runs."""
    cells = sorted(ctx.frame["cell_id"].astype(str).unique()) if "cell_id" in ctx.frame else []
    return f"v{ctx.suite_version}:" + content_hash(cells, bool(include_superseded))


def _built_from(root: Path) -> dict[str, str]:
    try:
        return dict(json.loads((root / BUILT_FROM).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return {}


def _remove_kind(root: Path, stem: str) -> None:
    """A kind's page, markdown, figures and tables."""
    for ext in ("html", "md"):
        (root / f"{stem}.{ext}").unlink(missing_ok=True)
    for d in (root / "figures" / stem, root / "tables" / stem):
        if d.is_dir():
            shutil.rmtree(d)


def _write_kind(root: Path, name: str, kind: ReportKind, ctx: ReportContext, sections: list[Section]) -> list[Path]:
    paths = []
    fig_rel, tab_rel = f"figures/{slug(name)}", f"tables/{slug(name)}"
    for d in (root / fig_rel, root / tab_rel):  # this kind's files of an earlier build: replaced, not mixed
        if d.is_dir():
            shutil.rmtree(d)
    for sec in sections:
        for b in sec.blocks:
            if b.kind == "figure" and b.png:
                p = inside(root, fig_rel, f"{b.name}.png")
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(b.png)
                paths.append(p)
            elif b.kind == "table" and b.table is not None and len(b.table):
                p = inside(root, tab_rel, f"{b.name}.csv")
                p.parent.mkdir(parents=True, exist_ok=True)
                b.table.drop(columns=[c for c in ("curves",) if c in b.table]).to_csv(p, index=False)
                paths.append(p)
    title = f"{kind.title}: {ctx.suite}"
    subtitle = (
        f"suite version {ctx.suite_version} · metric {ctx.options.metric} · control {ctx.options.control} · "
        f"ROPE {ctx.rope_text()} · {ctx.options.n_resamples} bootstrap resamples, seed {ctx.options.seed}"
    )
    page, md = render(title, subtitle, sections, kind=name, fig_dir=fig_rel, template=kind.template)
    for ext, text in (("html", page), ("md", md)):
        p = inside(root, f"{slug(name)}.{ext}")
        p.write_text(text, encoding="utf-8")
        paths.append(p)
    return paths


def _write_index(
    root: Path, ctx: ReportContext, built: list[tuple[str, str]], skipped: list[tuple[str, str]]
) -> list[Path]:
    sec = Section("Reports")
    sec.text(
        "\n".join(f"- **{t}**: [HTML]({slug(n)}.html) · [markdown]({slug(n)}.md)" for n, t in built) or "none built"
    )
    if skipped:
        sec.details(
            f"{len(skipped)} kind{'s' * (len(skipped) != 1)} not applicable to this suite",
            "\n".join(f"- {n}: {why}" for n, why in skipped),
        )
    sections = [ctx.headline(), sec, references_section(())]
    subtitle = (
        f"suite version {ctx.suite_version} · metric {ctx.options.metric} · control {ctx.options.control} · "
        f"ROPE {ctx.rope_text()}"
    )
    page, md = render(f"ffbench reports: {ctx.suite}", subtitle, sections, kind="index", fig_dir="figures")
    links = "".join(f'<li><a href="{slug(n)}.html">{html.escape(t)}</a></li>' for n, t in built)
    page = page.replace("<nav><ul>", f"<nav><ul>{links}", 1)
    paths = [root / "index.html", root / "index.md"]
    paths[0].write_text(page, encoding="utf-8")
    paths[1].write_text(md, encoding="utf-8")
    return paths


# ---------------------------------------------------------------- the headline of `ffbench report`
def headline(
    store: Store,
    suite_name: str,
    control: str = "bp",
    rope=None,
    suite_version: int | None = None,
    include_superseded: bool = False,
    **options: Any,
) -> list[str]:
    """The report's headline as terminal lines: the winner per task, and each method's verdict against
    ``control`` with the interval it is read from. The same statistics as the report's (its ``winners``
    and confirmatory comparisons, from ``stats``); ``options``: the report's other options."""
    from ffbench.analysis.report_context import verdict_label

    t = load_tables(store, suite_name, suite_version, include_superseded)
    ctx = ReportContext(
        suite_name,
        t.frame,
        t.tuning,
        Options(control=control, rope=rope, **options),
        t.factors,
        superseded=t.superseded_note,
    )
    lines = [f"{suite_name} (version {ctx.suite_version}): winner per task"]
    for w in ctx.winners().to_dict("records"):
        lines.append(
            f"  {w['task']}: {w['winner']} ({w['why']}); highest mean {w['highest mean']} "
            f"{w['mean [CI] (%)']}%, n={w['n']}"
        )
    conf = ctx.confirmatory()
    if len(conf):
        lines.append(
            f"each method against {control} (Δ in pp with the interval the verdict is read from; "
            f"ROPE {ctx.rope_text()}):"
        )
        for r in conf.to_dict("records"):
            lines.append(
                f"  {r['method']} on {r['task']}: {verdict_label(r)}, Δ {fmt_ci(r['delta'], r['dec_low'], r['dec_high'])}"
                f" ({r['n_pairs']} pairs)"
            )
    elif control not in ctx.methods:
        lines.append(f"the control {control} has no runs in this suite: no verdicts (set --control)")
    lines.append(ctx.failure_line().replace("**", ""))
    if ctx.superseded:
        lines.append(ctx.superseded[0].upper() + ctx.superseded[1:].replace("`", "") + ".")
    return lines
