"""The 'reproduction' report kind on a small store with synthetic numbers: published number and source, mean
with a t interval over seeds, budget, seconds per epoch, and where the published number lies."""

import numpy as np
import pytest
from suites import suite_toml

from ffbench import stats
from ffbench.analysis.report import REPORTS, build_report
from ffbench.core.config import RunConfig
from ffbench.record.store import Store
from ffbench.reports.reproduction import PUBLISHED, reproduction_rows, where

SUITE = suite_toml(
    "repro-test",
    methods=["ff.hinton", "cwc", "sff", "bp"],
    datasets=["mnist", "cifar10"],
    backbones=["mlp", "cnn.cfse", "resnet18"],
    seeds=[0, 1, 2],
    epochs=None,
    batch_size=None,
    widths=None,
)
# (method, dataset, backbone) -> per-seed accuracy of the metric the published number refers to
RUNS = {
    ("ff.hinton", "mnist", "mlp"): ("test_acc.softmax", [0.9851, 0.9856, 0.9859]),  # around 98.55: inside
    ("cwc", "mnist", "cnn.cfse"): ("test_acc.avg", [0.990, 0.991, 0.989]),  # published 99.42 lies above
    ("sff", "cifar10", "resnet18"): ("test_acc", [0.50, 0.52, 0.51]),
    ("bp", "cifar10", "resnet18"): ("test_acc", [0.45, 0.46, 0.44]),  # SFF - BP = 6 pp: published 9 pp above
}
CWC_SF = [0.9940, 0.9945, 0.9950]  # CwC's Sf predictor: 99.42 lies inside its interval
# each CwC seed's test curve of the Sf rule: its best epoch is 0.3 pp above the validation-selected one
CWC_CURVES = [[{"epoch": 1, "test_acc.sf": v - 0.01}, {"epoch": 2, "test_acc.sf": v + 0.003}] for v in CWC_SF]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    (out / "repro-test.toml").write_text(SUITE)
    store = Store(out / "results.db")
    rows, outcomes = [], {}
    for (method, dataset, backbone), (metric, values) in RUNS.items():
        for seed, v in enumerate(values):
            run_id = f"{method}-{dataset}-{backbone}-s{seed}"
            cfg = RunConfig(
                method=method,
                dataset=dataset,
                backbone=backbone,
                seed=seed,
                epochs=4,
                batch_size=100,
                method_options={"recipe": "reference"} if method != "bp" else {},
            ).to_dict()
            rows.append(
                dict(
                    run_id=run_id,
                    suite="repro-test",
                    suite_version=1,
                    cell_id=f"{method}{dataset}",
                    role="evaluation",
                    seed=seed,
                    trial=None,
                    config=cfg,
                    factors={"method": method, "dataset": dataset, "backbone": backbone},
                )
            )
            metrics, curves = {"test_acc": v, metric: v, "val_acc": v}, []
            if method == "cwc":
                metrics["test_acc.sf"], curves = CWC_SF[seed], CWC_CURVES[seed]
            outcomes[run_id] = (metrics, curves, {"epoch_time_s": 2.0 + seed, "n_train": 50000})
    store.add_runs(rows)
    for run_id, (metrics, curves, compute) in outcomes.items():
        assert store.claim(run_id, "test", 600)
        assert store.finish(run_id, "test", "done", metrics=metrics, curves=curves, compute=compute)
    return out


def test_rows_place_the_published_number_against_the_interval(store_dir):
    frame = Store(store_dir / "results.db").frame("repro-test")
    frame["status"] = frame["status"].fillna("done")
    table = reproduction_rows(frame).set_index(["row", "dataset", "backbone", "metric"]).reset_index("metric")
    ff = table.loc[("ff.hinton", "mnist", "mlp")]
    ci = stats.t_interval(RUNS[("ff.hinton", "mnist", "mlp")][1])
    assert ff["published"] == pytest.approx(0.9855) and ff["metric"] == "test_acc.softmax"
    assert (ff["ci_low"], ff["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert ff["published_vs_ci"] == "inside" and ff["n"] == 3 and ff["recipe"] == "reference"
    assert ff["budget"] == "4 epochs, batch 100, 50000 training images" and ff["epoch_time_s"] == pytest.approx(3.0)
    cwc = table.loc[("cwc", "mnist", "cnn.cfse")].set_index("metric")  # the source names no predictor: both rules
    assert list(cwc.index) == ["test_acc.avg", "test_acc.sf"] and "not stated" in cwc["source"].iloc[0]
    assert (
        cwc.loc["test_acc.avg", "published_vs_ci"] == "above" and cwc.loc["test_acc.sf", "published_vs_ci"] == "inside"
    )
    assert cwc.loc["test_acc.sf", "best_on_test"] == pytest.approx(np.mean(CWC_SF) + 0.003)  # test-set selection
    assert np.isnan(cwc.loc["test_acc.avg", "best_on_test"]) and np.isnan(ff["best_on_test"])  # no curves: none
    diff = table.loc[("sff − bp", "cifar10", "resnet18")]
    assert diff["mean"] == pytest.approx(0.06) and diff["published"] == 0.09 and diff["published_vs_ci"] == "above"
    assert len(table) == 4  # no row for published numbers without runs (mobilenetv3, asge, ...)
    assert where(0.5, 0.4, 0.45) == "above" and where(0.3, 0.4, 0.45) == "below" and where(0.5, np.nan, 1) == "—"


def test_every_published_number_has_a_source_and_a_plausible_value():
    for key, pub in PUBLISHED.items():
        assert pub.source and ("§" in pub.source) and pub.metrics
        assert (0 < pub.value < 1) if pub.versus is None else (-1 < pub.value < 1), key
    from ffbench.methods.asge import PREDICTIONS  # ASGE's strategy is not stated (§5.3): every rule the method logs

    assert PUBLISHED[("asge", "mnist", "vgg.asge")].metrics == tuple(f"test_acc.{r}" for r in PREDICTIONS)


def test_the_report_kind_renders(store_dir):
    assert "reproduction" in REPORTS
    paths = build_report(store_dir, "repro-test", kinds=["reproduction"], n_resamples=200)
    md = next(p for p in paths if p.name == "reproduction.md").read_text()
    assert "98.55" in md and "loeweX/Forward-Forward README" in md and "inside" in md and "above" in md
    csv = next(p for p in paths if p.suffix == ".csv" and "reproduction" in p.name)
    assert "published_vs_ci" in csv.read_text()


def test_a_study_that_only_shares_a_published_row_gets_no_reproduction_page(tmp_path):
    (tmp_path / "study.toml").write_text(SUITE.replace("repro-test", "study"))
    store = Store(tmp_path / "results.db")
    for seed in range(3):  # ff.hinton on MNIST with the ffbench recipe: a study, not a reproduction
        cfg = RunConfig(method="ff.hinton", dataset="mnist", backbone="mlp", seed=seed, train_subset=1000).to_dict()
        store.add_runs(
            [
                dict(
                    run_id=f"s{seed}",
                    suite="study",
                    suite_version=1,
                    cell_id="c",
                    role="evaluation",
                    seed=seed,
                    trial=None,
                    config=cfg,
                    factors={"method": "ff.hinton", "dataset": "mnist", "backbone": "mlp"},
                )
            ]
        )
        assert store.claim(f"s{seed}", "test", 600)
        assert store.finish(f"s{seed}", "test", "done", metrics={"test_acc": 0.9}, curves=[], compute={})
    paths = build_report(tmp_path, "study", n_resamples=50)
    assert not any(p.name == "reproduction.html" for p in paths)
    assert any(p.name == "comparison.html" for p in paths)


def test_a_row_whose_runs_are_unfinished_counts_no_seed():
    import pandas as pd

    frame = pd.DataFrame(
        {  # a finished MNIST seed gives the column; Fashion-MNIST's runs are still going
            "method": ["cwc"] * 3,
            "dataset": ["mnist", "fashion-mnist", "fashion-mnist"],
            "backbone": ["cnn.cfse"] * 3,
            "seed": [0, 0, 1],
            "status": ["done", "running", "pending"],
            "test_acc.avg": [0.99, np.nan, np.nan],
            "test_acc.sf": [0.994, np.nan, np.nan],
            "curves": [[], [], []],
        }
    )
    table = reproduction_rows(frame).set_index(["dataset", "metric"])
    assert table.loc[("mnist", "test_acc.sf"), "n"] == 1
    assert (table.loc["fashion-mnist", "n"] == 0).all() and table.loc["fashion-mnist", "mean"].isna().all()
    assert (table.loc["fashion-mnist", "runs"] == 2).all() and (
        table.loc["fashion-mnist", "published_vs_ci"] == "—"
    ).all()
    unfinished = frame.iloc[1:].drop(columns=["test_acc.avg", "test_acc.sf"])  # no run has the metric yet
    assert list(reproduction_rows(unfinished)["n"]) == [0, 0]
    same = frame.assign(dataset="mnist", status="done", **{"test_acc.sf": 0.9937})  # three seeds, one value
    assert reproduction_rows(same).set_index("metric").loc["test_acc.sf", "published_vs_ci"] == "—"
