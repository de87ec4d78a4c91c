"""Pages generated from the code before mkdocs builds the site, so they cannot drift from it: one page per
method (from its card), the suite file reference (from the checker's schema), the command line (from the
argument parser) and the results tables (from the committed per-seed CSVs). Written under docs/generated/."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "generated"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:  # unchanged pages keep their time: serve reloads less
        path.write_text(text)


# ---------------------------------------------------------------- methods
def method_page(entry) -> str:
    from ffbench.core.registry import RECIPE_DEFAULT
    from ffbench.reports.reproduction import PUBLISHED

    card, cls = entry.card, entry.obj
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
    lines += ["| | |", "|---|---|", *[f"| {k} | {_cell(v)} |" for k, v in facts if v], ""]
    if card.options:
        lines += ["## Options", "", "| option | accepts | default | what | source |", "|---|---|---|---|---|"]
        for name, opt in card.options.items():
            default = repr(opt.default) if opt.has_default else "—"
            lines.append(
                f"| `{name}` | {_cell(opt.describe())} | `{_cell(default)}` | {_cell(opt.help)} | {_cell(opt.source)} |"
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
        lines += [f"| `{k}` | `{_cell(repr(v))}` | {_cell(src)} |" for k, (v, src) in settings.items()]
        lines.append("")
    if card.tuning_space:
        lines += ["## Tuning space", "", ", ".join(f"`{k}`: {v}" for k, v in card.tuning_space.items()), ""]
    published = [(k, p) for k, p in PUBLISHED.items() if k[0] == card.name]
    if published:
        lines += ["## Published numbers", "", "| dataset | backbone | published | source |", "|---|---|---|---|"]
        for (_, dataset, backbone), p in published:
            value = f"{p.value * 100:+.2f} pp vs {p.versus}" if p.versus else f"{p.value * 100:.2f}%"
            lines.append(f"| {dataset} | {backbone} | {value} | {_cell(p.source)} |")
        lines += ["", "The measured rows are on the [results](../results.md) page.", ""]
    if card.notes:
        lines += ["## Notes", "", card.notes, ""]
    return "\n".join(lines)


def methods() -> list[str]:
    from ffbench.core.registry import METHODS

    names = METHODS.names()
    index = [
        "# Methods",
        "",
        "Every built-in method, generated from its card (`ffbench list methods NAME` prints the same).",
        "",
        "| method | family | summary |",
        "|---|---|---|",
    ]
    for name in names:
        entry = METHODS.get(name)
        _write(OUT / "methods" / f"{name}.md", method_page(entry))
        index.append(f"| [{name}]({name}.md) | {entry.card.family} | {_cell(entry.card.summary)} |")
    _write(OUT / "methods" / "index.md", "\n".join(index) + "\n")
    return names


# ---------------------------------------------------------------- the suite file
def suite_reference() -> None:
    from ffbench.core.config import TRAIN_FIELDS
    from ffbench.plan import suite

    lines = [
        "# Suite file reference",
        "",
        "Generated from the schema the suite checker uses: every field below is checked before anything trains.",
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
        "## Training fields",
        "",
        'Set in `[train]`, per method in `[methods."NAME"]`, or as an axis or tuning parameter.',
        "",
        "| field | accepts | default | what |",
        "|---|---|---|---|",
    ]
    for name, opt in TRAIN_FIELDS.items():
        default = repr(opt.default) if opt.has_default else "—"
        lines.append(f"| `{name}` | {_cell(opt.describe())} | `{_cell(default)}` | {_cell(opt.help)} |")
    _write(OUT / "reference" / "suite.md", "\n".join(lines) + "\n")


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
def results() -> None:
    import pandas as pd

    lines = [
        "# Results",
        "",
        "Rendered from the committed per-seed CSVs (`benchmarks/reproduction/`, `benchmarks/studies/`) each "
        "time the site is built: a rerun that rewrites a CSV updates these tables.",
        "",
    ]
    for folder, title in (("reproduction", "Reproductions"), ("studies", "Studies")):
        csvs = sorted((ROOT / "benchmarks" / folder).glob("*.csv"))
        if not csvs:
            continue
        lines += [f"## {title}", ""]
        for path in csvs:
            df = pd.read_csv(path)
            keys = [k for k in ("method", "dataset", "backbone") if k in df]
            acc = "test_acc" if "test_acc" in df else None
            if not keys or acc is None:
                continue
            done = df[df.get("status", "done") == "done"] if "status" in df else df
            table = done.groupby(keys, sort=False)[acc].agg(["count", "mean", "std"]).reset_index()
            lines += [
                f"### `{path.name}`",
                "",
                "| " + " | ".join(keys) + " | seeds | test accuracy (%) |",
                "|" + "---|" * (len(keys) + 2),
            ]
            for r in table.to_dict("records"):
                sd = "" if pd.isna(r["std"]) else f" ± {r['std']:.2f}"
                lines.append("| " + " | ".join(str(r[k]) for k in keys) + f" | {r['count']} | {r['mean']:.2f}{sd} |")
            lines.append("")
    _write(OUT / "results.md", "\n".join(lines))


def generate() -> None:
    sys.path.insert(0, str(ROOT))
    methods()
    suite_reference()
    cli_reference()
    results()


def on_pre_build(config, **kwargs) -> None:  # the mkdocs hook
    generate()


if __name__ == "__main__":
    generate()
