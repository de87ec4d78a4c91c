"""Tuning: an equal budget of Optuna trials per method per cell, pruning, evaluation on fresh seeds only."""

import math
from pathlib import Path

import optuna
import pytest
from suites import suite_toml

from ffbench import stats
from ffbench.execution import results, runner, studies
from ffbench.execution.execute import Env
from ffbench.execution.selection import choose_best
from ffbench.execution.workers import work
from ffbench.plan import tuning
from ffbench.plan.design import expand
from ffbench.plan.suite import SuiteError, load
from ffbench.record.store import DONE, FAILED, FINISHED, PRUNED, Store

TUNING = """
[tuning]
trials = 3
seeds = [{tuning_seeds}]
sampler = "{sampler}"
sampler_args = {{ seed = 0{sampler_extra} }}
pruner = "{pruner}"
pruner_args = {{ {pruner_args} }}

[tuning.space."bp"]
lr = ["log", 1e-3, 3e-2]
weight_decay = ["log", 1e-6, 1e-3]
{extra}
"""


@pytest.fixture
def write(write_suite):
    """The suite above with the given [tuning] settings, written into the test's directory."""

    def make(
        tag="a",
        tuning_seeds="100",
        sampler="TPESampler",
        sampler_extra=", n_startup_trials = 2",
        pruner="MedianPruner",
        pruner_args="n_startup_trials = 2",
        extra="",
    ) -> Path:
        tuning = TUNING.format(
            tuning_seeds=tuning_seeds,
            sampler=sampler,
            sampler_extra=sampler_extra,
            pruner=pruner,
            pruner_args=pruner_args,
            extra=extra,
        )
        text = suite_toml(f"tune-{tag}", methods=["bp", "bp.deepsup"], seeds=[0, 1], epochs=2, batch_size=64)
        return write_suite(text + tuning, tag)

    return make


@pytest.mark.slow
def test_budget_is_exact_and_evaluation_uses_fresh_seeds(tmp_path, write):
    path = write(tuning_seeds="100, 101")
    s = runner.run_suite(str(path), tmp_path / "out", device="cpu", progress=False, track=False)
    suite, design, store = s["suite"], s["design"], s["store"]
    assert s["progress"]["finished"] == s["progress"]["total"] == 2 * 3 + 2 * 2
    storage = studies.open_storage(s["optuna_storage"])
    for cell in design.cells:
        trials = store.rows(suite.name, cell_id=cell.cell_id, role="tuning")
        evals = store.rows(suite.name, cell_id=cell.cell_id, role="evaluation")
        assert sorted(r["trial"] for r in trials) == [0, 1, 2]  # exactly n trials for this method in this cell
        assert all(r["status"] in FINISHED and r["attempts"] == 1 for r in trials)
        assert {r["seed"] for r in trials} == {100} and {r["config"]["seed"] for r in trials} == {100}
        assert all(set(r["metrics"]) >= {"val_acc.seed100", "val_acc.seed101"} for r in trials if r["status"] == DONE)
        for r in trials:  # tuning never looks at the test set
            assert not any(k.startswith("test_") for k in r["metrics"])
            assert not any(k.startswith("test_") for row in r["curves"] for k in row)
            assert {row["seed"] for row in r["curves"]} <= {100, 101}
        assert sorted(r["seed"] for r in evals) == [0, 1]  # fresh evaluation seeds, disjoint from tuning seeds
        best = choose_best(trials)
        for r in evals:
            assert r["status"] == DONE and r["config"]["seed"] == r["seed"]
            assert r["params"]["_tuning_trial"] == best["trial"]
            assert r["config"]["lr"] == pytest.approx(best["params"]["lr"])
            assert r["config"]["weight_decay"] == pytest.approx(best["params"]["weight_decay"])
        study = optuna.load_study(study_name=studies.study_name(suite, cell), storage=storage)
        assert len(study.trials) == 3
        assert sorted(t.user_attrs["ffbench.slot"] for t in study.trials) == [0, 1, 2]
        assert {t.number for t in study.trials} == {r["optuna_trial"] for r in trials}
    # only evaluation runs enter the results
    table, frame = results.results_table(store, suite, design)
    assert set(frame["role"]) == {"evaluation"} and list(table["n"]) == [2, 2]
    # the budget curves: k = 1..n per cell, best-so-far never decreases
    curves = results.budget_curves(store, suite, design)
    assert len(curves) == 2 * 3
    aggregates = results.cell_aggregates(store, suite, design)
    for cell_id, g in curves.groupby("cell_id"):
        assert list(g["k"]) == [1, 2, 3] and g["chosen"].sum() == 1
        best = g["best_val_acc"].dropna()
        assert list(best) == sorted(best)
        # the MLflow parent run gets the same curve as budget_curves.csv (one function computes both)
        assert aggregates[cell_id]["budget_curve"] == [(k, b) for k, b in zip(g["k"], g["best_val_acc"]) if b == b]
        assert aggregates[cell_id]["summary"]["tuning_best_trial"] == int(g.loc[g["chosen"], "trial"].iloc[0])
    # bp used the suite's space, bp.deepsup its card's default space
    assert {c.factors["method"]: sorted(c.tuning["space"]) for c in design.cells} == {
        "bp": ["lr", "weight_decay"],
        "bp.deepsup": ["lr", "weight_decay"],
    }
    # resume: nothing left to do
    again = runner.run_suite(str(path), tmp_path / "out", device="cpu", progress=False, track=False)
    assert again["executed"] == 0


def test_pruned_trials_are_recorded_and_evaluation_fails_visibly(tmp_path, write):
    # a threshold nobody reaches: every trial is pruned at its first report
    path = write(tag="p", pruner="ThresholdPruner", pruner_args="lower = 1.1")
    s = runner.run_suite(str(path), tmp_path / "out", device="cpu", progress=False, track=False)
    suite, store = s["suite"], s["store"]
    trials = store.rows(suite.name, role="tuning")
    assert len(trials) == 6 and {r["status"] for r in trials} == {PRUNED}
    assert all(r["metrics"]["pruned_at_step"] == 0 and "pruned at step 0" in r["error"] for r in trials)
    states = {
        t.state
        for c in s["design"].cells
        for t in optuna.load_study(
            study_name=studies.study_name(suite, c), storage=studies.open_storage(s["optuna_storage"])
        ).trials
    }
    assert states == {optuna.trial.TrialState.PRUNED}
    evals = store.rows(suite.name, role="evaluation")
    assert len(evals) == 4 and {r["status"] for r in evals} == {FAILED}
    assert all("no completed trial (0 failed, 3 pruned of 3)" in r["error"] for r in evals)
    listed = results.failures(store, suite, s["design"])
    assert sum(f["role"] == "evaluation" and f["status"] == FAILED for f in listed) == 4
    table, _ = results.results_table(store, suite, s["design"])
    assert list(table["failed"]) == [2, 2] and list(table["n"]) == [0, 0]


def test_a_dead_workers_trial_is_failed_and_its_slot_redone(tmp_path, write, monkeypatch):
    path = write(tag="d")
    suite = load(str(path))
    design = expand(suite)
    store = Store(tmp_path / "out" / "results.db")
    clock = [store.now()]
    monkeypatch.setattr(store, "now", lambda: clock[0])  # lease time is the store's clock: set it, never sleep
    url = studies.default_storage(tmp_path / "out")
    runner.init_suite(suite, design, store, None, url)
    cell = design.cells[0]
    # a worker claims slot 0, asks Optuna for a trial and dies
    slot = design.trials[0]
    assert store.claim(slot.run_id, "ghost:1", 600)
    storage = studies.open_storage(url)
    study = studies.load_study(storage, suite, cell, 0)
    ghost = study.ask(studies.distributions(cell.tuning["space"]))
    assert store.set_trial(slot.run_id, "ghost:1", ghost.number, ghost.params, slot.store_row(suite)["config"])
    clock[0] += 601  # the dead worker's lease (600 s) runs out without a heartbeat
    env = Env(suite, design, store, "alive:2", "cpu", None, url, lease_s=600, poll_s=0.2)
    work(env)
    rows = store.rows(suite.name, cell_id=cell.cell_id, role="tuning")
    assert sorted(r["trial"] for r in rows) == [0, 1, 2] and all(r["status"] in FINISHED for r in rows)
    redone = store.rows(run_id=slot.run_id)[0]
    assert redone["attempts"] == 2 and redone["worker"] == "alive:2" and redone["optuna_trial"] != ghost.number
    trials = optuna.load_study(study_name=studies.study_name(suite, cell), storage=storage).trials
    assert len(trials) == 4  # the dead worker's trial, marked failed, is not part of the budget
    assert trials[ghost.number].state == optuna.trial.TrialState.FAIL
    assert len(store.rows(suite.name, cell_id=cell.cell_id, role="evaluation")) == 2


@pytest.mark.parametrize(
    "kwargs, where, allowed",
    [
        (dict(tuning_seeds="0"), "[tuning].seeds", "must be disjoint"),
        (dict(sampler="Hyperband"), "[tuning].sampler", "allowed: TPESampler, RandomSampler"),
        (
            dict(sampler="RandomSampler", sampler_extra=", n_startup_trials = 2"),
            "[tuning].sampler_args.n_startup_trials",
            "allowed: seed",
        ),
        (dict(pruner="Median"), "[tuning].pruner", "allowed: MedianPruner"),
        (dict(extra='[tuning.space."bp.deepsup"]\nlr = ["log", 0, 1]'), '[tuning.space."bp.deepsup"].lr', "low > 0"),
        (
            dict(extra='[tuning.space."bp.deepsup"]\nhead = ["choice", "linear", "conv"]'),
            '[tuning.space."bp.deepsup"].head',
            "allowed: one of linear, goodness",
        ),
        (
            dict(extra='[tuning.space."bp.deepsup"]\ncolour = ["choice", 1, 2]'),
            '[tuning.space."bp.deepsup"].colour',
            "training fields (epochs",
        ),
        (
            dict(extra='[tuning.space."sff"]\nlr = ["log", 1e-4, 1e-2]'),
            '[tuning.space."sff"]',
            "allowed: bp, bp.deepsup",
        ),
        (dict(sampler="GridSampler", sampler_extra=""), "[tuning].sampler", 'needs every parameter as ["choice", ...]'),
    ],
)
def test_bad_tuning_sections_rejected(write, kwargs, where, allowed):
    path = write(**kwargs)
    with pytest.raises(SuiteError) as err:
        load(str(path))
    msg = str(err.value)
    assert str(path) in msg and where in msg and allowed in msg, msg


def test_sampler_must_be_seeded(write):
    path = write(sampler_extra="")
    path.write_text(path.read_text().replace("sampler_args = { seed = 0 }", "sampler_args = { n_startup_trials = 2 }"))
    with pytest.raises(SuiteError, match=r"\[tuning\].sampler_args.seed: missing"):
        load(str(path))


def test_samplers_are_pinned_and_seeded_per_slot():
    spec = {"sampler": "TPESampler", "sampler_args": {"seed": 3, "n_startup_trials": 2}, "space": {}}
    a, b, a2 = (tuning.make_sampler(spec, k) for k in (0, 1, 0))
    assert isinstance(a, optuna.samplers.TPESampler)
    draw = [s._rng.rng.random() for s in (a, b, a2)]
    assert draw[0] == draw[2] != draw[1]  # same slot, same stream; another slot, another stream
    qmc = {"sampler": "QMCSampler", "sampler_args": {"seed": 3, "scramble": True}, "space": {}}
    assert tuning.make_sampler(qmc, 0)._seed == tuning.make_sampler(qmc, 5)._seed == 3  # a shared sequence


def test_expected_max_budget_estimator():
    vals = [0.5, 0.7, 0.6]
    curve = list(stats.expected_max(vals, 5))
    assert curve[0] == pytest.approx(0.6)  # one trial: the mean
    assert curve == sorted(curve) and curve[-1] < 0.7 and math.isclose(stats.expected_max([0.4], 3)[-1], 0.4)
