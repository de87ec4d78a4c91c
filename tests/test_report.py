"""The report built end to end from a small, really trained suite, and opened in headless Chromium."""
from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import pytest

from ffbench import stats
from ffbench.report import (REPORTS, ReportKind, Section, add_report_arguments, build_report, cell_summaries,
                            main_report, report_dir, report_files, report_kind)

CHROMIUM = "/usr/bin/chromium"
SUITE = """
[suite]
name = "reptest"
version = 1
control = "bp"
description = "report test: two BP baselines crossed with a class-count axis"

[design]
methods = ["bp", "bp.deepsup"]
datasets = ["digits"]
backbones = ["mlp"]
seeds = [0, 1, 2]

[train]
epochs = 3
batch_size = 64

[backbones.mlp]
widths = [32, 32]

[axes]
classes = [5, 10]
"""
RESAMPLES = 2000  # enough for the checks, quicker than the default 10000 (one test uses the default)


@pytest.fixture(scope="module")
def suite_out(tmp_path_factory):
    """Run the suite with the runner (12 evaluation runs), then add what a suite of this size lacks: tuning
    trials (really trained) and a failed evaluation run, through the store's own claim / finish."""
    import torch

    from ffbench.config import RunConfig
    from ffbench.runner import run_suite
    from ffbench.store import Store
    from ffbench.train import fit

    out = tmp_path_factory.mktemp("suite")
    (out / "reptest.toml").write_text(SUITE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread avoids oversubscription on a shared machine
    try:
        run_suite(str(out / "reptest.toml"), out, device="cpu", progress=False, track=False)
        store = Store(out / "results.db")
        rows = store.rows("reptest", role="evaluation")
        assert len(rows) == 12 and all(r["status"] == "done" for r in rows)
        by_method = {}
        for r in rows:
            by_method.setdefault((r["factors"]["method"], r["factors"]["classes"]), r)
        extra = []
        for method in ("bp", "bp.deepsup"):
            base = by_method[(method, 10)]
            for trial, lr in enumerate((3e-4, 3e-3, 1e-2)):
                cfg = dict(base["config"], seed=100, lr=lr, epochs=2)
                extra.append(dict(run_id=f"{base['cell_id']}-t{trial}", suite="reptest", suite_version=1,
                                  cell_id=base["cell_id"], role="tuning", seed=100, trial=trial,
                                  factors=base["factors"], config=cfg))
        failed = by_method[("bp.deepsup", 5)]
        extra.append(dict(run_id=f"{failed['cell_id']}-s3", suite="reptest", suite_version=1,
                          cell_id=failed["cell_id"], role="evaluation", seed=3, trial=None,
                          factors=failed["factors"], config=dict(failed["config"], seed=3)))
        store.add_runs(extra)
        for r in extra:
            assert store.claim(r["run_id"], "test", 600)
            if r["role"] == "evaluation":
                store.finish(r["run_id"], "test", "failed", metrics={}, curves=[], compute={},
                             error="Diverged: non-finite training loss (nan) in epoch 2")
                continue
            res = fit(RunConfig.from_dict(r["config"]), device="cpu")
            store.finish(r["run_id"], "test", res.status, metrics=res.metrics, curves=res.curves,
                         compute=res.compute, error=res.error)
    finally:
        torch.set_num_threads(threads)
    return out


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
        assert "src=\"http" not in html and "<link" not in html  # self-contained


def test_report_states_methods_n_family_rope_and_seed(built):
    out, _ = built
    md = (report_dir(out, "reptest") / "comparison.md").read_text()
    for phrase in (f"{RESAMPLES} resamples", "seeded 1", "Holm", "Benjamini–Hochberg", "ROPE", "±0.5 pp",
                   "paired t-test", "Wilcoxon", "Hedges' g", "fewer than 6 pairs", "α = 0.05", "BCa"):
        assert phrase in md, phrase
    # the failed run is counted and listed, never silently dropped
    assert "1 failed" in md and "Diverged: non-finite training loss" in md and "-s3 |" in md
    # one confirmatory comparison per class-count level, each with its verdict
    table = [ln for ln in md.splitlines() if ln.startswith("| digits / mlp / classes=") and "| bp.deepsup | bp |" in ln]
    assert len(table) == 4  # 2 in the paired-comparison table, 2 in the seed advisor
    assert any(v in table[0] for v in stats.VERDICTS)
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
    assert (comp["n_resamples"] == RESAMPLES).all() and (comp["seed"] == 1).all()
    assert set(comp["correction"]) == {"holm"} and (comp["family_size"] == 2).all()


def _chromium_check(html: Path, tmp: Path) -> dict:
    """Load a copy of ``html`` with a probe script in headless Chromium; return what the probe saw."""
    probe = ("<script>window.addEventListener('load',()=>{const imgs=[...document.images];"
             "const r={n:imgs.length,ok:imgs.filter(i=>i.complete&&i.naturalWidth>0&&i.naturalHeight>0).length,"
             "sections:document.querySelectorAll('section').length,tables:document.querySelectorAll('table').length};"
             "const p=document.createElement('pre');p.id='probe';p.textContent=JSON.stringify(r);"
             "document.body.appendChild(p);});</script>")
    page = tmp / html.name
    page.write_text(html.read_text().replace("</body>", probe + "</body>"))
    profile = tmp / f"profile-{html.stem}"
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom",
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout)
    assert m, f"the page did not load in Chromium (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(m.group(1).replace("&quot;", '"'))


def test_html_renders_every_figure_in_headless_chromium(built, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; the project's set-up installs Debian's chromium (apt-get install chromium)")
    out, _ = built
    root = report_dir(out, "reptest")
    for kind in ("comparison", "ablation", "layers"):
        seen = _chromium_check(root / f"{kind}.html", tmp_path)
        pngs = list((root / "figures" / kind).glob("*.png"))
        assert seen["n"] == len(pngs) > 0, (kind, seen)
        assert seen["ok"] == seen["n"], f"{kind}: {seen['n'] - seen['ok']} figure(s) did not render"
        assert seen["sections"] >= 3 and seen["tables"] >= 1


def test_cell_summaries_from_the_store(suite_out):
    from ffbench.store import Store

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
    args = parser.parse_args([str(suite_out / "reptest.toml"), "--out", str(suite_out / "cli"), "--kind", "comparison",
                              "--store", str(suite_out / "results.db"), "--rope-pp", "1", "--rope-pp", "digits=0.2"])
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

    paths = build_report(suite_out / "plugin", "reptest", kinds=[name], store=suite_out / "results.db",
                         n_resamples=500)
    md = next(p for p in paths if p.name == f"{name}.md").read_text()
    assert "# Minimal: reptest" in md and "| method |" in md


def test_missing_tuning_runs_and_missing_store_are_explained(suite_out, tmp_path):
    from ffbench.store import Store

    frame = Store(suite_out / "results.db").frame("reptest")
    paths = build_report(tmp_path, "reptest", kinds=["comparison"], frame=frame, n_resamples=500)
    md = next(p for p in paths if p.name == "comparison.md").read_text()
    assert "No tuning runs" in md
    with pytest.raises(FileNotFoundError, match="run the suite first"):
        build_report(tmp_path / "nothing", "reptest")
    with pytest.raises(ValueError, match="suites there: reptest"):
        build_report(suite_out / "x", "other", store=suite_out / "results.db")
