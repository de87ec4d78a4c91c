"""Reports built from a suite's results in a real store (synthetic numbers: rendering and statistics are
under test here; tests/test_runner.py builds one from really trained runs). tests/test_report_browser.py
opens them in headless Chromium."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
from suites import suite_toml

from ffbench import stats
from ffbench.analysis.document import Section
from ffbench.analysis.report import REPORTS, ReportKind, build_report, report_dir, report_files, report_kind
from ffbench.cli.report import add_report_arguments, main_report
from ffbench.stats import cell_summaries

SUITE = suite_toml(
    "reptest",
    suite={"control": "bp", "description": "report test: two BP baselines crossed with a class-count axis"},
    methods=["bp", "bp.deepsup"],
    datasets=["digits"],
    seeds=[0, 1, 2],
    epochs=3,
    batch_size=64,
    widths=[32, 32],
    extra="\n[axes]\nclasses = [5, 10]\n",
)
RESAMPLES = 2000  # enough for the checks, quicker than the default 10000 (one test uses the default)


def _curves(rng, final: float, units: int) -> list[dict]:
    """Three epochs rising to ``final``, with per-unit accuracies (deeper units closer to the model's)."""
    rows = []
    for epoch in (1, 2, 3):
        acc = final - (3 - epoch) * 0.04 + rng.normal(0, 0.005)
        row = {"epoch": epoch, "train_loss": 1.5 / epoch, "val_acc": acc + 0.01, "test_acc": acc, "epoch_time_s": 0.1}
        for k in range(1, units + 1):
            row[f"test_acc.unit{k}"] = acc - 0.1 * (units - k) / units
            row[f"val_acc.unit{k}"] = acc - 0.1 * (units - k) / units + 0.01
        rows.append(row)
    return rows


def make_store(out: Path) -> Path:
    """A store holding what the suite above would produce, with synthetic numbers (the reports are about
    statistics and rendering, not training): 12 evaluation runs, one failed run more, and three tuning
    trials per method; bp.deepsup records per-unit accuracy (its last unit is its output under its default
    rule 'last', so that unit's accuracy equals the model's), bp does not."""
    import numpy as np

    from ffbench.core.config import RunConfig
    from ffbench.record.store import Store

    (out / "reptest.toml").write_text(SUITE)
    store = Store(out / "results.db")
    rng = np.random.default_rng(0)
    base = {("bp", 5): 0.93, ("bp", 10): 0.90, ("bp.deepsup", 5): 0.925, ("bp.deepsup", 10): 0.88}
    rows, outcomes = [], {}
    for (method, classes), acc in base.items():
        cell = f"{method.replace('.', '')}{classes:02d}"
        factors = {"backbone": "mlp", "classes": classes, "dataset": "digits", "method": method}
        units = 2 if method == "bp.deepsup" else 0
        runs = [("evaluation", seed, None, seed) for seed in (0, 1, 2)]
        if (method, classes) == ("bp.deepsup", 5):
            runs.append(("evaluation", 3, None, 3))  # a run that diverged
        if classes == 10:
            runs += [("tuning", 100, trial, f"t{trial}") for trial in range(3)]
        for role, seed, trial, tag in runs:
            run_id = f"{cell}-{'s' if role == 'evaluation' else ''}{tag}"
            config = RunConfig(
                method=method, dataset="digits", backbone="mlp", epochs=3, seed=seed, classes=classes
            ).to_dict()
            rows.append(
                dict(
                    run_id=run_id,
                    suite="reptest",
                    suite_version=1,
                    cell_id=cell,
                    role=role,
                    seed=seed,
                    trial=trial,
                    factors=factors,
                    config=config,
                )
            )
            if seed == 3:
                outcomes[run_id] = ("failed", {}, [], "Diverged: non-finite training loss (nan) in epoch 2")
                continue
            final = acc + rng.normal(0, 0.01) - (0.02 * trial if role == "tuning" else 0)
            curves = _curves(rng, final, units)
            metrics = {"val_acc": curves[-1]["val_acc"], "best_epoch": 3}
            if role == "evaluation":
                metrics.update({k: v for k, v in curves[-1].items() if k.startswith("test_acc")})
                metrics.update({k: v for k, v in curves[-1].items() if k.startswith("val_acc.")})
            else:  # tuning never looks at the test set
                curves = [{k: v for k, v in r.items() if not k.startswith("test_")} for r in curves]
            compute = {
                "epoch_time_s": 0.1 * (1 + units) + rng.normal(0, 0.005),
                "images_per_s": 5000.0,
                "saved_bytes_per_step": 40000 * (3 - units),
                "peak_mem_bytes": None,
            }
            outcomes[run_id] = ("done", metrics, curves, None, compute)
    store.add_runs(rows)
    for run_id, (status, metrics, curves, error, *compute) in outcomes.items():
        assert store.claim(run_id, "test", 600)
        assert store.finish(
            run_id, "test", status, metrics=metrics, curves=curves, compute=compute[0] if compute else {}, error=error
        )
    return out


@pytest.fixture(scope="module")
def suite_out(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("suite"))


@pytest.fixture(scope="module")
def built(suite_out):
    paths = build_report(suite_out, "reptest", control="bp", all_pairs=True, n_resamples=RESAMPLES, seed=1)
    return suite_out, paths


def test_build_report_writes_every_kind(built):
    out, paths = built
    root = report_dir(out, "reptest")
    names = {p.relative_to(root).as_posix() for p in paths}
    for kind in ("comparison", "ablation", "layers", "index"):
        assert f"{kind}.html" in names and f"{kind}.md" in names
    assert all(p.exists() for p in paths)
    assert sorted(paths) == report_files(out, "reptest")  # what the tracker attaches
    for kind in ("comparison", "ablation", "layers"):
        pngs = sorted((root / "figures" / kind).glob("*.png"))
        html = (root / f"{kind}.html").read_text()
        md = (root / f"{kind}.md").read_text()
        assert pngs and html.count("data:image/png;base64,") == len(pngs)  # every figure embedded
        assert all(f"figures/{kind}/{p.name}" in md for p in pngs)  # and linked from the markdown
        assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
        assert 'src="http' not in html and "<link" not in html  # self-contained


def test_report_states_methods_n_family_rope_and_seed(built):
    out, _ = built
    md = (report_dir(out, "reptest") / "comparison.md").read_text()
    for phrase in (
        f"{RESAMPLES} resamples",
        "seeded 1",
        "Holm",
        "Benjamini–Hochberg",
        "ROPE",
        "±0.5 pp",
        "paired t-test",
        "Wilcoxon",
        "Hedges' g",
        "fewer than 6 pairs",
        "α = 0.05",
        "BCa",
    ):
        assert phrase in md, phrase
    # the failed run is counted and listed, never silently dropped
    assert "1 failed" in md and "Diverged: non-finite training loss" in md and "-s3 |" in md
    # one confirmatory comparison per class-count level, each with its verdict first: in the headline and in
    # the comparison section; the seed advisor's rows follow the same comparisons
    row = re.compile(r"\| bp\.deepsup \| [^|]+ \| bp \| digits / mlp / classes=")
    verdict_rows = [ln for ln in md.splitlines() if row.search(ln)]
    assert len(verdict_rows) == 4 and all(ln.split(" | ")[0][2:] in stats.VERDICTS for ln in verdict_rows)
    advisor = [
        ln for ln in md.splitlines() if ln.startswith("| digits / mlp / classes=") and "| bp.deepsup | bp |" in ln
    ]
    assert len(advisor) == 2
    assert "Tuning budget curves" in md and "bp.deepsup" in md
    abl = (report_dir(out, "reptest") / "ablation.md").read_text()
    assert "classes: 10 vs 5" in abl and "OLS" in abl and "stratified bootstrap" in abl.lower()
    layers = (report_dir(out, "reptest") / "layers.md").read_text()
    assert "Fisher" in layers and "pearson" in layers and "spearman" in layers
    assert "Methods without per-unit accuracy (not shown): bp" in layers


def test_tables_are_saved_as_csv(built):
    out, _ = built
    import pandas as pd

    comp = pd.read_csv(report_dir(out, "reptest") / "tables" / "comparison" / "comparisons.csv")
    assert set(comp["verdict"]) <= set(stats.VERDICTS) and (comp["n_pairs"] == 3).all()
    assert (comp["seed"] == 1).all() and comp["ci_method"].notna().all()  # every interval says how it was made
    boot = comp["ci_method"].str.contains("BCa|percentile")
    assert (comp.loc[boot, "n_resamples"] == RESAMPLES).all()
    assert set(comp["correction"]) == {"holm"} and (comp["family_size"] == 2).all()


def test_cell_summaries_from_the_store(suite_out):
    from ffbench.record.store import Store

    frame = Store(suite_out / "results.db").frame("reptest")
    out = cell_summaries(frame, control="bp", n_resamples=RESAMPLES)
    assert len(out) == 4
    failed_cell = frame[frame["status"] == "failed"]["cell_id"].iloc[0]
    assert out[failed_cell]["failures"] == 1 and out[failed_cell]["n"] == 3 and out[failed_cell]["runs"] == 4
    for cid, s in out.items():
        method = frame[frame["cell_id"] == cid]["method"].iloc[0]
        assert s["verdict"] == "control" if method == "bp" else s["verdict"] in stats.VERDICTS
        assert s["ci_low"] <= s["mean"] <= s["ci_high"]
        json.dumps(s)  # plain values, ready to log


def test_default_settings_and_the_command_line(suite_out, capsys):
    parser = add_report_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        [
            str(suite_out / "reptest.toml"),
            "--out",
            str(suite_out / "cli"),
            "--kind",
            "comparison",
            "--store",
            str(suite_out / "results.db"),
            "--rope-pp",
            "1",
            "--rope-pp",
            "digits=0.2",
        ]
    )
    assert main_report(args) == 0
    md = (report_dir(suite_out / "cli", "reptest") / "comparison.md").read_text()
    assert "digits: ±0.2 pp" in md and "10000 resamples" in md and "seeded 0" in md  # defaults stated
    assert not (report_dir(suite_out / "cli", "reptest") / "layers.md").exists()
    assert "comparison.html" in capsys.readouterr().out
    bad = parser.parse_args(["reptest", "--out", str(suite_out), "--kind", "nope"])
    assert main_report(bad) == 2


def test_a_report_kind_is_a_plugin(suite_out):
    name = "test-minimal"
    if name not in REPORTS:

        @report_kind(name, "a minimal kind defined in a test")
        class Minimal(ReportKind):
            title = "Minimal"

            def build(self, ctx):
                return [Section("Cells").table("cells", ctx.cells())]

    paths = build_report(suite_out / "plugin", "reptest", kinds=[name], store=suite_out / "results.db", n_resamples=500)
    md = next(p for p in paths if p.name == f"{name}.md").read_text()
    assert "# Minimal: reptest" in md and "| method |" in md


def test_missing_tuning_runs_and_missing_store_are_explained(suite_out, tmp_path):
    from ffbench.record.store import Store

    frame = Store(suite_out / "results.db").frame("reptest")
    paths = build_report(tmp_path, "reptest", kinds=["comparison"], frame=frame, n_resamples=500)
    md = next(p for p in paths if p.name == "comparison.md").read_text()
    assert "No tuning runs" in md
    with pytest.raises(FileNotFoundError, match="run the suite first"):
        build_report(tmp_path / "nothing", "reptest")
    with pytest.raises(ValueError, match="suites there: reptest"):
        build_report(suite_out / "x", "other", store=suite_out / "results.db")


def test_factors_come_from_the_stored_rows(tmp_path):
    """An axis named like a metric ('train_size' starts with 'train_') is still a factor: the report takes
    the factors from the rows' stored factors, not from the column names."""
    from ffbench.analysis.report_context import load_tables
    from ffbench.record.store import Store

    store = Store(tmp_path / "results.db")
    rows = [
        dict(
            run_id=f"c{size}-{m}-s{seed}",
            suite="ts",
            suite_version=1,
            cell_id=f"c{size}-{m}",
            role="evaluation",
            seed=seed,
            trial=None,
            config={"seed": seed},
            factors={"backbone": "mlp", "dataset": "digits", "method": m, "train_size": size, "bn": None},
        )
        for size in (100, 1000)
        for m in ("bp", "sff")
        for seed in (0, 1, 2)
    ]
    store.add_runs(rows)
    for r in rows:
        assert store.claim(r["run_id"], "test", 600)
        store.finish(r["run_id"], "test", "done", metrics={"test_acc": 0.8}, curves=[], compute={})
    tables = load_tables(store, "ts")
    assert tables.factors == ["method", "dataset", "backbone", "train_size"]  # bn applies to no run: left out
    assert "train_size" not in stats.infer_factors(tables.frame)  # what guessing from the columns would miss
    assert store.suites() == ["ts"]


def test_report_kinds_are_listed(capsys):
    from ffbench.cli import main

    assert main(["list", "reports"]) == 0
    listed = capsys.readouterr().out
    assert all(f"{k}  [report]" in listed for k in ("comparison", "ablation", "layers"))


def _md_tables(md: str) -> list[list[str]]:
    """The header cells of every markdown table."""
    lines = md.splitlines()
    return [
        [c.strip() for c in ln.strip("|").split(" | ")]
        for ln, nxt in zip(lines, lines[1:])
        if ln.startswith("| ") and nxt.startswith("|---")
    ]


def test_every_page_opens_with_the_headline_and_cites_only_papers(built):
    out, _ = built
    root = report_dir(out, "reptest")
    for page in ("index", "comparison", "ablation", "layers"):
        md = (root / f"{page}.md").read_text()
        html = (root / f"{page}.html").read_text()
        assert md.index("## Headline") < md.index("## ", md.index("## Headline") + 3)  # the first section
        assert '<section class="headline">' in html
        # the winner per task: classes=10 is decided (bp.deepsup is worse there), classes=5 is not
        assert re.search(r"\| digits / mlp / classes=10 \| bp \| [^|]+ \| 3 \| bp \|", md)
        assert "every other method worse than bp" in md
        assert "Failures: 1 of 13 evaluation runs failed" in md and "P(worse / ROPE / better)" in md
        for doc in ("methods.md", "harness-notes", "§", "finding ("):  # nothing the reader does not have
            assert doc not in md, (page, doc)
        assert "## References" in md and "Corani, G. & Benavoli, A. (2015)" in md
        for header in _md_tables(md):  # the verdict first, in every table that has one
            assert "verdict" not in header or header[0] == "verdict", (page, header)
    assert "arXiv:2504.11229" in (root / "layers.md").read_text()
    assert "arXiv:1909.03004" in (root / "comparison.md").read_text()  # Dodge et al., the budget curves
    css = (root / "comparison.html").read_text()
    assert "@media print" in css and "position:sticky" in css and 'class="table-wrap"' in css


def test_layers_mark_the_model_output_and_leave_it_out_of_the_correlations(built):
    import pandas as pd

    out, _ = built
    root = report_dir(out, "reptest")
    md = (root / "layers.md").read_text()
    # bp.deepsup's unit 2 is its model output (identical curves): marked, not presented as a finding
    assert "| 2 (= model output) |" in md
    assert "The model's own output (left out of the correlations): bp.deepsup / digits / mlp / classes=10: unit 2" in md
    for name in ("corr_within", "corr_across"):
        table = pd.read_csv(root / "tables" / "layers" / f"{name}.csv")
        assert len(table) and set(table["unit"]) == {1}, name
    within = md[md.index("## Layer–model correlation within runs") : md.index("## Layer–model correlation across")]
    assert "| bp.deepsup / digits / mlp / classes=5 | 1 |" in within
    assert not re.search(r"\| bp\.deepsup / [^|]+ \| 2 \|", within)


def test_figures_are_large_clipped_shared_with_legends_outside():
    import pandas as pd

    from ffbench.analysis import figures as F
    from ffbench.analysis.document import png_bytes

    # a t band from three seeds near 100% overshoots: the figure clips it to the metric's range
    bands = pd.DataFrame(
        [
            {"task": t, "method": m, "epoch": e, "mean": 0.97, "ci_low": 0.9, "ci_high": 1.4}
            for t in ("a", "b")
            for m in ("bp", "sff", "my.method")
            for e in (1, 2, 3)
        ]
    )
    fig = F.learning_curves(bands)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2 and axes[0].get_shared_y_axes().joined(axes[0], axes[1])  # one scale for all panels
    for ax in axes:
        tops = [p.get_paths()[0].vertices[:, 1].max() for p in ax.collections]
        assert tops and max(tops) <= 100.0 + 1e-9  # the band stops at 100%
        assert ax.get_ylim()[1] <= 101.0 and ax.get_legend() is None  # no legend on the data
    assert len(fig.legends) == 1
    colours = {ln.get_label(): ln.get_color() for ln in fig.legends[0].get_lines()}
    assert colours["bp"] == F.method_color("bp") and colours["my.method"] == F.method_color("my.method")
    png = png_bytes(fig)
    width = int.from_bytes(png[16:20], "big")
    assert width >= 900, width


def test_one_colour_per_method_everywhere():
    from ffbench.analysis import figures as F
    from ffbench.core.registry import METHODS

    builtins = list(F.BUILTIN_COLORS)
    assert len({F.method_color(m) for m in builtins}) == len(builtins)  # the built-ins never share a colour
    shipped = {n for n in METHODS.names() if METHODS.get(n).obj.__module__.startswith("ffbench.methods.")}
    assert shipped <= set(builtins), f"built-in methods without a fixed colour: {sorted(shipped - set(builtins))}"
    assert F.method_color("bp") == F.method_color("bp[classes=5]")  # a treatment keeps its method's colour
    # a name outside the built-ins gets the same colour in every process (a digest, not Python's hash())
    import subprocess
    import sys

    code = "from ffbench.analysis.figures import method_color; print(method_color('my.method'))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    ).stdout.strip()
    assert other == str(F.method_color("my.method"))


def test_a_panel_of_many_methods_slants_their_names_so_none_overlap():
    import pandas as pd

    from ffbench.analysis import figures as F
    from ffbench.analysis.document import png_bytes

    def cells(methods):
        return pd.DataFrame(
            [{"task": "t", "method": m, "mean": 0.9, "ci_low": 0.85, "ci_high": 0.95, "n": 5} for m in methods]
        )

    many = ["bp", "bp.deepsup", "ff.hinton", "symba", "sff", "asge", "cafo", "monoforward", "scff", "pepita"]
    for methods, slanted in ((["bp", "sff"], False), (many, True)):
        fig = F.accuracy_by_method(cells(methods), control="bp")
        png_bytes(fig)  # drawn, so the labels have their extents
        labels = [t for t in fig.axes[0].get_xticklabels() if t.get_text()]
        assert len(labels) == len(methods) and all((t.get_rotation() > 0) == slanted for t in labels)
        boxes = [t.get_window_extent() for t in labels]
        assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in labels]
