"""Tuning: an equal budget of Optuna trials per method per cell, pruning, evaluation on fresh seeds only."""
import math
import time
from pathlib import Path

import optuna
import pytest
import torch

from ffbench import runner, tuning
from ffbench import workers as w
from ffbench.design import expand
from ffbench.store import DONE, FAILED, FINISHED, PRUNED, Store
from ffbench.suite import SuiteError, load

SUITE = """
[suite]
name = "tune-{tag}"
version = 1

[design]
methods = ["bp", "bp.deepsup"]
datasets = ["synthetic"]
backbones = ["mlp"]
seeds = [0, 1]

[train]
epochs = 2
batch_size = 64

[backbones.mlp]
widths = [16]

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


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def write(tmp_path: Path, tag="a", tuning_seeds="100", sampler="TPESampler", sampler_extra=", n_startup_trials = 2",
          pruner="MedianPruner", pruner_args="n_startup_trials = 2", extra="") -> Path:
    p = tmp_path / f"{tag}.toml"
    p.write_text(SUITE.format(tag=tag, tuning_seeds=tuning_seeds, sampler=sampler, sampler_extra=sampler_extra,
                              pruner=pruner, pruner_args=pruner_args, extra=extra))
    return p


def test_budget_is_exact_and_evaluation_uses_fresh_seeds(tmp_path):
    path = write(tmp_path, tuning_seeds="100, 101")
    s = runner.run_suite(str(path), tmp_path / "out", device="cpu", progress=False, track=False)
    suite, design, store = s["suite"], s["design"], s["store"]
    assert s["progress"]["finished"] == s["progress"]["total"] == 2 * 3 + 2 * 2
    storage = tuning.open_storage(s["optuna_storage"])
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
        best = tuning.choose_best(trials)
        for r in evals:
            assert r["status"] == DONE and r["config"]["seed"] == r["seed"]
            assert r["params"]["_tuning_trial"] == best["trial"]
            assert r["config"]["lr"] == pytest.approx(best["params"]["lr"])
            assert r["config"]["weight_decay"] == pytest.approx(best["params"]["weight_decay"])
        study = optuna.load_study(study_name=tuning.study_name(suite, cell), storage=storage)
        assert len(study.trials) == 3
        assert sorted(t.user_attrs["ffbench.slot"] for t in study.trials) == [0, 1, 2]
        assert {t.number for t in study.trials} == {r["optuna_trial"] for r in trials}
    # only evaluation runs enter the results
    table, frame = runner.results_table(store, suite, design)
    assert set(frame["role"]) == {"evaluation"} and list(table["n"]) == [2, 2]
    # the budget curves: k = 1..n per cell, best-so-far never decreases
    curves = tuning.budget_curves(store, suite, design)
    assert len(curves) == 2 * 3
    for _, g in curves.groupby("cell_id"):
        assert list(g["k"]) == [1, 2, 3] and g["chosen"].sum() == 1
        best = g["best_val_acc"].dropna()
        assert list(best) == sorted(best)
    # bp used the suite's space, bp.deepsup its card's default space
    assert {c.factors["method"]: sorted(c.tuning["space"]) for c in design.cells} == {
        "bp": ["lr", "weight_decay"], "bp.deepsup": ["lr", "weight_decay"]}
    # resume: nothing left to do
    again = runner.run_suite(str(path), tmp_path / "out", device="cpu", progress=False, track=False)
    assert again["executed"] == 0


def test_pruned_trials_are_recorded_and_evaluation_fails_visibly(tmp_path):
    # a threshold nobody reaches: every trial is pruned at its first report
    path = write(tmp_path, tag="p", pruner="ThresholdPruner", pruner_args="lower = 1.1")
    s = runner.run_suite(str(path), tmp_path / "out", device="cpu", progress=False, track=False)
    suite, store = s["suite"], s["store"]
    trials = store.rows(suite.name, role="tuning")
    assert len(trials) == 6 and {r["status"] for r in trials} == {PRUNED}
    assert all(r["metrics"]["pruned_at_step"] == 0 and "pruned at step 0" in r["error"] for r in trials)
    states = {t.state for c in s["design"].cells for t in optuna.load_study(
        study_name=tuning.study_name(suite, c), storage=tuning.open_storage(s["optuna_storage"])).trials}
    assert states == {optuna.trial.TrialState.PRUNED}
    evals = store.rows(suite.name, role="evaluation")
    assert len(evals) == 4 and {r["status"] for r in evals} == {FAILED}
    assert all("no completed trial (0 failed, 3 pruned of 3)" in r["error"] for r in evals)
    listed = runner.failures(store, suite, s["design"])
    assert sum(f["role"] == "evaluation" and f["status"] == FAILED for f in listed) == 4
    table, _ = runner.results_table(store, suite, s["design"])
    assert list(table["failed"]) == [2, 2] and list(table["n"]) == [0, 0]


def test_a_dead_workers_trial_is_failed_and_its_slot_redone(tmp_path):
    path = write(tmp_path, tag="d")
    suite = load(str(path))
    design = expand(suite)
    store = Store(tmp_path / "out" / "results.db")
    url = tuning.default_storage(tmp_path / "out")
    w.init_suite(suite, design, store, None, url)
    cell = design.cells[0]
    # a worker claims slot 0, asks Optuna for a trial and dies
    slot = design.trials[0]
    assert store.claim(slot.run_id, "ghost:1", 600)
    storage = tuning.open_storage(url)
    study = tuning.load_study(storage, suite, cell, 0)
    ghost = study.ask(tuning.distributions(cell.tuning["space"]))
    assert store.set_trial(slot.run_id, "ghost:1", ghost.number, ghost.params, slot.store_row(suite)["config"])
    time.sleep(1.1)
    env = w.Env(suite, design, store, "alive:2", "cpu", None, url, lease_s=1.0, poll_s=0.2)
    w.work(env)
    rows = store.rows(suite.name, cell_id=cell.cell_id, role="tuning")
    assert sorted(r["trial"] for r in rows) == [0, 1, 2] and all(r["status"] in FINISHED for r in rows)
    redone = store.rows(run_id=slot.run_id)[0]
    assert redone["attempts"] == 2 and redone["worker"] == "alive:2" and redone["optuna_trial"] != ghost.number
    trials = optuna.load_study(study_name=tuning.study_name(suite, cell), storage=storage).trials
    assert len(trials) == 4  # the dead worker's trial, marked failed, is not part of the budget
    assert trials[ghost.number].state == optuna.trial.TrialState.FAIL
    assert len(store.rows(suite.name, cell_id=cell.cell_id, role="evaluation")) == 2


@pytest.mark.parametrize("kwargs, where, allowed", [
    (dict(tuning_seeds="0"), "[tuning].seeds", "must be disjoint"),
    (dict(sampler="Hyperband"), "[tuning].sampler", "allowed: TPESampler, RandomSampler"),
    (dict(sampler="RandomSampler", sampler_extra=", n_startup_trials = 2"), "[tuning].sampler_args.n_startup_trials",
     "allowed: seed"),
    (dict(pruner="Median"), "[tuning].pruner", "allowed: MedianPruner"),
    (dict(extra='[tuning.space."bp.deepsup"]\nlr = ["log", 0, 1]'), '[tuning.space."bp.deepsup"].lr', "low > 0"),
    (dict(extra='[tuning.space."bp.deepsup"]\nhead = ["choice", "linear", "conv"]'), '[tuning.space."bp.deepsup"].head',
     "allowed: 'linear', 'goodness'"),
    (dict(extra='[tuning.space."bp.deepsup"]\ncolour = ["choice", 1, 2]'), '[tuning.space."bp.deepsup"].colour',
     "training fields (epochs"),
    (dict(extra='[tuning.space."sff"]\nlr = ["log", 1e-4, 1e-2]'), '[tuning.space."sff"]', "allowed: bp, bp.deepsup"),
    (dict(sampler="GridSampler", sampler_extra=""), "[tuning].sampler", 'needs every parameter as ["choice", ...]'),
])
def test_bad_tuning_sections_rejected(tmp_path, kwargs, where, allowed):
    path = write(tmp_path, **kwargs)
    with pytest.raises(SuiteError) as err:
        load(str(path))
    msg = str(err.value)
    assert str(path) in msg and where in msg and allowed in msg, msg


def test_sampler_must_be_seeded(tmp_path):
    path = write(tmp_path, sampler_extra="")
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
    assert tuning.expected_max(vals, 1) == pytest.approx(0.6)
    curve = [tuning.expected_max(vals, k) for k in range(1, 6)]
    assert curve == sorted(curve) and curve[-1] < 0.7 and math.isclose(tuning.expected_max([0.4], 3), 0.4)
