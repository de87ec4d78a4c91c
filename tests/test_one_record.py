"""One suite, one set of results everywhere: the end-of-run table, the report, the export and MLflow's cell
aggregates count the runs of the cells the suite's current design declares (configuration and code), with
real stores, real MLflow and real processes; superseded runs are kept, named once, shown apart on request
and deleted only by `ffbench prune`. Also: method-only axes as method variants, no stale verdict or page
after a method is removed or the version bumped, and the shipped suites' controls."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
from suites import suite_toml
from test_faults import PLUGIN  # backprop under another name, a plugin whose code a test edits

from ffbench.analysis import report
from ffbench.analysis.report import report_dir
from ffbench.cli import main
from ffbench.execution import results
from ffbench.record import export, resultset
from ffbench.record.store import Store

ROOT = Path(__file__).resolve().parent.parent


def write(path: Path, name="onerec", version=1, methods=("bp", "myplug"), train=None, tail="") -> Path:
    path.write_text(suite_toml(name, version=version, methods=methods, seeds=[0, 1, 2], train=train, extra=tail))
    return path


def ffbench(*args: str, plugins: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(plugins)]),
        "OMP_NUM_THREADS": "1",
        "FFBENCH_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "ffbench.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


def plugin_dir(tmp_path: Path) -> Path:
    plugins = tmp_path / "plugins"
    info = plugins / "myplug-0.1.dist-info"
    info.mkdir(parents=True)
    (plugins / "myplug.py").write_text(PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ffbench.methods]\nmyplug = myplug\n")
    (info / "top_level.txt").write_text("myplug\n")
    return plugins


def parents(out: Path, suite: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name(suite)
    return client.search_runs([exp.experiment_id], "tags.`ffbench.kind` = 'cell'", max_results=1000)


def test_a_changed_plugin_and_setting_count_once_in_every_reader(tmp_path, capsys):
    plugins, path, out = plugin_dir(tmp_path), write(tmp_path / "onerec.toml"), tmp_path / "out"
    first = ffbench("run", path, "--out", out, "--device", "cpu", plugins=plugins)  # progress into a log (a pipe)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "\r" not in first.stderr and "onerec: 6/6 runs finished" in first.stderr  # plain lines, not a bar
    (plugins / "myplug.py").write_text(PLUGIN + "\n# edited\n")
    dry = ffbench("run", path, "--out", out, "--dry-run", "--no-estimate", plugins=plugins)
    assert "1 cell of myplug is new: myplug.py changed since the stored results" in dry.stdout, dry.stderr[-2000:]
    assert ffbench("run", path, "--out", out, "--no-progress", "--device", "cpu", plugins=plugins).returncode == 0
    write(path, train={"lr": 0.1})  # a setting changed, the version not
    third = ffbench("run", path, "--out", out, "--no-progress", "--device", "cpu", plugins=plugins)
    assert third.returncode == 0 and "ran 6 of 6" in third.stdout, third.stderr[-3000:]
    assert re.search(r"\| synthetic \| mlp \| bp \| 3 \| 0 \|.*\| control \|", third.stdout)
    assert re.search(r"\| synthetic \| mlp \| myplug \| 3 \| 0 \|", third.stdout)

    # the store keeps everything; the suite's results are the current cells' 6 runs
    store = Store(out / "results.db")
    assert len(store.rows("onerec")) == 15
    res = resultset.load(store, "onerec")
    assert len(res.frame) == 6 and len(res.superseded) == 9 and res.superseded["cell_id"].nunique() == 3
    note = "9 runs of 3 superseded cells (settings or code changed since) are left out"

    # the report (it needs the store only, not the plugin), which also refreshes MLflow's aggregates
    assert main(["report", "onerec", "--out", str(out), "--kind", "comparison", "--resamples", "500"]) == 0
    said = capsys.readouterr().out
    assert "n=3" in said and "(3 pairs)" in said and "n=6" not in said
    assert "All 6 evaluation runs finished" in said and note in said
    cells = pd.read_csv(report_dir(out, "onerec") / "tables" / "comparison" / "cells.csv")
    assert sorted(cells["n"]) == [3, 3]
    verdicts = pd.read_csv(report_dir(out, "onerec") / "tables" / "comparison" / "comparisons.csv")
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 6 and set(table["cell_id"]) == set(res.frame["cell_id"])

    # MLflow: the current cells' parents carry the same n and verdict; the superseded ones are tagged so
    current = {
        p.data.tags["ffbench.cell_id"]: p
        for p in parents(out, "onerec")
        if p.data.tags.get("ffbench.superseded") == "false"
    }
    assert set(current) == res.cells
    assert sorted(int(p.data.metrics["n"]) for p in current.values()) == [3, 3]
    plug = next(p for p in current.values() if p.data.tags["method"] == "myplug")
    assert plug.data.tags["verdict_vs_control"] == verdicts["verdict"].item()
    assert sorted(p.info.run_name for p in current.values()) == ["bp/synthetic/mlp", "myplug/synthetic/mlp"]
    assert sum(p.data.tags.get("ffbench.superseded") == "true" for p in parents(out, "onerec")) == 3

    # the export: the same 6 runs with their identity; the superseded ones on request, flagged
    t = export.load(out, "onerec")["runs"]
    assert len(t) == 6 and not t["superseded"].any() and t["code_fingerprint"].notna().all()
    assert t.groupby("method")["config_hash"].nunique().eq(1).all()
    every = export.load(out, "onerec", include_superseded=True)["runs"]
    assert len(every) == 15 and every["superseded"].sum() == 9 and set(every["method"]) == {"bp", "myplug"}
    assert every[every["method"] == "myplug"].groupby("superseded")["code_fingerprint"].nunique()[True] == 2

    # the report on request shows them apart, never pooled
    assert (
        main(
            [
                "report",
                "onerec",
                "--out",
                str(out),
                "--kind",
                "comparison",
                "--include-superseded",
                "--resamples",
                "500",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "(superseded " in text and "n=6" not in text and "shown apart" in text

    # prune: names what it deletes, deletes only with --yes, and MLflow follows
    assert main(["prune", "onerec", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "9 runs of 3 superseded cells" in said and "nothing deleted" in said
    assert len(Store(out / "results.db").rows("onerec")) == 15
    assert main(["prune", "onerec", "--out", str(out), "--yes"]) == 0
    said = capsys.readouterr().out
    assert "deleted 9 runs" in said and "deleted 12 MLflow runs" in said  # 3 parents, 9 children
    assert len(Store(out / "results.db").rows("onerec")) == 6
    assert {p.data.tags["ffbench.cell_id"] for p in parents(out, "onerec")} == res.cells
    assert main(["prune", "onerec", "--out", str(out)]) == 0 and "nothing to delete" in capsys.readouterr().out


def test_a_removed_method_and_a_version_bump_leave_no_stale_verdict_or_page(tmp_path, capsys):
    path, out = tmp_path / "stale.toml", tmp_path / "out"
    run = ["run", str(path), "--out", str(out), "--no-progress", "--device", "cpu", "--no-tracking"]
    report = ["report", "stale", "--out", str(out), "--resamples", "200"]
    root = report_dir(out, "stale")
    write(path, name="stale", methods=["bp", "bp.deepsup"])
    assert main(run) == 0 and main(report) == 0
    capsys.readouterr()
    assert (root / "layers.html").exists() and "layers.html" in (root / "index.html").read_text()

    write(path, name="stale", methods=["bp"])  # bp.deepsup removed: nothing trains, its verdict goes
    assert main(run) == 0
    assert "ran 0 of 3" in capsys.readouterr().out
    assert main(report) == 0
    said = capsys.readouterr().out
    assert "bp.deepsup" not in said and "3 runs of 1 superseded cell" in said
    index = (root / "index.html").read_text()
    assert "layers.html" not in index and not (root / "layers.html").exists()
    assert not (root / "figures" / "layers").exists()
    assert "bp.deepsup" not in (root / "comparison.html").read_text().split("superseded cell")[0]
    assert "<details" in index  # the kinds that do not apply, in a collapsed note

    write(path, name="stale", methods=["bp", "bp.deepsup"])
    assert main(run) == 0 and main(report) == 0
    assert (root / "layers.html").exists()
    write(path, name="stale", version=2, methods=["bp", "bp.deepsup"])  # a new version: only comparison built
    assert main(run) == 0 and main(report + ["--kind", "comparison"]) == 0
    capsys.readouterr()
    index = (root / "index.html").read_text()
    assert "layers.html" not in index and not (root / "layers.html").exists()
    assert "suite version 2" in (root / "comparison.html").read_text()


VARPLUG = """
from ffbench.core.method import method_card
from ffbench.core.options import Option
from ffbench.methods.bp import BP


@method_card(name="varplug", family="varplug", summary="backprop with an option of its own (a plugin for tests)",
             defaults={**BP.card.defaults, "feedback_scale": 1.0},
             options={**BP.card.options, "feedback_scale": Option(float, 1.0, "a plugin's own option")},
             rules=BP.card.rules, capabilities=BP.card.capabilities)
class VarPlug(BP):
    pass
"""


def test_a_method_only_axis_is_a_variant_of_its_method_beside_the_control(tmp_path, monkeypatch, capsys):
    (tmp_path / "varplug.py").write_text(VARPLUG)
    monkeypatch.syspath_prepend(str(tmp_path))
    import varplug  # noqa: F401  (registers the method)

    path, out = tmp_path / "var.toml", tmp_path / "out"
    write(
        path,
        name="var",
        methods=["bp", "varplug"],
        tail='[axes.feedback_scale]\nmethod_option = "feedback_scale"\nlevels = [0.5, 1.0]\n',
    )
    assert main(["run", str(path), "--out", str(out), "--no-progress", "--device", "cpu", "--no-tracking"]) == 0
    printed = capsys.readouterr().out
    for variant in ("varplug[feedback_scale=0.5]", "varplug[feedback_scale=1]"):
        row = next(ln for ln in printed.splitlines() if f"| {variant} |" in ln)
        assert "no control" not in row and "| 3 |" in row, row  # compared with bp like any method
    assert main(["report", "var", "--out", str(out), "--kind", "comparison", "--resamples", "200"]) == 0
    said = capsys.readouterr().out
    assert "synthetic / mlp: " in said and "feedback_scale=0.5:" not in said  # one task, not one per level
    assert "varplug[feedback_scale=0.5] on synthetic / mlp:" in said
    assert "varplug[feedback_scale=1] on synthetic / mlp:" in said
    verdicts = pd.read_csv(report_dir(out, "var") / "tables" / "comparison" / "comparisons.csv")
    assert set(verdicts["method"]) == {"varplug[feedback_scale=0.5]", "varplug[feedback_scale=1]"}
    assert set(verdicts["reference"]) == {"bp"} and set(verdicts["n_pairs"]) == {3}


def test_an_axis_with_one_level_per_method_leaves_the_control_whole():
    """class-count's `head`: bp at 'linear', bp.deepsup at each matched head; the control stays 'bp'."""
    frame = pd.DataFrame(
        {
            "method": ["bp", "bp.deepsup", "bp.deepsup", "sff"],
            "head": ["linear", "match:sff", "match:cwc", None],
            "classes": [2, 2, 2, 2],
        }
    )
    folded, factors = resultset.fold_variants(frame, ["method", "head", "classes"], control="bp")
    assert factors == ["method", "classes"]
    assert list(folded["method"]) == ["bp", "bp.deepsup[head=match:sff]", "bp.deepsup[head=match:cwc]", "sff"]
    shared = frame.assign(head=["linear", "linear", "match:cwc", None])  # a level two methods share: a task
    assert resultset.fold_variants(shared, ["method", "head"], control="bp")[1] == ["method", "head"]
    alone = frame[frame["method"] == "bp.deepsup"]  # one method: an ablation, not variants
    assert resultset.method_only_axes(alone, ["method", "head"], control="bp") == []


def test_failures_in_words():
    from ffbench.analysis.report_context import fail_rate

    assert fail_rate(0, 3, 0.0, 0.708) == "none of 3"
    assert fail_rate(1, 3, 0.0084, 0.906) == "1 of 3 (1–91%)"
    assert fail_rate(0, 0, 0, 0) == "—"


def test_every_shipped_suite_runs_its_control_on_every_backbone_it_uses():
    from ffbench.core.registry import METHODS
    from ffbench.plan.design import expand
    from ffbench.plan.suite import load

    for path in sorted(glob.glob(str(ROOT / "ffbench" / "suites" / "*.toml"))):
        suite = load(path)
        cells = [c.factors for c in expand(suite).cells]
        for task in sorted({(c["dataset"], c["backbone"]) for c in cells}):
            here = {c["method"] for c in cells if (c["dataset"], c["backbone"]) == task}
            assert suite.control in here, (Path(path).name, task, sorted(here))
            heads = [m for m in here if "unit-heads" in METHODS.get(m).card.capabilities and m != "bp.deepsup"]
            if heads and suite.control == "bp":  # a method with per-unit heads has its matched baseline
                assert "bp.deepsup" in here, (Path(path).name, task, heads)


def test_the_results_table_and_the_headline_read_the_same_runs(tmp_path, capsys):
    """In one process: after a setting changes within a version, the end-of-run table, the headline and the
    MLflow aggregates (computed, not logged) agree on n and verdict for every cell."""
    path, out = write(tmp_path / "same.toml", name="same", methods=["bp", "bp.deepsup"]), tmp_path / "out"
    run = ["run", str(path), "--out", str(out), "--no-progress", "--device", "cpu", "--no-tracking"]
    assert main(run) == 0
    write(path, name="same", methods=["bp", "bp.deepsup"], train={"lr": 0.1})
    assert main(run) == 0
    capsys.readouterr()
    from ffbench.plan.design import expand
    from ffbench.plan.suite import load as load_suite

    suite = load_suite(str(path))
    design, store = expand(suite), Store(out / "results.db")
    old = next(r for r in store.rows("same") if r["cell_id"] not in {c.cell_id for c in design.cells})
    keys = ("suite", "suite_version", "cell_id", "role", "trial", "factors", "config", "code")
    store.add_runs([{**{k: old[k] for k in keys}, "run_id": f"{old['cell_id']}-s9", "seed": 9}])  # left pending
    table, _ = results.results_table(store, suite, design)
    agg = results.cell_aggregates(store, suite, design)
    lines = report.headline(store, "same", "bp", n_resamples=200)
    for r in table.to_dict("records"):
        cell = next(c for c in design.cells if c.factors["method"] == r["method"])
        assert r["n"] == agg[cell.cell_id]["summary"]["n"] == 3
        assert r["verdict"] == agg[cell.cell_id]["summary"]["verdict_vs_control"]
        if r["method"] != "bp":
            assert any(
                ln.startswith(f"  {r['method']} on synthetic / mlp: {r['verdict']}") and "(3 pairs)" in ln
                for ln in lines
            ), lines
    assert any("7 runs of 2 superseded cells" in ln for ln in lines)
    assert any("All 6 evaluation runs finished" in ln for ln in lines) and not any("not finished" in ln for ln in lines)
