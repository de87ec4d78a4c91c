"""From a tuned cell's finished trial slots to its evaluation runs.

Once every slot of a cell is finished (done, pruned or failed), the completed trial with the highest
score (ties: the earlier trial) gives the configuration that runs on the evaluation seeds. Whichever worker
sees that first inserts the evaluation rows; the insert is idempotent and the choice a pure function of
the stored slots, so every worker would insert the same rows. If no trial completed, the evaluation runs
are recorded as failed outcomes with the reason instead of silently missing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ffbench.execution.studies import is_score, load_study, tell_outcome
from ffbench.plan.design import EVALUATION, eval_run_id, repeat_run_id
from ffbench.plan.tuning import METRIC, REPEAT, apply_params, repeat_of_slot, repeats_of
from ffbench.record.store import DONE, FAILED, FINISHED, PRUNED, RunRow

if TYPE_CHECKING:  # pragma: no cover
    from ffbench.plan.design import Cell
    from ffbench.plan.suite import Suite
    from ffbench.record.store import Store


def choose_best(tuning_rows: list[RunRow]) -> RunRow | None:
    """The completed trial with the highest score; ties go to the earlier trial. None if none completed."""
    done = [r for r in tuning_rows if r.status == DONE and r.metrics and is_score(r.metrics.get(METRIC))]
    if not done:
        return None
    return max(done, key=lambda r: (r.metrics[METRIC], -r.trial))


def evaluation_rows(suite: Suite, cell: Cell, tuning_rows: list[RunRow]) -> list[dict[str, Any]]:
    """The cell's evaluation runs, configured with repeat 0's best trial (or failed, with the reason), and
    for each later repeat of the search the runs of its own best trial (role REPEAT)."""
    rows = []
    for repeat in range(repeats_of(cell.tuning)):
        slots = [r for r in tuning_rows if repeat_of_slot(cell.tuning, r.trial) == repeat]
        best = choose_best(slots)
        for seed in suite.seeds:
            row = {
                "suite": suite.name,
                "suite_version": suite.version,
                "cell_id": cell.cell_id,
                "seed": seed,
                "factors": cell.factors,
                "code": cell.code,
                **(
                    {"run_id": eval_run_id(cell, seed), "role": EVALUATION, "trial": None}
                    if repeat == 0
                    else {"run_id": repeat_run_id(cell, repeat, seed), "role": REPEAT, "trial": repeat}
                ),
            }
            if best is not None:
                row["config"] = replace(apply_params(cell.config, best.params or {}), seed=seed).to_dict()
                row["params"] = {**(best.params or {}), "_tuning_trial": best.trial}
            else:
                counts = {s: sum(r.status == s for r in slots) for s in (FAILED, PRUNED)}
                row["config"] = replace(cell.config, seed=seed).to_dict()
                row["status"] = FAILED
                row["error"] = (
                    f"tuning produced no completed trial ({counts[FAILED]} failed, {counts[PRUNED]} "
                    f"pruned of {len(slots)}): evaluation not run"
                )
            rows.append(row)
    return rows


def register_evaluation(store: Store, suite: Suite, cell: Cell, storage=None) -> int:
    """If every slot of ``cell`` is finished, insert its evaluation runs (idempotent); return how many."""
    from optuna.trial import TrialState

    rows = store.rows(suite.name, cell_id=cell.cell_id, role="tuning")
    if len(rows) < cell.tuning["trials"] * repeats_of(cell.tuning) or any(r.status not in FINISHED for r in rows):
        return 0
    new = store.add_runs(evaluation_rows(suite, cell, rows))
    if new and storage is not None:  # tell Optuna the outcome of any trial whose worker died after the store
        try:
            for repeat in range(repeats_of(cell.tuning)):
                study = load_study(storage, suite, cell, repeat * cell.tuning["trials"])
                running = {t.number for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING}
                for r in rows:
                    if repeat_of_slot(cell.tuning, r.trial) == repeat and r.optuna_trial in running:
                        tell_outcome(study, r.optuna_trial, r)
        except Exception:
            pass
    return new
