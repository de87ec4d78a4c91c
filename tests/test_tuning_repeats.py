"""Repeats of the hyperparameter search: each repeat is the whole search again (its own study, its own tuning
seeds), and its choice runs on the evaluation seeds, so the spread over repeats measures search variance."""

import numpy as np
import pytest
from suites import suite_toml

from ffbench import stats
from ffbench.execution import runner, studies
from ffbench.plan.suite import SuiteError, load
from ffbench.plan.tuning import REPEAT, REPEAT_SEED_STRIDE
from ffbench.record.store import FINISHED

SUITE = (
    suite_toml("repeats", seeds=[0, 1], epochs=2, batch_size=64)
    + """
[tuning]
trials = 2
repeats = {repeats}
seeds = [{seeds}]
sampler = "RandomSampler"
sampler_args = {{ seed = 0 }}
pruner = "NopPruner"

[tuning.space."bp"]
lr = ["log", 1e-3, 3e-2]
"""
)


def test_search_variance_is_unbiased_and_removes_seed_noise():
    rng = np.random.default_rng(0)
    est = []
    for _ in range(3000):  # truth: search SD 1 pp, a shared seed effect 0.5 pp, noise 0.3 pp
        a = 0.9 + rng.normal(0, 0.01, (4, 1)) + rng.normal(0, 0.005, (1, 5)) + rng.normal(0, 0.003, (4, 5))
        est.append(stats.search_variance(a)["sd_search"] ** 2)
    assert np.mean(est) == pytest.approx(1e-4, rel=0.08)
    no_search = [stats.search_variance(0.9 + rng.normal(0, 0.003, (3, 5)))["sd_search"] for _ in range(500)]
    raw = [np.std((0.9 + rng.normal(0, 0.003, (3, 5))).mean(1), ddof=1) for _ in range(500)]
    assert np.mean(no_search) < 0.6 * np.mean(raw)  # seed noise is not reported as search variance
    assert np.isnan(stats.search_variance(np.ones((1, 3)))["sd_search"])  # one repeat: no estimate
    assert np.isnan(stats.search_variance(np.array([[0.9, np.nan], [0.8, 0.7]]))["sd_search"])


def test_repeats_must_keep_tuning_and_evaluation_seeds_apart(write_suite):
    with pytest.raises(SuiteError, match=r"\[tuning\]\.repeats"):
        load(str(write_suite(SUITE.format(repeats=0, seeds="100"))))
    clash = write_suite(
        SUITE.format(repeats=2, seeds=f"{REPEAT_SEED_STRIDE - 1}, 100").replace(
            "seeds = [0, 1]", f"seeds = [0, {2 * REPEAT_SEED_STRIDE - 1}]"
        )
    )
    with pytest.raises(SuiteError, match="also in \\[design\\].seeds"):
        load(str(clash))


@pytest.mark.slow
def test_each_repeat_searches_on_its_own_and_its_choice_is_evaluated(tmp_path, write_suite):
    path = write_suite(SUITE.format(repeats=2, seeds="100"))
    s = runner.run_suite(str(path), tmp_path / "out", device="cpu", progress=False, track=False)
    suite, design, store = s["suite"], s["design"], s["store"]
    (cell,) = design.cells
    slots = store.rows(suite.name, cell_id=cell.cell_id, role="tuning")
    assert sorted(r["trial"] for r in slots) == [0, 1, 2, 3] and all(r["status"] in FINISHED for r in slots)
    assert {r["trial"]: r["config"]["seed"] for r in slots} == {
        0: 100,
        1: 100,
        2: 100 + REPEAT_SEED_STRIDE,
        3: 100 + REPEAT_SEED_STRIDE,
    }
    storage = studies.open_storage(s["optuna_storage"])
    for repeat in (0, 1):  # one study per repeat, each with its own two trials
        study = studies.load_study(storage, suite, cell, 2 * repeat)
        assert len(study.trials) == 2
    evals = store.rows(suite.name, cell_id=cell.cell_id, role="evaluation")
    again = store.rows(suite.name, cell_id=cell.cell_id, role=REPEAT)
    assert sorted(r["seed"] for r in evals) == sorted(r["seed"] for r in again) == [0, 1]
    assert {r["trial"] for r in again} == {1} and all(r["status"] == "done" for r in evals + again)
    best = {r: max((x for x in slots if x["trial"] // 2 == r), key=lambda x: x["metrics"]["val_acc"]) for r in (0, 1)}
    assert all(x["config"]["lr"] == best[1]["params"]["lr"] for x in again)  # repeat 1's own choice
    assert all(x["config"]["lr"] == best[0]["params"]["lr"] for x in evals)
    table = stats.search_variance_table(store.frame(suite.name), store.frame(suite.name, role=REPEAT))
    assert len(table) == 1 and table["n_repeats"].iloc[0] == 2 and table["n_seeds"].iloc[0] == 2
    assert table["sd_search"].iloc[0] >= 0
    assert s["progress"]["finished"] == s["progress"]["total"] == 4 + 2 + 2


@pytest.mark.slow
def test_report_shows_search_variance(tmp_path, write_suite):
    from ffbench.analysis.report import build_report

    path = write_suite(SUITE.format(repeats=3, seeds="100"))
    s = runner.run_suite(str(path), tmp_path / "out", device="cpu", progress=False, track=False)
    written = build_report(tmp_path / "out", "repeats", kinds=["comparison"], store=s["store"])
    md = next(p for p in written if p.name == "comparison.md").read_text()
    assert "SD from search (pp)" in md and "Bouthillier" in md
    csv = next(p for p in written if p.name == "search_variance.csv")
    assert "sd_search" in csv.read_text().splitlines()[0]
