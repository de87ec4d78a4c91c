"""Optuna plumbing for equal-budget tuning: storages, one study per tuned cell, pinned samplers and
pruners, asking for a trial's parameters, reporting per-epoch values to the pruner, and telling outcomes.

The store drives tuning (its slots are the budget, see ``tuning.py``); Optuna only samples. Studies live
in a journal file under the output directory (one machine) or an RDB such as PostgreSQL (several).
The sampler is rebuilt from the suite's pinned class and arguments for every ask, seeded from
(sampler seed, slot) so parallel workers do not draw the same start-up points and a single worker
reproduces the same sequence; QMC and grid samplers keep the suite's seed (their sequence is shared).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ffbench.core.config import canonical_json
from ffbench.plan.tuning import METRIC, make_pruner, make_sampler, repeat_of_slot, repeats_of
from ffbench.record.store import DONE, PRUNED, RunRow

if TYPE_CHECKING:  # pragma: no cover
    from ffbench.plan.design import Cell, Design
    from ffbench.plan.suite import Suite


class Pruned(Exception):
    """Raised from the per-epoch callback when the pruner stops a trial."""

    def __init__(self, step: int, value: float):
        super().__init__(f"pruned at step {step} (validation accuracy {value:.4f})")
        self.step, self.value = step, value


def is_score(v: Any) -> bool:
    """A usable trial score: a finite number."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
    path = url[len("journal:") :] if url.startswith("journal:") else url
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(path))


def study_name(suite: Suite, cell: Cell, repeat: int = 0) -> str:
    """One study per tuned cell and repeat of its search (repeat 0 keeps the plain name)."""
    return f"{suite.name}-v{suite.version}-{cell.cell_id}" + (f"-r{repeat}" if repeat else "")


def ensure_studies(storage, suite: Suite, design: Design) -> None:
    """Create the study of every tuned cell (idempotent; the launcher does it before workers start)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for cell, repeat in ((c, r) for c in design.cells if c.tuning for r in range(repeats_of(c.tuning))):
        study = optuna.create_study(
            storage=storage,
            study_name=study_name(suite, cell, repeat),
            direction="maximize",
            load_if_exists=True,
            sampler=optuna.samplers.RandomSampler(0),
        )
        if "ffbench.cell_id" not in study.user_attrs:
            try:  # descriptive only; two launchers writing them at once may collide on an RDB
                study.set_user_attr("ffbench.suite", f"{suite.name} v{suite.version}")
                study.set_user_attr("ffbench.factors", canonical_json(cell.factors))
                study.set_user_attr("ffbench.tuning", canonical_json(cell.tuning))
                study.set_user_attr("ffbench.cell_id", cell.cell_id)
            except Exception:
                pass


def load_study(storage, suite: Suite, cell: Cell, slot: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = study_name(suite, cell, repeat_of_slot(cell.tuning, slot))
    return optuna.load_study(
        study_name=name, storage=storage, sampler=make_sampler(cell.tuning, slot), pruner=make_pruner(cell.tuning)
    )


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
        if METRIC not in row:  # an epoch without evaluation (eval_every > 1)
            return
        step = self.seed_index * self.epochs + int(row["epoch"]) - 1
        value = float(row[METRIC])
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise Pruned(step, value)


def tell_outcome(study, number: int, row: RunRow) -> None:
    """Tell Optuna a trial's outcome as the store recorded it (done with a value, pruned, or failed)."""
    from optuna.trial import TrialState

    if row.status == DONE and is_score((row.metrics or {}).get(METRIC)):
        study.tell(number, row.metrics[METRIC], skip_if_finished=True)
    elif row.status == PRUNED:
        study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
    else:
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
