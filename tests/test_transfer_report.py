"""The 'transfer' report kind on a small store with synthetic numbers: bp and sff on mnist classes 5-9, from
scratch and adapted (linear-probe, fine-tune) from checkpoints trained on classes 0-4; fine-tuning gains
10-15 pp over scratch, sff 3 pp ahead of bp when fine-tuned. The gains, differences, verdicts, source
accuracies, headline, rendered pages, and the tolerance of rows without the transfer fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ffbench import stats
from ffbench.analysis.report import REPORTS, build_report, report_dir
from ffbench.analysis.report_context import Options, ReportContext, load_tables
from ffbench.core.config import RunConfig
from ffbench.record.store import Store
from ffbench.reports.transfer import (
    SCRATCH,
    Transfer,
    class_text,
    method_differences,
    mode_order,
    mode_winner,
    pretraining_gains,
    source_accuracy,
    source_label,
    target_label,
    transfer_frame,
)

SUITE_NAME = "transfertest"
SEEDS = [0, 1, 2, 3]
TARGET, SOURCE = [5, 6, 7, 8, 9], [0, 1, 2, 3, 4]
MEANS = {
    ("bp", None): 0.80,
    ("sff", None): 0.78,
    ("bp", "linear-probe"): 0.85,
    ("sff", "linear-probe"): 0.84,
    ("bp", "fine-tune"): 0.90,
    ("sff", "fine-tune"): 0.93,
}
SEED_EFFECT = [-0.006, 0.004, 0.0, 0.003]
SOURCE_ACC = {"bp": [0.990, 0.991, 0.992, 0.989], "sff": [0.970, 0.975, 0.980, 0.985]}
GROUPS = ["dataset", "backbone"]


def accuracy(method: str, adapt: str | None, seed: int) -> float:
    wobble = 0.002 * np.sin(2.3 * seed + len(method) + len(adapt or ""))
    return MEANS[(method, adapt)] + SEED_EFFECT[seed] + wobble


def make_transfer_store(out: Path) -> Path:
    store = Store(out / "results.db")
    rows, outcomes = [], {}
    for method, adapt in MEANS:
        for seed in SEEDS:
            run_id = f"{method}-{adapt or 'scratch'}-s{seed}"
            config = RunConfig(method=method, dataset="mnist", backbone="cnn", epochs=2, seed=seed).to_dict()
            # the transfer fields, by hand: the source task (no seed) is set on adapted runs only
            source = (
                {"method": method, "dataset": "mnist", "backbone": "cnn", "epochs": 5, "keep_classes": SOURCE}
                if adapt
                else None
            )
            config.update(keep_classes=TARGET, adapt=adapt, adapt_units=1, source=source)
            rows.append(
                dict(
                    run_id=run_id,
                    suite=SUITE_NAME,
                    suite_version=1,
                    cell_id=f"{method}{adapt}",
                    role="evaluation",
                    seed=seed,
                    trial=None,
                    config=config,
                    factors={"method": method, "dataset": "mnist", "backbone": "cnn", "adapt": adapt or SCRATCH},
                )
            )
            manifest = {"device": "cpu"}
            if adapt:  # the seed's checkpoint, shared by both modes
                manifest["source"] = {
                    "key": f"{method}-src-s{seed}",
                    "sha256": "0" * 64,
                    "val_acc": SOURCE_ACC[method][seed] - 0.002,
                    "test_acc": SOURCE_ACC[method][seed],
                    "train_time_s": 12.0,
                }
            outcomes[run_id] = ({"test_acc": accuracy(method, adapt, seed)}, manifest)
    store.add_runs(rows)
    for run_id, (metrics, manifest) in outcomes.items():
        assert store.claim(run_id, "test", 600)
        assert store.finish(
            run_id, "test", "done", metrics=metrics, curves=[], compute={"num_classes": 5}, manifest=manifest
        )
    return out


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return make_transfer_store(tmp_path_factory.mktemp("transfer"))


@pytest.fixture(scope="module")
def ctx(out):
    t = load_tables(Store(out / "results.db"), SUITE_NAME)
    return ReportContext(SUITE_NAME, t.frame, t.tuning, Options(n_resamples=200), t.factors)


@pytest.fixture(scope="module")
def tf(ctx):
    return transfer_frame(ctx.frame)


def paired(a: tuple, b: tuple) -> np.ndarray:
    return np.array([accuracy(*a, s) - accuracy(*b, s) for s in SEEDS])


def test_labels_describe_the_source_task_against_the_target():
    assert class_text([0, 1, 2, 3, 4]) == "0-4" and class_text([1, 3]) == "1, 3" and class_text(None) == ""
    assert target_label("mnist", [5, 6, 7, 8, 9]) == "mnist classes 5-9" and target_label("mnist", None) == "mnist"
    assert (
        source_label({"dataset": "mnist", "keep_classes": SOURCE}, "mnist", TARGET) == "mnist classes 0-4 → classes 5-9"
    )
    assert source_label({"dataset": "fashion-mnist", "keep_classes": None}, "mnist", None) == "fashion-mnist → mnist"
    assert source_label({"weights": "imagenet"}, "cifar10", None) == "imagenet weights → cifar10"
    assert mode_order(["fine-tune", "scratch", "other", "linear-probe"]) == [
        "scratch",
        "linear-probe",
        "fine-tune",
        "other",
    ]


def test_the_frame_marks_scratch_runs_and_reads_the_checkpoints(tf):
    assert set(tf["mode"]) == {SCRATCH, "linear-probe", "fine-tune"}
    assert set(tf.loc[tf["mode"] == SCRATCH, "source"]) == {stats.NA}
    assert set(tf.loc[tf["mode"] != SCRATCH, "source"]) == {"mnist classes 0-4 → classes 5-9"}
    assert set(tf["target"]) == {"mnist classes 5-9"}
    ft = tf[(tf["method"] == "sff") & (tf["mode"] == "fine-tune")].sort_values("seed")
    assert list(ft["source_test_acc"]) == SOURCE_ACC["sff"] and set(ft["source_epochs"]) == {5}


def test_gain_over_scratch_is_paired_by_seed_with_a_verdict(tf):
    gains = pretraining_gains(tf, "test_acc", GROUPS, n_resamples=200)
    assert len(gains) == 4 and (gains["from"] == SCRATCH).all() and (gains["family_size"] == 4).all()
    g = gains.set_index(["method", "mode"])
    d = paired(("sff", "fine-tune"), ("sff", None))
    ci = stats.t_interval(d)
    ft = g.loc[("sff", "fine-tune")]
    assert ft["delta"] == pytest.approx(d.mean()) and ft["delta"] == pytest.approx(0.15, abs=0.004)
    assert (ft["ci_low"], ft["ci_high"]) == pytest.approx((ci.low, ci.high)) and ft["ci_low"] > 0.1
    assert ft["n_pairs"] == 4 and ft["verdict"] == "better"
    assert ft["source"] == "mnist classes 0-4 → classes 5-9"  # the scratch runs pair with the source task
    assert (gains["verdict"] == "better").all()


def test_difference_against_the_control_in_the_same_mode(tf):
    diffs = method_differences(tf, "test_acc", GROUPS, control="bp", n_resamples=200)
    assert set(diffs["mode"]) == {SCRATCH, "linear-probe", "fine-tune"} and (diffs["method"] == "sff").all()
    assert (diffs["family_size"] == 3).all()
    v = diffs.set_index("mode")
    d = paired(("sff", "fine-tune"), ("bp", "fine-tune"))
    ci = stats.t_interval(d)
    assert v.loc["fine-tune", "delta"] == pytest.approx(d.mean()) and v.loc["fine-tune", "verdict"] == "better"
    assert (v.loc["fine-tune", "ci_low"], v.loc["fine-tune", "ci_high"]) == pytest.approx((ci.low, ci.high))
    assert v.loc[SCRATCH, "verdict"] == "worse" and v.loc[SCRATCH, "source"] == stats.NA


def test_source_accuracy_counts_each_checkpoint_once(tf):
    src = source_accuracy(tf, GROUPS).set_index("method")
    ci = stats.t_interval(SOURCE_ACC["sff"])
    assert src.loc["sff", "checkpoints"] == 4  # linear-probe and fine-tune share each seed's checkpoint
    assert src.loc["sff", "test_acc"] == pytest.approx(np.mean(SOURCE_ACC["sff"]))
    assert (src.loc["sff", "ci_low"], src.loc["sff", "ci_high"]) == pytest.approx((ci.low, ci.high))
    assert src.loc["bp", "pretrained_by"] == "bp" and src.loc["bp", "epochs"] == "5"


def test_mode_winner_names_a_winner_only_when_the_verdicts_separate_it():
    assert mode_winner({"bp": 0.9, "sff": 0.93}, {"sff": "better"}, "bp") == ("sff", "the only method better than bp")
    assert mode_winner({"bp": 0.9, "sff": 0.91}, {"sff": "insufficient evidence"}, "bp")[0] == "none clear"
    assert mode_winner({"bp": 0.9, "sff": 0.8}, {"sff": "worse"}, "bp")[0] == "bp"


def test_headline_names_each_modes_winner_and_the_gains(ctx):
    lines = Transfer().headline(ctx)
    assert len(lines) == 1
    line = lines[0]
    assert "mnist classes 0-4 → classes 5-9" in line
    assert "fine-tune: **sff**" in line and "scratch: **bp**" in line
    d = paired(("sff", "fine-tune"), ("sff", None))
    assert f"sff fine-tune {d.mean() * 100:.2f} [" in line and "helped" in line


def test_the_report_kind_renders(out):
    assert "transfer" in REPORTS
    paths = build_report(out, SUITE_NAME, kinds=["transfer"], n_resamples=200)
    root = report_dir(out, SUITE_NAME)
    md = (root / "transfer.md").read_text()
    assert (root / "transfer.html").exists()
    assert "## Transfer: mnist classes 0-4 → classes 5-9 / cnn" in md
    src = f"| sff | sff | 5 | 4 | {np.mean(SOURCE_ACC['sff']) * 100:.2f} ["  # the source checkpoints' accuracy
    assert "helped (better)" in md and src in md
    pngs = list((root / "figures" / "transfer").glob("*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = next(p for p in paths if p.suffix == ".csv" and p.stem.endswith("-accuracy"))
    assert len(pd.read_csv(table)) == 6  # 2 methods x 3 modes


def test_not_applicable_without_an_adapt_factor_or_without_adapted_runs(ctx):
    base = ["method", "dataset", "backbone"]
    other = ReportContext(SUITE_NAME, ctx.raw.drop(columns="adapt"), pd.DataFrame(), Options(), base)
    assert "'adapt'" in Transfer().applicable(other)
    scratch = ctx.raw[ctx.raw["adapt"] == SCRATCH]
    only = ReportContext(SUITE_NAME, scratch, pd.DataFrame(), Options(), [*base, "adapt"])
    assert "from scratch" in Transfer().applicable(only)
    assert Transfer().applicable(ctx) is None


def test_rows_without_the_transfer_fields_still_read(ctx):
    old = ctx.frame.drop(columns=["cfg.keep_classes", "cfg.source", "manifest"])
    old["adapt"] = old["adapt"].replace(SCRATCH, stats.NA)  # no level: from scratch
    tf = transfer_frame(old)
    assert (tf["mode"] == SCRATCH).sum() == 8
    assert set(tf["target"]) == {"mnist"}
    assert set(tf.loc[tf["mode"] != SCRATCH, "source"]) == {"unknown source → mnist"}
    src = source_accuracy(tf, GROUPS)
    assert (src["with_accuracy"] == 0).all() and src["test_acc"].isna().all()
