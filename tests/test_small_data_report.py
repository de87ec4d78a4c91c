"""The 'small-data' report kind on a small store with synthetic numbers: sff 5 pp ahead of bp at 500 images
and 2 pp behind on the full split, bp.deepsup 1 pp ahead of bp everywhere; the gaps, their intervals and
verdicts, the crossing point, the headline and the rendered pages."""

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
from ffbench.reports.small_data import (
    SmallData,
    crossing_text,
    crossings,
    gap_crossings,
    size_gaps,
    size_label,
    size_order,
    size_positions,
)

SUITE_NAME = "smalltest"
SIZES = [500, 1000, 5000, "full"]
N_FULL = 55000
SEEDS = [0, 1, 2, 3, 4]
BP = {500: 0.70, 1000: 0.75, 5000: 0.83, "full": 0.90}
OFFSET = {
    "bp": {s: 0.0 for s in SIZES},
    "bp.deepsup": {s: 0.01 for s in SIZES},
    "sff": {500: 0.05, 1000: 0.04, 5000: -0.01, "full": -0.02},
}
SEED_EFFECT = [-0.010, 0.004, 0.0, 0.008, -0.003]  # shared by every method (the same data subset)
FAILED = ("bp.deepsup", 5000, 4)  # one diverged run


def accuracy(method: str, size, seed: int) -> float:
    """Known per-seed numbers: the cell's mean, the seed's shared effect and a small method-specific wobble."""
    wobble = 0.002 * np.sin(1.7 * seed + 3 * len(method) + SIZES.index(size))
    return BP[size] + OFFSET[method][size] + SEED_EFFECT[seed] + wobble


def make_small_store(out: Path) -> Path:
    store = Store(out / "results.db")
    rows, outcomes = [], {}
    for method in OFFSET:
        for size in SIZES:
            for seed in SEEDS:
                run_id = f"{method}-{size}-s{seed}"
                config = RunConfig(
                    method=method,
                    dataset="fashion-mnist",
                    backbone="cnn",
                    epochs=2,
                    seed=seed,
                    train_subset=None if size == "full" else size,
                ).to_dict()
                rows.append(
                    dict(
                        run_id=run_id,
                        suite=SUITE_NAME,
                        suite_version=1,
                        cell_id=f"{method}{size}",
                        role="evaluation",
                        seed=seed,
                        trial=None,
                        config=config,
                        factors={"method": method, "dataset": "fashion-mnist", "backbone": "cnn", "train_size": size},
                    )
                )
                if (method, size, seed) == FAILED:
                    outcomes[run_id] = ("diverged", {}, {}, "Diverged: non-finite training loss")
                    continue
                v = accuracy(method, size, seed)
                outcomes[run_id] = (
                    "done",
                    {"test_acc": v, "val_acc": v + 0.01},
                    {"n_train": N_FULL if size == "full" else size, "num_classes": 10},
                    None,
                )
    store.add_runs(rows)
    for run_id, (status, metrics, compute, error) in outcomes.items():
        assert store.claim(run_id, "test", 600)
        assert store.finish(run_id, "test", status, metrics=metrics, curves=[], compute=compute, error=error)
    return out


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return make_small_store(tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="module")
def ctx(out):
    t = load_tables(Store(out / "results.db"), SUITE_NAME)
    return ReportContext(SUITE_NAME, t.frame, t.tuning, Options(n_resamples=200), t.factors)


def per_seed_gap(method: str, reference: str, size) -> np.ndarray:
    seeds = [s for s in SEEDS if (method, size, s) != FAILED and (reference, size, s) != FAILED]
    return np.array([accuracy(method, size, s) - accuracy(reference, size, s) for s in seeds])


def test_sizes_sort_full_last_and_place_it_at_the_runs_training_images(ctx):
    assert size_order([5000, "full", 500, 1000]) == [500, 1000, 5000, "full"]
    pos = size_positions(ctx.frame)
    assert pos == {500: 500.0, 1000: 1000.0, 5000: 5000.0, "full": float(N_FULL)}
    assert size_positions(ctx.frame.drop(columns="n_train"))["full"] == 10000.0  # unknown: after the largest
    assert size_label("full", N_FULL) == "full (55000)" and size_label("full") == "full" and size_label(500) == "500"


def test_gaps_are_paired_by_seed_with_t_intervals_and_one_holm_family(ctx):
    gaps = size_gaps(ctx.frame, "test_acc", ctx.factors, control="bp", n_resamples=200)
    assert set(zip(gaps["method"], gaps["reference"])) == {("sff", "bp"), ("bp.deepsup", "bp"), ("sff", "bp.deepsup")}
    assert len(gaps) == 12 and (gaps["family_size"] == 12).all()  # 3 pairs x 4 sizes, one family for the page
    g = gaps.set_index(["method", "reference", "train_size"])
    small = g.loc[("sff", "bp", 500)]
    d = per_seed_gap("sff", "bp", 500)
    ci = stats.t_interval(d)
    assert small["delta"] == pytest.approx(d.mean()) and small["delta"] == pytest.approx(0.05, abs=0.003)
    assert (small["ci_low"], small["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert small["n_pairs"] == 5 and small["verdict"] == "better"
    assert small["dec_low"] <= small["ci_low"] and small["dec_high"] >= small["ci_high"]  # Holm: wider
    assert g.loc[("sff", "bp", "full"), "verdict"] == "worse"
    assert g.loc[("sff", "bp", "full"), "delta"] == pytest.approx(-0.02, abs=0.003)
    assert g.loc[("bp.deepsup", "bp", 5000), "n_pairs"] == 4  # the diverged run pairs with nothing
    assert g.loc[("bp.deepsup", "bp", 5000), "fail_method"] == 1
    assert (g.xs(("bp.deepsup", "bp"))["verdict"] == "better").all()


def test_the_crossing_point_lies_between_the_sizes_where_the_sign_changes(ctx):
    assert crossings([500, 1000, 5000, "full"], [0.05, 0.04, -0.01, -0.02]) == [(1000, 5000, 1, -1)]
    assert crossings([1, 2, 3, 4], [-0.01, 0.0, np.nan, 0.02]) == [(1, 4, -1, 1)]  # zero and undefined skipped
    assert crossing_text("sff", "bp", [1, 2, 3], [0.01, 0.02, 0.03]) == (
        "sff vs bp: no crossing (sff is ahead of bp at every size)"
    )
    assert crossing_text("a", "b", [1, 2, 3, 4, 5], [0.01, -0.01, 0.02, 0.01, -0.03]) == (
        "a is ahead of b up to 1 images, behind at 2, ahead from 3 up to 4 and behind from 5"
    )
    assert crossing_text("a", "b", [1, 2], [-0.01, 0.01]) == "a is behind b up to 1 images and ahead from 2"
    gaps = size_gaps(ctx.frame, "test_acc", ctx.factors, control="bp", n_resamples=200)
    cross = gap_crossings(gaps, [], label=lambda v: size_label(v, N_FULL)).set_index(["method", "reference"])
    assert cross.loc[("sff", "bp"), "between"] == "1000 and 5000"
    assert cross.loc[("sff", "bp"), "text"] == "sff is ahead of bp up to 1000 images and behind from 5000"
    assert cross.loc[("bp.deepsup", "bp"), "crossings"] == 0
    assert cross.loc[("sff", "bp.deepsup"), "between"] == "1000 and 5000"


def test_headline_gives_each_methods_gap_at_the_smallest_size(ctx):
    lines = SmallData().headline(ctx)
    assert len(lines) == 1 and "gap to bp at 500 training images" in lines[0]
    d = per_seed_gap("sff", "bp", 500)
    assert f"sff {d.mean() * 100:.2f} [" in lines[0] and "pp, better" in lines[0]
    assert "bp.deepsup" in lines[0]


def test_the_report_kind_renders(out):
    assert "small-data" in REPORTS
    paths = build_report(out, SUITE_NAME, kinds=["small-data"], n_resamples=200)
    root = report_dir(out, SUITE_NAME)
    md = (root / "small-data.md").read_text()
    assert (root / "small-data.html").exists()
    assert "sff is ahead of bp up to 1000 images and behind from full" not in md
    assert "sff is ahead of bp up to 1000 images and behind from 5000" in md
    assert "full (55000)" in md and "gap to bp at 500 training images" in md
    pngs = list((root / "figures" / "small-data").glob("*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gaps_csv = next(p for p in paths if p.suffix == ".csv" and p.stem.endswith("-gaps"))
    assert len(pd.read_csv(gaps_csv)) == 12
    cells = md.split("Per size and method", 1)[1]
    assert "1 of 5 (" in cells  # the diverged run is counted as a failure


def test_not_applicable_without_a_train_size_factor(ctx):
    frame = ctx.raw.drop(columns="train_size")
    other = ReportContext(SUITE_NAME, frame, pd.DataFrame(), Options(), ["method", "dataset", "backbone"])
    reason = SmallData().applicable(other)
    assert reason and "'train_size'" in reason
    assert SmallData().applicable(ctx) is None


def test_an_axis_of_some_methods_only_labels_their_lines_in_the_same_figure(ctx):
    frame = ctx.raw.assign(head=[("match:sff" if m == "bp.deepsup" else None) for m in ctx.raw["method"]])
    other = ReportContext(SUITE_NAME, frame, pd.DataFrame(), Options(n_resamples=200), [*ctx.factors, "head"])
    d = SmallData().data(other)
    assert d["groups"] == ["dataset", "backbone"]
    assert set(d["cells"]["method"]) == {"bp", "sff", "bp.deepsup[head=match:sff]"}
    g = d["gaps"].set_index(["method", "reference", "train_size"])
    assert g.loc[("bp.deepsup[head=match:sff]", "bp", 500), "verdict"] == "better"
    assert len(g) == 12
