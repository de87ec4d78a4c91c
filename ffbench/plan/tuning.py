"""Equal-budget tuning with Optuna inside each cell, then evaluation on fresh seeds: the tuning
specification (``TuningSpec``, parsed and validated with the rest of the suite file in ``suite.py``), how
tuned parameters enter a configuration (``apply_params``), and how tuning and evaluation are coordinated
(below). The parts: ``studies.py`` (Optuna storages, studies, samplers, pruners), ``execute.py`` (one
trial: ask, train, record, tell), ``selection.py`` (the best trial's configuration becomes the evaluation
runs), and ``stats.budget_curves`` (each method's budget curve, read by ``results.py`` and the report).

Suite syntax::

    [tuning]
    trials = 8                                   # per method per cell: the equal budget
    seeds = [1000]                               # tuning seeds; disjoint from [design].seeds (checked)
    sampler = "TPESampler"                       # a class of optuna.samplers, pinned with its arguments
    sampler_args = { seed = 0, n_startup_trials = 4, multivariate = true, constant_liar = true }
    pruner = "MedianPruner"                      # a class of optuna.pruners (NopPruner: no pruning)
    pruner_args = { n_startup_trials = 3, n_warmup_steps = 1 }

    [tuning.space."bp"]                          # per method; default: the method card's tuning_space
    lr = ["log", 1e-4, 1e-2]                     # "log" | "float" | "int": [kind, low, high]
    head = ["choice", "linear", "goodness"]      # "choice": [kind, value, value, ...]
    # parameters: training fields (lr, weight_decay, momentum, batch_size, epochs, ...),
    # the method's card options, or backbone.<option>

A trial trains the cell's configuration with the sampled parameters on every tuning seed and scores the
mean validation accuracy (at each seed's best-validation epoch); the per-epoch validation accuracy is
reported to the pruner (step = seed index x epochs + epoch), and a hopeless trial ends as *pruned*. When
all ``trials`` trials of a cell are finished, the completed trial with the highest score (ties: the earlier
trial) gives the configuration that is then run on the evaluation seeds; only those evaluation runs enter
the results table and the report. The trial history stays in the store (role='tuning', trial = 0..n-1),
and ``stats.budget_curves`` turns it into each method's budget curve.

How tuning and evaluation are coordinated across workers (the store drives, Optuna samples)
------------------------------------------------------------------------------------------
* The budget is a set of store rows: each tuned cell gets ``trials`` tuning rows ("slots", run IDs
  ``<cell>-t<k>``) when the suite is initialised. A worker claims a slot with the store's atomic
  claim, exactly as it claims an evaluation run, so slots of one cell run in parallel on several workers
  and a cell never gets more or fewer than ``trials`` trials, whatever the number of workers.
* After claiming slot k the worker asks the cell's Optuna study (one study per cell, so per method) for a
  trial with the cell's fixed search space, records the Optuna trial number and the parameters in the
  slot's row, trains, writes the outcome to the store (only if it still holds the slot), and then tells
  the study (COMPLETE / PRUNED / FAIL). The sampler is rebuilt from the suite's pinned class and
  arguments for every ask, seeded from (sampler seed, slot) so that parallel workers do not draw the same
  random start-up points and a single worker reproduces the same sequence; QMC and grid samplers keep
  the suite's seed (their sequence must be shared).
* Dead workers: the slot's lease and heartbeat are the store's, the same mechanism as for evaluation
  runs (Optuna's own heartbeat exists only on RDB storages and not on the journal file, so it is not used).
  A slot whose heartbeat is older than the lease is claimed again; the new holder first marks the dead
  holder's Optuna trial FAIL (it would otherwise stay RUNNING for ever and bias constant-liar sampling),
  then asks a new trial. The failed Optuna trial is not part of the budget: the budget is the slots.
* Evaluation depends on tuning: the evaluation runs of a tuned cell are inserted into the store only once
  all its slots are finished (done, pruned or failed). Whichever worker sees that first (normally the one
  that finished the last slot; after a crash, any worker or a restarted suite) inserts them; the insert is
  idempotent (``INSERT .. ON CONFLICT DO NOTHING``), and the choice is a pure function of the stored
  slots, so every worker would insert the same rows. If no trial completed, the evaluation runs are
  recorded as failed outcomes with the reason instead of silently missing.
* Storage: a JournalFileBackend file under the output directory on one machine (several processes;
  Optuna's FAQ advice), an RDB URL (PostgreSQL) when several machines share the suite. SQLite is refused
  for tuning with several workers (the FAQ: "database is locked" under parallel writers).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ffbench.core.config import TRAIN_FIELDS, RunConfig, content_hash

METRIC = "val_acc"


@dataclass(frozen=True)
class TuningSpec:
    trials: int
    seeds: tuple[int, ...]
    sampler: str
    sampler_args: dict[str, Any]
    pruner: str
    pruner_args: dict[str, Any]
    spaces: dict[str, dict[str, tuple]] = field(default_factory=dict)  # method -> param -> (kind, ...)
    repeats: int = 1  # independent replicates of the whole search, for hyperparameter-search variance

    def for_method(self, method: str) -> dict[str, Any]:
        """Everything that decides a method's tuning in one cell (it enters the cell ID)."""
        spec = {
            "trials": self.trials,
            "seeds": list(self.seeds),
            "sampler": self.sampler,
            "sampler_args": self.sampler_args,
            "pruner": self.pruner,
            "pruner_args": self.pruner_args,
            "space": {k: list(v) for k, v in self.spaces[method].items()},
            "metric": METRIC,
        }
        if self.repeats > 1:  # absent at 1, so a suite without repeats keeps its cell IDs
            spec["repeats"] = self.repeats
        return spec


# ---------------------------------------------------------------- repeats of the search
# Repeat r of a cell's search is the whole procedure again with other tuning seeds (each shifted by
# r x REPEAT_SEED_STRIDE) and its own Optuna study: slots r*trials .. (r+1)*trials - 1. Repeat 0 is the
# search whose choice gives the cell's evaluation runs; the best configuration of each later repeat runs on
# the same evaluation seeds as role REPEAT, so the spread of the cell's mean over repeats measures the
# hyperparameter-search variance (Bouthillier et al. 2021) without entering the main results.
REPEAT_SEED_STRIDE = 1_000_000
REPEAT = "repeat"


def repeats_of(spec: dict[str, Any]) -> int:
    return int(spec.get("repeats", 1))


def repeat_of_slot(spec: dict[str, Any], slot: int) -> int:
    return slot // spec["trials"]


def tuning_seeds(spec: dict[str, Any], repeat: int) -> list[int]:
    return [int(s) + repeat * REPEAT_SEED_STRIDE for s in spec["seeds"]]


# ---------------------------------------------------------------- configurations
def apply_params(config: RunConfig, params: dict[str, Any]) -> RunConfig:
    """The configuration with tuned parameters in place (training fields, method or backbone options)."""
    train = {k: v for k, v in params.items() if k in TRAIN_FIELDS}
    method = {k: v for k, v in params.items() if k not in TRAIN_FIELDS and not k.startswith("backbone.")}
    backbone = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("backbone.")}
    return replace(
        config,
        **train,
        method_options={**config.method_options, **method},
        backbone_options={**config.backbone_options, **backbone},
    )


def tuning_hash(spec: dict[str, Any] | None) -> str | None:
    return content_hash(spec) if spec else None


SHARED_SEED = ("QMCSampler", "GridSampler")  # their sequence depends on the seed: the same on every ask


def slot_seed(seed: int, slot: int) -> int:
    import numpy as np

    return int(np.random.SeedSequence([int(seed), int(slot), 0x0F7B]).generate_state(1)[0] >> 1)


def make_sampler(spec: dict[str, Any], slot: int):
    import optuna

    args = dict(spec["sampler_args"])
    if spec["sampler"] == "GridSampler":
        args["search_space"] = {k: list(v[1:]) for k, v in spec["space"].items()}
    if "seed" in args and spec["sampler"] not in SHARED_SEED:
        args["seed"] = slot_seed(args["seed"], slot)
    return getattr(optuna.samplers, spec["sampler"])(**args)


def make_pruner(spec: dict[str, Any]):
    import optuna

    return getattr(optuna.pruners, spec["pruner"])(**spec["pruner_args"])
