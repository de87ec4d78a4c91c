"""`ffbench merge` and `ffbench compare` end to end, on stores written by real `ffbench run` processes: one suite
split across two folders (--cells), the whole suite again in a third, a second version with one setting
changed, and a store of another suite."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from suites import suite_toml

from ffbench.record import resultset
from ffbench.record.store import Store

ROOT = Path(__file__).resolve().parent.parent
SUITE = dict(suite={"control": "bp"}, methods=["bp", "bp.deepsup"], seeds=[0, 1, 2])


def ffbench(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "FFBENCH_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ffbench.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """a: the bp cell, b: the bp.deepsup cell, whole: both (version 1, then version 2 with wider layers, in
    one store), other: one run of another suite."""
    d = tmp_path_factory.mktemp("stores")
    v1 = d / "v1.toml"
    v1.write_text(suite_toml("split", version=1, widths=[16, 16], **SUITE))
    v2 = d / "v2.toml"
    v2.write_text(suite_toml("split", version=2, widths=[24, 16], **SUITE))
    other = d / "other.toml"
    other.write_text(suite_toml("another", version=1, widths=[16, 16], **SUITE))
    changed = d / "changed.toml"  # version 1 with a setting changed: new cells, the old ones superseded
    changed.write_text(suite_toml("split", version=1, widths=[20, 16], **SUITE))
    for args in (
        (v1, "--out", d / "a", "--cells", "bp"),
        (v1, "--out", d / "b", "--cells", "bp.deepsup"),
        (v1, "--out", d / "whole"),
        (v2, "--out", d / "whole"),
        (other, "--out", d / "other", "--cells", "bp", "--seeds", "0"),
        (changed, "--out", d / "changed", "--cells", "bp", "--seeds", "0"),
    ):
        if args[0] == changed:
            shutil.copytree(d / "a", d / "changed")
        r = ffbench("run", *args, "--no-tracking", "--no-progress")
        assert r.returncode == 0, r.stderr
    return d


def test_merge_two_folders_then_the_same_store_again(stores, tmp_path):
    dest = tmp_path / "merged"
    r = ffbench("merge", dest, stores / "a", stores / "b")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines() if line.startswith(str(stores))}
    assert rows[str(stores / "a")] == ["3", "3", "0", "0", "0"]  # runs, added, updated, identical, conflicts
    assert rows[str(stores / "b")] == ["3", "3", "0", "0", "0"]
    assert "Intel" in r.stdout or "AMD" in r.stdout or "cores" in r.stdout  # the machines the runs came from
    store = Store(dest / "results.db")
    res = resultset.load(store, "split", 1)
    assert len(res.frame) == 6 and res.frame["status"].eq("done").all() and len(res.cells) == 2
    assert store.declared_cells("split", 1) == Store(stores / "a" / "results.db").declared_cells("split", 1)
    # MLflow mirrored from the merged store: every run complete there, recorded against DEST's tracking URI
    assert {row["mirrored_to"] for row in store.rows("split")} == {f"sqlite:///{(dest / 'mlflow.db').resolve()}"}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{dest / 'mlflow.db'}")
    exp = client.get_experiment_by_name("split")
    children = client.search_runs([exp.experiment_id], "tags.`ffbench.kind` = 'evaluation'")
    assert sorted(c.data.tags["ffbench.run_id"] for c in children) == sorted(res.frame["run_id"])

    before = (dest / "results.db").read_bytes()
    again = ffbench("merge", dest, stores / "a", "--no-tracking")
    assert again.returncode == 0, again.stderr
    assert [ln.split()[1:] for ln in again.stdout.splitlines() if ln.startswith(str(stores / "a"))] == [
        ["3", "0", "0", "3", "0"]
    ]
    assert "0 run(s) written" in again.stdout
    assert len(Store(dest / "results.db").rows("split")) == 6
    assert before == (dest / "results.db").read_bytes()  # nothing at all written


def test_another_version_or_suite_is_refused_and_nothing_written(stores, tmp_path):
    dest = tmp_path / "m.db"
    r = ffbench("merge", dest, stores / "a", stores / "whole", "--no-tracking")
    assert r.returncode == 2
    assert "'split' version 2" in r.stderr and "'split' version 1" in r.stderr and str(stores / "whole") in r.stderr
    assert "Traceback" not in r.stderr and not dest.exists()
    r = ffbench("merge", dest, stores / "a", stores / "other", "--no-tracking")
    assert r.returncode == 2 and "'another'" in r.stderr and "'split'" in r.stderr and not dest.exists()


def test_a_run_with_different_results_in_two_stores_is_a_conflict(stores, tmp_path):
    # the same run as another machine might have recorded it: one seed's accuracy differs
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(stores / "a", elsewhere)
    con = sqlite3.connect(elsewhere / "results.db")
    run_id, metrics = con.execute("SELECT run_id, metrics FROM runs WHERE seed = 1").fetchone()
    con.execute(
        "UPDATE runs SET metrics = ? WHERE run_id = ?",
        (metrics.replace('"test_acc": ', '"test_acc": 0.5, "was": '), run_id),
    )
    con.commit()
    con.close()
    dest = tmp_path / "merged"
    r = ffbench("merge", dest, stores / "a", elsewhere, "--no-tracking")
    assert r.returncode == 2
    conflict = [ln for ln in r.stderr.splitlines() if ln.startswith("conflict:")]
    assert len(conflict) == 1 and run_id in conflict[0]
    assert str(stores / "a") in conflict[0] and str(elsewhere) in conflict[0] and "test_acc" in conflict[0]
    assert "0.5" in conflict[0] and "nothing was written" in r.stderr and not dest.exists()


def test_compare_two_versions_of_a_suite_in_one_store(stores, tmp_path):
    to = tmp_path / "diff.csv"
    r = ffbench("compare", "split@1", "split@2", "--out", stores / "whole", "--to", to)
    assert r.returncode == 0, r.stderr
    assert "backbone_options.widths [16, 16]→[24, 16]" in r.stdout
    table = pd.read_csv(to)
    assert sorted(table["method"]) == ["bp", "bp.deepsup"]
    assert (table["verdict"] != "identical").all() and table["paired"].eq("3 seeds").all()
    frame = resultset.load(Store(stores / "whole" / "results.db"), "split", 2).frame
    bp2 = frame.loc[frame["method"] == "bp", "test_acc"].mean()
    assert table.loc[table["method"] == "bp", "mean_b"].iloc[0] == pytest.approx(bp2)
    row = table.loc[table["method"] == "bp"].iloc[0]
    assert row["ci_low"] <= row["delta"] <= row["ci_high"]
    md = tmp_path / "diff.md"
    assert ffbench("compare", "split@1", "split@2", "--out", stores / "whole", "--to", md).returncode == 0
    text = md.read_text()
    assert "| bp |" in text and "| bp.deepsup |" in text and "widths" in text


def test_compare_a_re_run_says_identical_per_cell(stores, tmp_path):
    merged = tmp_path / "merged"
    assert ffbench("merge", merged, stores / "a", stores / "b", "--no-tracking").returncode == 0
    r = ffbench("compare", merged, f"{stores / 'whole'}@1")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("synthetic")]
    assert len(lines) == 2 and all(" identical " in ln for ln in lines)
    assert "2 cells on both sides (2 identical)" in r.stdout


def test_compare_bad_input_is_one_line(stores):
    r = ffbench("compare", "split@x", "split@2", "--out", stores / "whole")
    assert r.returncode == 2 and "NAME@VERSION" in r.stderr and "Traceback" not in r.stderr
    r = ffbench("compare", "split@7", "split@2", "--out", stores / "whole")
    assert r.returncode == 2 and "no version 7" in r.stderr and "versions: 1, 2" in r.stderr


def test_the_manifest_records_the_machine(stores):
    for row in Store(stores / "a" / "results.db").rows("split"):
        m = row["manifest"]
        assert m["cpu"] and m["cpu_count"] >= 1 and m["cpu_capability"]


def test_superseded_cells_stay_superseded_and_a_different_design_is_refused(stores, tmp_path):
    dest = tmp_path / "merged"
    r = ffbench("merge", dest, stores / "changed", "--no-tracking")
    assert r.returncode == 0, r.stderr
    res = resultset.load(Store(dest / "results.db"), "split", 1)
    assert len(res.frame) == 1 and len(res.superseded) == 3  # the changed bp cell counts; the old one is history
    assert "3 runs of 1 superseded cell" in r.stdout
    # the store planned with the old setting declares other cells: refused, naming both stores
    r = ffbench("merge", tmp_path / "m2", stores / "changed", stores / "b", "--no-tracking")
    assert r.returncode == 2 and "declare different designs" in r.stderr
    assert str(stores / "changed") in r.stderr and str(stores / "b") in r.stderr and not (tmp_path / "m2").exists()


def test_a_finished_run_replaces_the_same_run_pending_in_dest(stores, tmp_path):
    from ffbench.execution import runner
    from ffbench.execution.runner import init_suite

    # DEST planned (every run registered pending, as `ffbench run` does before training) but not trained
    suite, design, _ = runner.prepare(str(stores / "v1.toml"))
    dest = tmp_path / "planned"
    init_suite(suite, design, Store(dest / "results.db"))
    r = ffbench("merge", dest, stores / "a", "--no-tracking")
    assert r.returncode == 0, r.stderr
    assert [ln.split()[1:] for ln in r.stdout.splitlines() if ln.startswith(str(stores / "a"))] == [
        ["3", "0", "3", "0", "0"]
    ]  # runs, added, updated, identical, conflicts
    statuses = pd.Series({row["run_id"]: row["status"] for row in Store(dest / "results.db").rows("split")})
    assert (statuses == "done").sum() == 3 and (statuses == "pending").sum() == 3


def test_the_unpaired_interval_is_welchs():
    import numpy as np
    from scipy import stats as sps

    from ffbench.analysis.compare_runs import welch

    a, b = np.array([0.70, 0.72, 0.75]), np.array([0.80, 0.79, 0.85, 0.83])
    d, lo, hi = welch(a, b)
    ci = sps.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert d == pytest.approx(b.mean() - a.mean()) and (lo, hi) == pytest.approx((ci.low, ci.high))
