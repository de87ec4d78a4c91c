"""Getting a suite's results out as tidy tables (ffbench.record.export), from a real store with synthetic numbers."""

from __future__ import annotations

import argparse
import importlib.util

import pandas as pd
import pytest
from test_report import make_store

from ffbench.record import export
from ffbench.record.store import Store


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("export"))


def _args(*argv: str) -> argparse.Namespace:
    return export.add_export_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_three_tidy_tables_match_the_store(out):
    t = export.load(out, "reptest")
    runs, curves, units = t["runs"], t["curves"], t["units"]
    stored = Store(out / "results.db").frame("reptest")
    assert len(runs) == len(stored) == 13 and set(runs["status"]) == {"done", "failed"}  # failures kept
    assert list(runs.columns[:15]) == [
        "run_id",
        "suite",
        "suite_version",
        "cell_id",
        "config_hash",
        "code_fingerprint",
        "superseded",
        "role",
        "seed",
        "trial",
        "status",
        "method",
        "dataset",
        "backbone",
        "classes",
    ]
    assert not runs["superseded"].any() and runs["config_hash"].notna().all()
    assert {"cfg.epochs", "test_acc", "epoch_time_s", "saved_bytes_per_step"} <= set(runs.columns)
    assert "curves" not in runs
    merged = runs.merge(stored[["run_id", "test_acc"]], on="run_id", suffixes=("", "_store"))
    pd.testing.assert_series_equal(merged["test_acc"], merged["test_acc_store"], check_names=False)

    # curves: one row per run x epoch x metric, the per-unit series apart
    assert not curves["metric"].str.contains(".unit", regex=False).any()
    done = runs[runs["status"] == "done"]
    assert len(curves) == len(done) * 3 * 4  # 3 epochs x (train_loss, val_acc, test_acc, epoch_time_s)
    one = stored.set_index("run_id").loc["bp05-s1", "curves"][1]  # epoch 2 of one run
    row = curves[(curves["run_id"] == "bp05-s1") & (curves["epoch"] == 2) & (curves["metric"] == "val_acc")]
    assert row["value"].item() == pytest.approx(one["val_acc"]) and row["method"].item() == "bp"

    # units: one row per run x epoch x unit; only bp.deepsup records units (2 units, 6 finished runs)
    assert len(units) == 6 * 3 * 2 and set(units["method"]) == {"bp.deepsup"} and set(units["unit"]) == {1, 2}
    u = units[(units["run_id"] == "bpdeepsup10-s0") & (units["epoch"] == 3) & (units["unit"] == 1)]
    raw = stored.set_index("run_id").loc["bpdeepsup10-s0", "curves"][2]
    assert u["test_acc"].item() == pytest.approx(raw["test_acc.unit1"])
    assert u["val_acc"].item() == pytest.approx(raw["val_acc.unit1"])


def test_percent_scales_accuracies_only(out):
    frac = export.load(out)  # the store holds one suite: no name needed
    pct = export.load(out, percent=True)
    assert frac["runs"]["test_acc"].max() <= 1.0
    pd.testing.assert_series_equal(pct["runs"]["test_acc"], frac["runs"]["test_acc"] * 100)
    pd.testing.assert_series_equal(pct["runs"]["epoch_time_s"], frac["runs"]["epoch_time_s"])  # not an accuracy
    loss = frac["curves"]["metric"] == "train_loss"
    assert (pct["curves"].loc[loss, "value"] == frac["curves"].loc[loss, "value"]).all()
    acc = frac["curves"]["metric"] == "test_acc"
    assert (pct["curves"].loc[acc, "value"] == frac["curves"].loc[acc, "value"] * 100).all()
    pd.testing.assert_series_equal(pct["units"]["val_acc"], frac["units"]["val_acc"] * 100)
    assert export.is_accuracy("best_val_acc") and export.is_accuracy("test_acc.softmax")
    assert not export.is_accuracy("accum_steps") and not export.is_accuracy("images_per_s")


def test_roles_versions_and_bad_names(out):
    both = export.load(out, "reptest", role="all")["runs"]
    assert (both["role"] == "tuning").sum() == 6 and len(both) == 19
    with pytest.raises(export.ExportError, match="suites there: reptest"):
        export.load(out, "nope")
    with pytest.raises(export.ExportError, match="no version 7; versions: 1"):
        export.load(out, "reptest", suite_version=7)
    with pytest.raises(export.ExportError, match="allowed values are evaluation, tuning, all"):
        export.load(out, "reptest", role="eval")


def test_the_command_writes_csv_and_parquet(out, tmp_path, capsys):
    assert export.main_export(_args("reptest", "--out", str(out), "--to", str(tmp_path / "csv"))) == 0
    printed = capsys.readouterr().out
    assert "runs.csv  (13 rows)" in printed and "fractions" in printed
    runs = pd.read_csv(tmp_path / "csv" / "runs.csv")
    units = pd.read_csv(tmp_path / "csv" / "units.csv")
    assert len(runs) == 13 and len(units) == 36 and runs["test_acc"].max() <= 1.0
    if importlib.util.find_spec("pyarrow") is None:
        pytest.skip("pyarrow is absent: the parquet round trip cannot run")
    assert (
        export.main_export(
            _args(
                "reptest",
                "--out",
                str(out),
                "--format",
                "parquet",
                "--percent",
                "--role",
                "all",
                "--to",
                str(tmp_path / "pq"),
            )
        )
        == 0
    )
    curves = pd.read_parquet(tmp_path / "pq" / "curves.parquet")
    assert len(curves) == len(export.load(out, role="all")["curves"]) and curves["value"].max() > 1.0


def test_clear_errors_without_traceback(out, tmp_path, monkeypatch, capsys):
    assert export.main_export(_args("reptest", "--out", str(tmp_path / "empty"))) == 2
    assert "no results store at" in capsys.readouterr().err
    assert export.main_export(_args("reptest", "--out", str(out), "--suite-version", "x")) == 2
    assert "--suite-version 'x': a number or 'all'" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    assert (
        export.main_export(_args("reptest", "--out", str(out), "--format", "parquet", "--to", str(tmp_path / "pq")))
        == 2
    )
    msg = capsys.readouterr().err
    assert "needs the Python package 'pyarrow'" in msg and "--format csv" in msg
    assert not (tmp_path / "pq").exists()  # nothing half-written
