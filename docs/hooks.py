"""Pages generated from the code before mkdocs builds the site, so they cannot drift from it: one page per
method (from its card), the suite file reference (from the checker's schema and the registries), the command
line (from the argument parser) and the results tables (from the committed per-seed CSVs, through the same
statistics the reports use). Written under docs/generated/; the navigation lists every generated method page
and every page of docs/methods/notes/, so a new method or a new notes page appears without editing mkdocs.yml.

    python docs/hooks.py      # writes the pages without building the site
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
OUT = DOCS / "generated"
NOTES = DOCS / "methods" / "notes"
ACCURACY = re.compile(r"^(test_acc|val_acc|best_test)(\.|$)")  # the CSVs' accuracy columns, in %
# a citation of the method notes in the code: docs/methods/notes/<page>.md §<section>[, §<section>...]
TAG = re.compile(r"\[([A-Z][A-Z-]+(?: [^\]]*)?)\](?!\()")
_SECTIONS = r"((?:,? ?§\d+(?:\.\d+)*(?:-§?\d+(?:\.\d+)*)?)*)"
CITATION = re.compile(r"docs/methods/notes/([\w.-]+)\.md" + _SECTIONS)
# any file's section citation (``other.md §3.2``): sections of files other than the notes are not linked
ANY_CITATION = re.compile(r"[\w./-]+\.md" + _SECTIONS)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def as_toml(value: object) -> str:
    """A value as a suite file writes it (``"adam"``, ``true``, ``[256, 256]``); unset is ``(unset)``."""
    if value is None:
        return "(unset)"
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError:  # a per-dataset value (ByDataset) and the like: as the code states it
        return repr(value)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:  # unchanged pages keep their time: serve reloads less
        path.write_text(text)


def anchor(section: str) -> str:
    """The anchor of a notes section heading (``## 2.3 Title {#s2.3}`` gives ``s2.3``)."""
    return "s" + section


def notes_sections() -> dict[str, str]:
    """Section number -> the notes page that holds it, read from the pages' ``{#s<number>}`` anchors."""
    found = {}
    for page in sorted(NOTES.glob("*.md")):
        for number in re.findall(r"\{#s(\d+(?:\.\d+)*)\}", page.read_text()):
            found[number] = page.stem
    return found


def _section_link(number: str, pages: set[str] | None, prefix: str, sections: dict[str, str]) -> str | None:
    """A link to the deepest section of the notes that holds ``number`` (§2.7.1 is an item of §2.7), when one of
    ``pages`` holds it (None: any page); None otherwise (another document's section, or one not in the notes)."""
    parts = number.split(".")
    while parts and ".".join(parts) not in sections:
        parts.pop()
    held = ".".join(parts)
    if not parts or (pages is not None and sections[held] not in pages):
        return None
    return f"[{sections[held]} notes §{number}]({prefix}methods/notes/{sections[held]}.md#{anchor(held)})"


def module_text(cls: type) -> str:
    """The source of the module defining ``cls`` ("" for a class made at run time, e.g. by exec)."""
    try:
        return Path(inspect.getsourcefile(cls) or "").read_text()
    except (TypeError, OSError):
        return ""


def cited_pages(text: str) -> set[str]:
    """The notes pages ``text`` cites in full (``docs/methods/notes/<page>.md``)."""
    return {m.group(1) for m in CITATION.finditer(text)}


def link_citations(
    text: str, prefix: str, sections: dict[str, str] | None = None, context: set[str] | None = None
) -> str:
    """Citations of the method notes as links to their sections: ``docs/methods/notes/ff.md §2.3``, and a bare
    ``§2.3`` when a page of ``context`` holds it (a card's recipe sources cite the sections of the notes page its
    paper field names; None: any page). Another file's sections (``other.md §3.2``) stay text. ``prefix`` is the
    path from the page to docs/."""
    sections = notes_sections() if sections is None else sections
    text = TAG.sub(r"\\[\1\\]", text)  # a source's tag ([INF], [CODE Models.py]) is text, never a link reference

    def full(m: re.Match) -> str:
        page, numbers = m.group(1), re.findall(r"§(\d+(?:\.\d+)*)", m.group(2))
        if not numbers:
            return f"[{page} notes]({prefix}methods/notes/{page}.md)"
        return ", ".join(_section_link(n, {page}, prefix, sections) or f"{page} notes §{n}" for n in numbers)

    def bare(span: str) -> str:
        return re.sub(
            r"§(\d+(?:\.\d+)*)", lambda b: _section_link(b.group(1), context, prefix, sections) or b.group(0), span
        )

    out, last = [], 0
    for m in ANY_CITATION.finditer(text):  # the notes' citations linked, another file's left as they are
        ours = CITATION.fullmatch(m.group(0))
        out += [bare(text[last : m.start()]), full(ours) if ours else m.group(0)]
        last = m.end()
    out.append(bare(text[last:]))
    return "".join(out)


# ---------------------------------------------------------------- methods
def _percent(df):
    """A per-seed CSV's accuracies as fractions, as the store holds them (the CSVs hold %)."""
    df = df.copy()
    for c in df:
        if ACCURACY.match(c):
            df[c] = df[c] / 100
    return df


def committed(folder: str) -> dict[str, object]:
    """The committed per-seed CSVs of benchmarks/<folder>/, by file name, accuracies as fractions."""
    import pandas as pd

    return {p.name: _percent(pd.read_csv(p)) for p in sorted((ROOT / "benchmarks" / folder).glob("*.csv"))}


def reproduction_table(frames: dict[str, object], method: str | None = None) -> list[str]:
    """The reproduction table of the committed CSVs, computed by the reproduction report's own function: each
    published number, ffbench's mean with its t interval, and where the published number lies."""
    import numpy as np
    import pandas as pd

    from ffbench.reports.reproduction import reproduction_rows

    lines = [
        "| suite | row (predictor) | published | ffbench mean [95% CI] (per seed) | best test epoch | seeds "
        "| published vs CI |",
        "|---|---|---|---|---|---|---|",
    ]
    n = 0
    for name, df in frames.items():
        if method is not None and method not in set(df["method"]):
            continue
        table = reproduction_rows(df)
        for r in table.to_dict("records") if len(table) else []:
            if method is not None and r["row"].split(" − ")[0] != method:
                continue
            rule = r["metric"].removeprefix("test_acc").lstrip(".") or "default"
            sel = df[(df["method"] == r["row"]) & (df["dataset"] == r["dataset"]) & (df["backbone"] == r["backbone"])]
            seeds = pd.to_numeric(sel.get(r["metric"]), errors="coerce").dropna() * 100
            per_seed = ", ".join(f"{v:.2f}" for v in seeds)
            if r["n"] >= 2 and np.isfinite(r["ci_low"]):
                mean = f"{r['mean'] * 100:.2f}% [{r['ci_low'] * 100:.2f}, {r['ci_high'] * 100:.2f}] ({per_seed})"
            else:
                mean = f"{r['mean'] * 100:.2f}% (one seed)" if r["n"] == 1 else "—"
            best = pd.to_numeric(sel.get(r["metric"].replace("test_acc", "best_test", 1)), errors="coerce").mean()
            best = f"{best * 100:.2f}%" if np.isfinite(best) else "—"
            lines.append(
                f"| `{name.removesuffix('.csv')}` | {r['row']}, {r['dataset']} / {r['backbone']}, {rule} "
                f"| {r['published'] * 100:.2f}% | {mean} | {best} | {r['n']} | {r['published_vs_ci']} |"
            )
            n += 1
    return lines if n else []


def method_page(entry, reproductions: dict[str, object]) -> str:
    from ffbench.core.registry import RECIPE_DEFAULT
    from ffbench.reports.reproduction import PUBLISHED

    card, cls = entry.card, entry.obj
    texts = [card.paper, card.notes, *(o.source for o in card.options.values())]
    texts += [src for settings in card.recipes.values() for _, src in settings.values()]
    texts += [p.source for k, p in PUBLISHED.items() if k[0] == card.name]
    texts.append(module_text(cls))
    context = set().union(*(cited_pages(str(t)) for t in texts))  # the notes pages the card or its module name
    cite = lambda text: link_citations(_cell(text), "../../", context=context)
    lines = [f"# {card.name}", "", card.summary, ""]
    facts = [("family", card.family), ("paper", card.paper), ("code", card.code)]
    facts.append(("capabilities", ", ".join(f"`{c}`" for c in sorted(card.capabilities))))
    default = (
        (f"set by option `{card.rule_option}`" if card.rule_option else f"`{card.rules[0]}`") if card.rules else ""
    )
    facts.append(
        ("inference rules", ", ".join(f"`{r}`" for r in card.rules) + (f" (default: {default})" if default else ""))
    )
    facts.append(("adaptation modes", ", ".join(f"`{m}`" for m in getattr(cls, "adapt_modes", ()))))
    facts.append(("seeds trained together", "yes" if getattr(cls, "seed_batching", False) else "no (one at a time)"))
    facts.append(("defined in", f"`{cls.__module__.replace('.', '/')}.py`"))
    lines += ["| | |", "|---|---|", *[f"| {k} | {cite(v)} |" for k, v in facts if v], ""]
    if card.options:
        lines += ["## Options", "", "| option | accepts | default | what | source |", "|---|---|---|---|---|"]
        for name, opt in card.options.items():
            value = as_toml(card.defaults.get(name, opt.default)) if opt.has_default or name in card.defaults else "—"
            lines.append(
                f"| `{name}` | {_cell(opt.describe())} | `{_cell(value)}` | {_cell(opt.help)} | {cite(opt.source)} |"
            )
        lines.append("")
    for name in sorted(card.recipes, key=lambda n: n != RECIPE_DEFAULT):
        settings = card.recipes[name]
        lines += [
            f"## Recipe `{name}`" + (" (the default)" if name == RECIPE_DEFAULT else ""),
            "",
            "| setting | value | source |",
            "|---|---|---|",
        ]
        lines += [f"| `{k}` | `{_cell(as_toml(v))}` | {cite(src)} |" for k, (v, src) in settings.items()]
        lines.append("")
    if card.tuning_space:
        lines += ["## Tuning space", "", ", ".join(f"`{k}`: {v}" for k, v in card.tuning_space.items()), ""]
    published = [(k, p) for k, p in PUBLISHED.items() if k[0] == card.name]
    if published:
        lines += ["## Published numbers", "", "| dataset | backbone | published | source |", "|---|---|---|---|"]
        for (_, dataset, backbone), p in published:
            value = f"{p.value * 100:+.2f} pp vs {p.versus}" if p.versus else f"{p.value * 100:.2f}%"
            lines.append(f"| {dataset} | {backbone} | {value} | {cite(p.source)} |")
        lines.append("")
        measured = reproduction_table(reproductions, card.name)
        if measured:
            lines += [
                "### Measured",
                "",
                "From the committed per-seed results (the [results](../results.md) page).",
                "",
            ]
            lines += [*measured, ""]
    if card.notes:
        lines += ["## Notes", "", cite(card.notes), ""]
    return "\n".join(lines)


def methods() -> list[str]:
    from ffbench.core.registry import METHODS

    names = METHODS.names()
    reproductions = committed("reproduction")
    index = [
        "# Methods",
        "",
        "Every built-in method, generated from its card (`ffbench list methods NAME` prints the same). The "
        "facts behind the cards (formulas, reference code, published numbers, pitfalls) are in the "
        "[method notes](../../methods/notes/index.md).",
        "",
        "| method | family | summary |",
        "|---|---|---|",
    ]
    for name in names:
        entry = METHODS.get(name)
        _write(OUT / "methods" / f"{name}.md", method_page(entry, reproductions))
        index.append(f"| [{name}]({name}.md) | {entry.card.family} | {_cell(entry.card.summary)} |")
    _write(OUT / "methods" / "index.md", "\n".join(index) + "\n")
    return names


# ---------------------------------------------------------------- the suite file
def _options_table(options: dict, defaults: dict) -> list[str]:
    rows = ["| key | accepts | default | what |", "|---|---|---|---|"]
    for name, opt in options.items():
        value = as_toml(defaults.get(name, opt.default)) if opt.has_default or name in defaults else "—"
        rows.append(f"| `{name}` | {_cell(opt.describe())} | `{_cell(value)}` | {_cell(opt.help)} |")
    return rows


def suite_reference() -> None:
    from ffbench.core.config import TRAIN_FIELDS
    from ffbench.core.registry import AXES, BACKBONES, DATASETS, METHODS
    from ffbench.plan import suite

    lines = [
        "# Suite file reference",
        "",
        "Generated from the schema the suite checker uses and from the registries: every key below is checked "
        "before anything trains, and a key not listed here is an error naming the file and the allowed keys. "
        "The [guide](../../guide/suites.md) explains how the sections combine.",
        "",
        "## Sections",
        "",
        "| section | holds |",
        "|---|---|",
    ]
    lines += [f"| `[{k}]` | {_cell(v)} |" for k, v in suite._SECTIONS.items()]
    lines += ["", "## `[suite]`", "", "| key | type |", "|---|---|"]
    for key, kind in suite._SUITE_KEYS.items():
        kinds = kind if isinstance(kind, tuple) else (kind,)
        lines.append(f"| `{key}` | {' or '.join(k.__name__ for k in kinds)} |")
    lines += [
        "",
        f"`batch_seeds` takes {', '.join(f'`{json.dumps(v)}`' for v in suite.BATCH_SEEDS)}; `name`: {suite.NAME_RULE}.",
        "",
        "## `[design]`",
        "",
        f"Required: {', '.join(f'`{k}`' for k in suite._DESIGN_KEYS)} (lists of registered names; `seeds` a list "
        f"of integers up to {suite.INT_MAX}). Optional: {', '.join(f'`{k}`' for k in suite._DESIGN_OPTIONAL)}: "
        f"`plan` is one of {', '.join(f'`{p}`' for p in suite.PLANS)}; `only` and `exclude` are lists of tables "
        "naming a level per factor or axis.",
        "",
        "## Training fields",
        "",
        'Set in `[train]`, per dataset in `[datasets."NAME"]`, per method in `[methods."NAME"]`, or as an axis or '
        "tuning parameter.",
        "",
        "| field | accepts | default | what |",
        "|---|---|---|---|",
    ]
    for name, opt in TRAIN_FIELDS.items():
        default = as_toml(opt.default) if opt.has_default else "—"
        lines.append(f"| `{name}` | {_cell(opt.describe())} | `{_cell(default)}` | {_cell(opt.help)} |")
    lines += [
        "",
        '## `[methods."NAME"]`',
        "",
        "Training fields (above), `recipe`, and the method's options:",
        "",
    ]
    for name in METHODS.names():
        card = METHODS.get(name).card
        if card.options:
            lines += [f"### `{name}`", "", *_options_table(card.options, card.defaults), ""]
    for title, reg, extra in (
        ("backbones", BACKBONES, "the backbone's options"),
        ("datasets", DATASETS, "`root` (a folder of the dataset's files), training fields, and the dataset's options"),
    ):
        lines += [f'## `[{title}."NAME"]`', "", f"{extra.capitalize()}:", ""]
        for name in reg.names():
            card = reg.get(name).card
            lines += [f"### `{name}`", "", card.summary, ""]
            if card.options:
                lines += [*_options_table(card.options, card.defaults), ""]
    lines += [
        "## `[axes]`",
        "",
        'A registered axis takes a list of levels (`granularity = ["layer", "block"]`). A generic axis is a '
        "table with `levels` and exactly one of "
        + ", ".join(f"`{k}` (a {v} {'field' if v == 'train' else 'option'})" for k, v in suite._GENERIC_KEYS.items())
        + ". The registered axes:",
        "",
        "| axis | sets | levels | what |",
        "|---|---|---|---|",
    ]
    for name in AXES.names():
        axis = AXES.get(name).obj
        what = "training field" if axis.target == "train" else f"{axis.target} option"
        sets = f"{what} {' / '.join(f'`{k}`' for k in axis.keys)}"
        lines.append(f"| `{name}` | {sets} | {_cell(axis.level.describe())} | {_cell(axis.summary)} |")
    lines += [
        "",
        "## `[tuning]`",
        "",
        f"Keys: {', '.join(f'`{k}`' for k in suite._TUNING_KEYS)}; at most {suite.MAX_TRIALS:,} `trials`. "
        '`space` maps a method to `{field = [kind, low, high]}` with kind `"log"`, `"float"` or `"int"`, or '
        '`["choice", a, b, ...]`.',
        "",
        "## `[transfer]`",
        "",
        f"Keys: {', '.join(f'`{k}`' for k in suite._TRANSFER_KEYS)}, and training fields of the source stage; or "
        '`[transfer."TARGET"]` per target dataset.',
        "",
    ]
    _write(OUT / "reference" / "suite.md", "\n".join(lines))


# ---------------------------------------------------------------- the command line
def cli_reference() -> None:
    from ffbench.cli import build_parser

    parser = build_parser()
    lines = ["# Command line", "", "Generated from the argument parser (`ffbench COMMAND --help` prints the same).", ""]
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        buf = io.StringIO()
        sub.print_help(buf)
        lines += [f"## `ffbench {name}`", "", "```text", buf.getvalue().rstrip(), "```", ""]
    _write(OUT / "reference" / "cli.md", "\n".join(lines))


# ---------------------------------------------------------------- results
def study_table(df, control: str = "bp") -> list[str]:
    """Per cell: n, mean with its t interval, and the difference from the control with the verdict, from
    ``stats.compare`` (paired by seed, one Holm family), as the comparison report computes them."""
    import numpy as np

    from ffbench import stats

    factors = [c for c in ("method", "dataset", "backbone", "train_size", "adapt") if c in df]
    strata = [f for f in factors if f != "method"]
    verdicts = {}
    if control in set(df["method"]):
        comp = stats.compare(df, "test_acc", control=control, factors=factors, n_resamples=200, rng=0)
        verdicts = {tuple(r[f] for f in factors): r for r in comp.to_dict("records")}
    lines = [
        "| " + " | ".join(strata) + f" | method | n | mean [95% CI] (%) | Δ vs {control} pp [decision CI] | verdict |",
        "|" + "---|" * (len(strata) + 5),
    ]
    ok = df[df["status"] == "done"]
    for key, cell in ok.groupby([*strata, "method"], sort=True):
        values = cell["test_acc"].to_numpy(float)
        ci = stats.t_interval(values)
        mean = f"{values.mean() * 100:.2f}" + (
            f" [{ci.low * 100:.2f}, {ci.high * 100:.2f}]" if np.isfinite(ci.low) else ""
        )
        row = dict(zip([*strata, "method"], key))
        hit = verdicts.get(tuple(row[f] for f in factors))
        delta = verdict = "control" if row["method"] == control else "—"
        if hit is not None:
            delta = f"{hit['delta'] * 100:+.2f} [{hit['dec_low'] * 100:+.2f}, {hit['dec_high'] * 100:+.2f}]"
            verdict = hit["verdict"]
        failed = int((df.set_index([*strata, "method"]).index == key).sum()) - len(values)
        n = f"{len(values)}" + (f" ({failed} failed)" if failed else "")
        lines.append(
            "| " + " | ".join(str(row[s]) for s in strata) + f" | {key[-1]} | {n} | {mean} | {delta} | {verdict} |"
        )
    return lines


def results() -> None:
    lines = [
        "# Results",
        "",
        "Rendered from the committed per-seed CSVs (`benchmarks/reproduction/`, `benchmarks/studies/`, written by "
        "`benchmarks/studies/per_seed.py`) each time the site is built, with the statistics the reports use: a "
        "rerun that rewrites a CSV updates these tables. [Reproduction](../reproduction.md) says how each was "
        "run and what the rows mean.",
        "",
    ]
    measured = reproduction_table(committed("reproduction"))
    if measured:
        lines += [
            "## Reproductions",
            "",
            "Each published number against ffbench's mean over seeds with its 95% t interval (the reproduction "
            "report's own rows), and where the published number lies. *best test epoch*: the mean of each seed's "
            "best test accuracy over its evaluated epochs, the test-set selection some reference code makes "
            "(optimistic by construction); ffbench's number selects the epoch on validation.",
            "",
            *measured,
            "",
        ]
    for folder in sorted(p.name for p in (ROOT / "benchmarks").iterdir() if p.is_dir() and p.name != "reproduction"):
        studies = {k: v for k, v in committed(folder).items() if {"method", "seed", "status", "test_acc"} <= set(v)}
        if studies:  # every folder of per-seed CSVs (benchmarks/studies/, and any added beside it)
            lines += [f"## {folder.replace('-', ' ').capitalize()} (`benchmarks/{folder}/`)", ""]
            for name, df in studies.items():
                lines += [f"### `{name.removesuffix('.csv')}`", "", *study_table(df), ""]
    _write(OUT / "results.md", "\n".join(lines))


# ---------------------------------------------------------------- snippets included by hand-written pages
def references() -> None:
    """The papers the reports cite (``REFERENCES``), for the statistics page."""
    from ffbench.analysis.report_context import REFERENCES

    _write(OUT / "snippets" / "references.md", "\n".join(f"- {v}" for v in sorted(REFERENCES.values())) + "\n")


# ---------------------------------------------------------------- mkdocs
def generate() -> list[str]:
    sys.path.insert(0, str(ROOT))
    names = methods()
    references()
    suite_reference()
    cli_reference()
    results()
    return names


def _nav(names: list[str]) -> list:
    notes = sorted(p.name for p in NOTES.glob("*.md") if p.name != "index.md")
    return [
        "generated/methods/index.md",
        *[f"generated/methods/{n}.md" for n in names],
        {"Method notes": ["methods/notes/index.md", *[f"methods/notes/{n}" for n in notes]]},
    ]


def on_config(config, **kwargs):  # the mkdocs hook: pages first, then the navigation that lists them
    names = generate()
    for entry in config["nav"] or []:
        if isinstance(entry, dict) and "Methods" in entry:
            entry["Methods"] = _nav(names)
    return config


if __name__ == "__main__":
    generate()
