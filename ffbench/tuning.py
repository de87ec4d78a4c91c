"""Equal-budget tuning with Optuna inside each cell, then evaluation on fresh seeds.

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
and ``budget_curves`` turns it into each method's budget curve.

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

import inspect
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ffbench.config import TRAIN_FIELDS, RunConfig, canonical_json, content_hash, type_ok
from ffbench.registry import BACKBONES, METHODS

if TYPE_CHECKING:  # pragma: no cover
    from ffbench.design import Cell, Design
    from ffbench.store import Store
    from ffbench.suite import Suite

SAMPLERS = ("TPESampler", "RandomSampler", "QMCSampler", "GPSampler", "CmaEsSampler", "GridSampler")
PRUNERS = ("MedianPruner", "PercentilePruner", "SuccessiveHalvingPruner", "HyperbandPruner", "ThresholdPruner",
           "NopPruner")
SHARED_SEED = ("QMCSampler", "GridSampler")  # their sequence depends on the seed: the same on every ask
SPACE_KINDS = ("log", "float", "int", "choice")
_TUNING_KEYS = ("trials", "seeds", "sampler", "sampler_args", "pruner", "pruner_args", "space")
METRIC = "val_acc"


class Pruned(Exception):
    """Raised from the per-epoch callback when the pruner stops a trial."""

    def __init__(self, step: int, value: float):
        super().__init__(f"pruned at step {step} (validation accuracy {value:.4f})")
        self.step, self.value = step, value


@dataclass(frozen=True)
class TuningSpec:
    trials: int
    seeds: tuple[int, ...]
    sampler: str
    sampler_args: dict[str, Any]
    pruner: str
    pruner_args: dict[str, Any]
    spaces: dict[str, dict[str, tuple]] = field(default_factory=dict)  # method -> param -> (kind, ...)

    def for_method(self, method: str) -> dict[str, Any]:
        """Everything that decides a method's tuning in one cell (it enters the cell ID)."""
        return {"trials": self.trials, "seeds": list(self.seeds), "sampler": self.sampler,
                "sampler_args": self.sampler_args, "pruner": self.pruner, "pruner_args": self.pruner_args,
                "space": {k: list(v) for k, v in self.spaces[method].items()}, "metric": METRIC}


# ---------------------------------------------------------------- validation (suite load; no torch)
def parse_tuning(ck, table: Any, methods: list[str], backbones: list[str], eval_seeds: list[int]) -> TuningSpec:
    ck.keys("[tuning]", table, _TUNING_KEYS)
    for k in ("trials", "seeds", "sampler", "pruner"):
        if k not in table:
            ck.fail(f"[tuning].{k}", "missing (required: the budget, the seeds and the sampler and pruner are "
                                     "pinned in the suite file)")
    trials = table["trials"]
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        ck.fail("[tuning].trials", "expected a positive integer (trials per method per cell)")
    seeds = table["seeds"]
    if (not isinstance(seeds, list) or not seeds or
            not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        ck.fail("[tuning].seeds", "expected a non-empty list of non-negative integers")
    if len(set(seeds)) != len(seeds):
        ck.fail("[tuning].seeds", "contains duplicates")
    shared = sorted(set(seeds) & set(eval_seeds))
    if shared:
        ck.fail("[tuning].seeds", f"{', '.join(map(str, shared))} also in [design].seeds; tuning seeds and "
                                  f"evaluation seeds must be disjoint (evaluation seeds: {eval_seeds})")

    import optuna

    sampler, pruner = table["sampler"], table["pruner"]
    if sampler not in SAMPLERS:
        ck.fail("[tuning].sampler", f"{sampler!r} is not allowed; allowed: {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        ck.fail("[tuning].pruner", f"{pruner!r} is not allowed; allowed: {', '.join(PRUNERS)}")
    sampler_args = _check_args(ck, "[tuning].sampler_args", table.get("sampler_args", {}),
                               getattr(optuna.samplers, sampler), exclude=("search_space",))
    if "seed" in inspect.signature(getattr(optuna.samplers, sampler)).parameters and "seed" not in sampler_args:
        ck.fail("[tuning].sampler_args.seed", "missing (required: the sampler must be seeded)")
    pruner_args = _check_args(ck, "[tuning].pruner_args", table.get("pruner_args", {}),
                              getattr(optuna.pruners, pruner))

    space_table = table.get("space", {})
    if not isinstance(space_table, dict):
        ck.fail("[tuning].space", "expected a table of per-method tables")
    for name in space_table:
        if name not in methods:
            ck.fail(f'[tuning.space."{name}"]', f"not in [design].methods; allowed: {', '.join(methods)}")
    spaces = {}
    for m in methods:
        if m in space_table:
            where, spec = f'[tuning.space."{m}"]', space_table[m]
        else:
            where, spec = f"the tuning_space of {m}'s card (no [tuning.space.\"{m}\"])", METHODS.get(m).card.tuning_space
        if not isinstance(spec, dict):
            ck.fail(where, "expected a table of parameters")
        if not spec:
            ck.fail(where, f"empty search space for {m}; give [tuning.space.\"{m}\"] (every method is tuned with "
                           f"the same number of trials)")
        spaces[m] = {k: _check_param(ck, f"{where}.{k}", k, v, m, backbones) for k, v in spec.items()}
    if sampler == "GridSampler":
        for m, space in spaces.items():
            if any(v[0] != "choice" for v in space.values()):
                ck.fail("[tuning].sampler", f"GridSampler needs every parameter as [\"choice\", ...]; {m} has "
                                            f"{', '.join(k for k, v in space.items() if v[0] != 'choice')}")
            size = math.prod(len(v) - 1 for v in space.values())
            if size != trials:
                ck.fail("[tuning].trials", f"GridSampler: {m}'s grid has {size} points; trials must equal it "
                                           f"(got {trials})")
    return TuningSpec(trials, tuple(seeds), sampler, dict(sampler_args), pruner, dict(pruner_args), spaces)


def _check_args(ck, where: str, args: Any, cls: type, exclude: tuple = ()) -> dict:
    if not isinstance(args, dict):
        ck.fail(where, "expected a table of keyword arguments")
    params = [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs", *exclude)]
    for k, v in args.items():
        if k not in params:
            ck.fail(f"{where}.{k}", f"not an argument of {cls.__name__}; allowed: {', '.join(params)}")
        if isinstance(v, dict):
            ck.fail(f"{where}.{k}", "expected a plain value (numbers, strings, booleans, lists)")
    return args


def _check_param(ck, where: str, name: str, spec: Any, method: str, backbones: list[str]) -> tuple:
    shapes = '["log", low, high], ["float", low, high], ["int", low, high] or ["choice", value, ...]'
    if isinstance(spec, tuple):
        spec = list(spec)
    if not isinstance(spec, list) or len(spec) < 2 or spec[0] not in SPACE_KINDS:
        ck.fail(where, f"expected {shapes}")
    kind, values = spec[0], spec[1:]
    # what the parameter sets, and which values it takes
    card = METHODS.get(method).card
    if name in TRAIN_FIELDS:
        f = TRAIN_FIELDS[name]
        allowed: Any = f.allowed or f.kind

        def ok(v):
            return type_ok(v, f.kind) and (f.allowed is None or v in f.allowed) and (f.check is None or f.check(v))
    elif name.startswith("backbone."):
        opt = name.split(".", 1)[1]
        lacking = [b for b in backbones if opt not in BACKBONES.get(b).card.options]
        if lacking:
            ck.fail(where, f"backbone option {opt!r} is not offered by {', '.join(lacking)}")
        allowed = BACKBONES.get(backbones[0]).card.options[opt]

        def ok(v):
            return all(v in a if isinstance(a, tuple) else type_ok(v, a)
                       for a in (BACKBONES.get(b).card.options[opt] for b in backbones))
    elif name in card.options:
        allowed = card.options[name]

        def ok(v):
            return v in allowed if isinstance(allowed, tuple) else type_ok(v, allowed)
    else:
        ck.fail(where, f"unknown parameter; allowed: training fields ({', '.join(TRAIN_FIELDS)}), {method}'s "
                       f"options ({', '.join(card.options) or 'none'}), or backbone.<option>")
    if isinstance(allowed, tuple):
        shown = ", ".join(getattr(a, "__name__", repr(a)) for a in allowed)
    else:
        shown = getattr(allowed, "__name__", str(allowed))
    if kind == "choice":
        if len(values) < 2:
            ck.fail(where, "a choice needs at least two values")
        for v in values:
            if not ok(v):
                ck.fail(where, f"{v!r} is not allowed for {name}; allowed: {shown}")
        return ("choice", *values)
    if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        ck.fail(where, f"expected [{kind!r}, low, high] with numbers")
    lo, hi = values
    if not lo < hi:
        ck.fail(where, f"low ({lo}) must be below high ({hi})")
    if kind == "log" and lo <= 0:
        ck.fail(where, f"a log range needs low > 0 (got {lo})")
    if kind == "int" and not all(isinstance(v, int) for v in values):
        ck.fail(where, "an int range needs integer bounds")
    probe = int(lo) if kind == "int" else float(lo)
    for v in (probe, type(probe)(hi)):
        if not ok(v):
            ck.fail(where, f"{kind} values are not allowed for {name}; allowed: {shown}")
    return (kind, lo, hi)


# ---------------------------------------------------------------- configurations
def apply_params(config: RunConfig, params: dict[str, Any]) -> RunConfig:
    """The configuration with tuned parameters in place (training fields, method or backbone options)."""
    train = {k: v for k, v in params.items() if k in TRAIN_FIELDS}
    method = {k: v for k, v in params.items() if k not in TRAIN_FIELDS and not k.startswith("backbone.")}
    backbone = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith("backbone.")}
    return replace(config, **train, method_options={**config.method_options, **method},
                   backbone_options={**config.backbone_options, **backbone})


def distributions(space: dict[str, Any]) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for name, spec in space.items():
        kind, *values = spec
        if kind == "choice":
            out[name] = CategoricalDistribution(values)
        elif kind == "int":
            out[name] = IntDistribution(int(values[0]), int(values[1]))
        else:
            out[name] = FloatDistribution(float(values[0]), float(values[1]), log=kind == "log")
    return out


# ---------------------------------------------------------------- Optuna storage, studies, samplers
def default_storage(out: Path) -> str:
    return f"journal:{(Path(out) / 'optuna.journal').resolve()}"


def open_storage(url: str):
    """``journal:PATH`` (or a path) -> JournalStorage on a file; an SQLAlchemy URL -> RDBStorage."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if "://" in url and not url.startswith("journal:"):
        import time

        for attempt in range(5):  # several workers creating Optuna's tables at once may collide: retry
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
            except Exception:
                if attempt == 4:
                    raise
                time.sleep(0.3 * (attempt + 1))
    path = url[len("journal:"):] if url.startswith("journal:") else url
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(path))


def study_name(suite: "Suite", cell: "Cell") -> str:
    return f"{suite.name}-v{suite.version}-{cell.cell_id}"


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


def ensure_studies(storage, suite: "Suite", design: "Design") -> None:
    """Create the study of every tuned cell (idempotent; the launcher does it before workers start)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for cell in design.cells:
        if cell.tuning is None:
            continue
        study = optuna.create_study(storage=storage, study_name=study_name(suite, cell), direction="maximize",
                                    load_if_exists=True, sampler=optuna.samplers.RandomSampler(0))
        if "ffbench.cell_id" not in study.user_attrs:
            try:  # descriptive only; two launchers writing them at once may collide on an RDB
                study.set_user_attr("ffbench.suite", f"{suite.name} v{suite.version}")
                study.set_user_attr("ffbench.factors", canonical_json(cell.factors))
                study.set_user_attr("ffbench.tuning", canonical_json(cell.tuning))
                study.set_user_attr("ffbench.cell_id", cell.cell_id)
            except Exception:
                pass


def load_study(storage, suite: "Suite", cell: "Cell", slot: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=study_name(suite, cell), storage=storage,
                             sampler=make_sampler(cell.tuning, slot), pruner=make_pruner(cell.tuning))


def fail_orphan(study, number: int | None) -> None:
    """Mark a trial a dead worker left RUNNING as FAIL (journal storages have no heartbeat)."""
    from optuna.trial import TrialState

    if number is None:
        return
    try:
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    except Exception:  # already finished, or not ours to tell; the store is the source of truth
        pass


class Reporter:
    """The ``on_epoch`` callback of a trial: report validation accuracy, raise Pruned when told to."""

    def __init__(self, trial, epochs: int, seed_index: int, lost=None):
        self.trial, self.epochs, self.seed_index, self.lost = trial, epochs, seed_index, lost
        self.rows: list[dict[str, Any]] = []

    def __call__(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.lost is not None:
            self.lost()
        step = self.seed_index * self.epochs + int(row["epoch"]) - 1
        value = float(row[METRIC])
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise Pruned(step, value)


# ---------------------------------------------------------------- choosing and registering evaluation
def choose_best(tuning_rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The completed trial with the highest score; ties go to the earlier trial. None if none completed."""
    from ffbench.store import DONE

    done = [r for r in tuning_rows if r["status"] == DONE and r.get("metrics")
            and _finite(r["metrics"].get(METRIC))]
    if not done:
        return None
    return max(done, key=lambda r: (r["metrics"][METRIC], -r["trial"]))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def evaluation_rows(suite: "Suite", cell: "Cell", tuning_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cell's evaluation runs, configured with the best trial's parameters (or failed, with the reason)."""
    from ffbench.design import EVALUATION, eval_run_id
    from ffbench.store import FAILED, PRUNED

    best = choose_best(tuning_rows)
    rows = []
    for seed in suite.seeds:
        row = {"run_id": eval_run_id(cell, seed), "suite": suite.name, "suite_version": suite.version,
               "cell_id": cell.cell_id, "role": EVALUATION, "seed": seed, "trial": None, "factors": cell.factors}
        if best is not None:
            row["config"] = replace(apply_params(cell.config, best["params"] or {}), seed=seed).to_dict()
            row["params"] = {**(best["params"] or {}), "_tuning_trial": best["trial"]}
        else:
            counts = {s: sum(r["status"] == s for r in tuning_rows) for s in (FAILED, PRUNED)}
            row["config"] = replace(cell.config, seed=seed).to_dict()
            row["status"] = FAILED
            row["error"] = (f"tuning produced no completed trial ({counts[FAILED]} failed, {counts[PRUNED]} pruned "
                            f"of {len(tuning_rows)}): evaluation not run")
        rows.append(row)
    return rows


def register_evaluation(store: "Store", suite: "Suite", cell: "Cell", storage=None) -> int:
    """If every slot of ``cell`` is finished, insert its evaluation runs (idempotent); return how many."""
    from optuna.trial import TrialState

    from ffbench.store import FINISHED

    rows = store.rows(suite.name, cell_id=cell.cell_id, role="tuning")
    if len(rows) < cell.tuning["trials"] or any(r["status"] not in FINISHED for r in rows):
        return 0
    new = store.add_runs(evaluation_rows(suite, cell, rows))
    if new and storage is not None:  # tell Optuna the outcome of any trial whose worker died after the store
        try:
            study = load_study(storage, suite, cell, 0)
            running = {t.number for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING}
            for r in rows:
                if r.get("optuna_trial") in running:
                    _tell(study, r["optuna_trial"], r)
        except Exception:
            pass
    return new


def _tell(study, number: int, row: dict[str, Any]) -> None:
    from optuna.trial import TrialState

    from ffbench.store import DONE, PRUNED

    if row["status"] == DONE and _finite((row.get("metrics") or {}).get(METRIC)):
        study.tell(number, row["metrics"][METRIC], skip_if_finished=True)
    elif row["status"] == PRUNED:
        study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
    else:
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)


# ---------------------------------------------------------------- budget curves
def expected_max(values: list[float], k: int) -> float:
    """Expected best of k draws (with replacement) from the observed scores (Dodge et al. 2019)."""
    v = sorted(values)
    n = len(v)
    return sum(x * ((i / n) ** k - ((i - 1) / n) ** k) for i, x in enumerate(v, start=1))


def budget_curves(store: "Store", suite: "Suite", design: "Design | None" = None):
    """One row per (cell, k): the best validation accuracy after the first k trials (in trial order; pruned
    and failed trials use budget but cannot be best), and the expected best of k random trials among the
    completed ones. Columns: cell_id, the cell's factors, k, status, val_acc, best_val_acc,
    expected_best_val_acc, chosen (the trial whose configuration was evaluated)."""
    import pandas as pd

    from ffbench.store import DONE

    rows = store.rows(suite.name, role="tuning", suite_version=suite.version)
    if design is not None:
        cells = {c.cell_id for c in design.cells}
        rows = [r for r in rows if r["cell_id"] in cells]
    by_cell: dict[str, list[dict]] = {}
    for r in rows:
        by_cell.setdefault(r["cell_id"], []).append(r)
    out = []
    for cell_id, trials in by_cell.items():
        trials.sort(key=lambda r: r["trial"])
        best_row = choose_best(trials) if all(r["status"] in ("done", "failed", "pruned") for r in trials) else None
        completed = [r["metrics"][METRIC] for r in trials
                     if r["status"] == DONE and _finite((r.get("metrics") or {}).get(METRIC))]
        best = float("nan")
        for k, r in enumerate(trials, start=1):
            value = (r.get("metrics") or {}).get(METRIC, float("nan"))
            if r["status"] == DONE and _finite(value):
                best = value if not best == best or value > best else best
            out.append({"cell_id": cell_id, **r["factors"], "k": k, "trial": r["trial"], "status": r["status"],
                        "val_acc": value, "best_val_acc": best,
                        "expected_best_val_acc": expected_max(completed, k) if completed else float("nan"),
                        "chosen": best_row is not None and r["run_id"] == best_row["run_id"],
                        **{f"param.{p}": v for p, v in (r.get("params") or {}).items()}})
    return pd.DataFrame(out)


def tuning_hash(spec: dict[str, Any] | None) -> str | None:
    return content_hash(spec) if spec else None
