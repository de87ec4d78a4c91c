"""Executing one claimed row and recording it: an evaluation run, or a tuning trial (ask the cell's
Optuna study for parameters, train on every tuning seed reporting to the pruner, record, tell).

The row must have been claimed (``Store.claim``) by ``env.worker``. A heartbeat keeps the lease while it
trains; a worker that lost its lease abandons the run at the next epoch and its result is dropped. A
failure inside a run (NaN, divergence, an exception in a method) is a recorded outcome with its message,
never a crash of the worker; Ctrl-C (or SIGTERM) gives the row back. Every recorded row is mirrored into
MLflow when a tracker is given (the store stays the source of truth).

What fails is told apart by where it comes from: an exception of the method's own code (its
``__init__``, ``train_step``, ``evaluate``) or of its configuration is the run's outcome; unreadable data
(``DataError``), the operating system (``OSError``: a full disk, a vanished file) and the results store
are the infrastructure's: the row is given back and ``InfrastructureError`` stops the worker, so nothing
is recorded as a method's failure that the method did not cause.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ffbench.core.config import RunConfig
from ffbench.execution import studies
from ffbench.execution.lease import LEASE_S, POLL_S, Heartbeat, LeaseLost, heartbeat_interval
from ffbench.execution.selection import register_evaluation
from ffbench.plan.design import TUNING, Cell, Design
from ffbench.plan.suite import Suite
from ffbench.plan.tuning import METRIC, apply_params, repeat_of_slot, tuning_seeds
from ffbench.record import tracking
from ffbench.record.manifest import manifest
from ffbench.record.store import DONE, FAILED, PRUNED, RunRow, Store, is_disk_full, is_store_error
from ffbench.training import checkpoint

logger = logging.getLogger(__name__)


@dataclass
class Env:
    """What a worker works with: the suite and its design, the store, its name and device, the tracker,
    the Optuna storage, and its lease."""

    suite: Suite
    design: Design
    store: Store
    worker: str
    device: str = "auto"
    tracker: Any = None
    optuna_url: str | None = None
    lease_s: float = LEASE_S
    poll_s: float = POLL_S
    # told after every epoch: (the claimed row, epochs done in it, its epochs in all), e.g. a progress bar
    progress: Callable[[dict[str, Any], int, int], None] | None = None
    weights_dir: str | None = None  # where pretrained source backbones are kept (transfer suites)
    checkpoint_dir: str | None = None  # where unfinished evaluation runs keep their state (ffbench.training.checkpoint)
    told_unbatched: set[str] = field(default_factory=set)  # why seeds could not train together (each said once)
    cells: dict[str, Cell] = field(default_factory=dict)
    _storage: Any = None

    def __post_init__(self):
        self.cells = {c.cell_id: c for c in self.design.cells}

    def storage(self):
        if self._storage is None:
            if not self.optuna_url:
                raise RuntimeError("this suite tunes, but no Optuna storage was given")
            self._storage = studies.open_storage(self.optuna_url)
        return self._storage


def execute_row(env: Env, row: RunRow) -> str | None:
    """Run a row this worker has claimed; return its status, or None if the lease was lost."""
    if row.role == TUNING:
        return run_trial(env, row)
    return run_evaluation(env, row)


class InfrastructureError(RuntimeError):
    """The data, the disk or the results store failed, not the method: the suite stops, the run stays
    pending, and running the same command again resumes it."""


def infrastructure(exc: BaseException) -> bool:
    from ffbench.data.datasets import DataError

    return isinstance(exc, (DataError, OSError, InfrastructureError)) or is_store_error(exc) or is_disk_full(exc)


def _stop(env: Env, run_id: str, exc: BaseException) -> InfrastructureError:
    """Give the row back (if the store still answers) and say what failed."""
    try:
        env.store.release(run_id, env.worker)
    except Exception:  # the store itself is what failed: the claim of this dead process comes back locally
        pass
    what = (
        "the disk is full"
        if is_disk_full(exc)
        else ("the results store failed" if is_store_error(exc) else "the data or the file system failed")
    )
    first = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
    return InfrastructureError(
        f"{what} while running {run_id} ({type(exc).__name__}: {first}); the run was not "
        f"recorded as a failure and stays pending: fix the cause and run the same command "
        f"again to resume"
    )


def _mirror(env: Env, run_id: str) -> None:
    if env.tracker is None:
        return
    try:  # never raises for MLflow trouble; what it cannot copy stays in the store for `ffbench sync`
        tracking.mirror(env.store, env.tracker, run_id)
    except Exception as exc:
        logger.warning(f"warning: MLflow mirror of {run_id} failed: {type(exc).__name__}: {exc}")


def _finish(env: Env, run_id: str, status: str, **record: Any) -> bool:
    """Record the outcome; a store that cannot write it stops the worker (the run stays pending)."""
    try:
        return env.store.finish(run_id, env.worker, status, **record)
    except Exception as exc:
        if infrastructure(exc):
            raise _stop(env, run_id, exc) from exc
        raise


def live_run(env: Env, row: RunRow):
    """The claimed row's MLflow run, created RUNNING now and fed epoch by epoch (None untracked)."""
    return env.tracker.live(row) if env.tracker is not None else None


def epoch_callback(
    env: Env,
    row: RunRow,
    live,
    then: Callable[[dict[str, Any]], None],
    epochs: int,
    offset: int = 0,
    shown: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Callable[[dict[str, Any]], None]:
    """The ``on_epoch`` of a claimed row's training: each finished epoch is streamed to ``live`` (its
    metrics as the store will hold them: ``shown``; the MLflow write happens off this thread), told to
    ``env.progress`` (``offset`` epochs of earlier tuning seeds done, ``epochs`` in all), then passed to
    ``then`` (the lease check, or the pruner's reporter, which may stop the run)."""

    def on_epoch(epoch_row: dict[str, Any]) -> None:
        from ffbench.execution.signals import check_interrupted

        check_interrupted()  # a signal whose exception a finalizer swallowed stops the run here
        if live is not None:
            live.epoch(shown(epoch_row) if shown else epoch_row)
        if env.progress is not None:
            env.progress(row, offset + int(epoch_row["epoch"]), epochs)
        then(epoch_row)

    return on_epoch


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}"


def run_data_identity(config: RunConfig) -> dict[str, Any]:
    """The manifest's record of the data a run trains on (dataset, resolved root, digest)."""
    from ffbench.data.datasets import identity

    return identity(config.dataset, config.dataset_options.get("root"))


def run_info(env: Env, row: RunRow, config: RunConfig, dev) -> dict[str, Any]:
    """An evaluation run's manifest before training: the machine, its streams, its code, tuned values."""
    from ffbench.core.seeds import Streams

    info = manifest(str(dev))
    info["data"] = run_data_identity(config)
    info["streams"] = Streams(config.seed).as_dict()
    info["code"] = env.cells[row.cell_id].code if row.cell_id in env.cells else row.code
    if row.params:
        info["tuned_params"] = row.params
    return info


def run_evaluation(env: Env, row: RunRow) -> str | None:
    """One evaluation run: train on its seed, record the result (if this worker still holds the row), mirror."""
    from ffbench.training.train import fit, resolve_device

    store, worker, run_id = env.store, env.worker, row.run_id
    config = RunConfig.from_dict(row.config)
    dev = resolve_device(env.device)
    info = run_info(env, row, config, dev)
    live = live_run(env, row)
    saved = str(checkpoint.path_for(env.checkpoint_dir, run_id)) if env.checkpoint_dir else None
    try:
        with Heartbeat(store, run_id, worker, heartbeat_interval(env.lease_s)) as hb:
            result = fit(
                config,
                dev,
                on_epoch=epoch_callback(env, row, live, hb.check, config.epochs),
                weights_dir=env.weights_dir,
                checkpoint=saved,
            )
        status, error = result.status, result.error
        info.update(result.manifest)
        payload = dict(metrics=result.metrics, curves=result.curves, compute=result.compute)
    except LeaseLost:
        return None
    except KeyboardInterrupt:
        store.release(run_id, worker)
        if live is not None:
            live.stop()
        raise
    except Exception as exc:  # a method that raises is an outcome to report, not a crash of the suite
        if infrastructure(exc):
            raise _stop(env, run_id, exc) from exc
        status, error = FAILED, _failure(exc)
        payload = dict(metrics={}, curves=[], compute={})
    if not _finish(env, run_id, status, manifest=info, error=error, **payload):
        return None  # our lease expired and someone else took the run over; their result counts
    if saved:
        Path(saved).unlink(missing_ok=True)  # recorded: nothing left to resume
    _mirror(env, run_id)
    return status


BATCH_MAX_IMAGES = 500_000  # "auto" batches runs of at most this many training images (epochs x train size)


def batch_problem(env: Env, configs: list[RunConfig]) -> str | None:
    """Why the suite's ``batch_seeds`` setting, or the runs' kind, keeps these runs apart (decided before
    their seeds are claimed together; the stacking may still refuse them, ``batched.Unbatchable``)."""
    mode = env.suite.batch_seeds
    if mode is False:
        return "the suite sets batch_seeds = false"
    from ffbench.training.batched import config_problem

    why = config_problem(configs[0])
    if why:
        return why
    if mode == "auto":
        from ffbench.core.registry import DATASETS

        c = configs[0]
        images = c.epochs * (c.train_subset or DATASETS.get(c.dataset).card.defaults.get("n_train") or 0)
        if images > BATCH_MAX_IMAGES:
            return (
                f"long runs ({images:,} training images each) train alone and keep epoch checkpoints; "
                f"batch_seeds = true batches them"
            )
    return None


def run_batch(env: Env, rows: list[RunRow]) -> list[str | None]:
    """Evaluation runs of one cell that differ only in their seed, claimed together: trained as one stacked
    model (``ffbench.training.batched``), each recorded and mirrored as its own run. Runs that cannot be batched are
    given back but the first, which runs alone (said once per cell)."""
    from ffbench.training.batched import Unbatchable, why_not
    from ffbench.training.train import resolve_device

    configs = [RunConfig.from_dict(r.config) for r in rows]
    why = why_not(configs) or batch_problem(env, configs)
    if why is None:
        try:
            return _run_batch(env, rows, configs, resolve_device(env.device))
        except Unbatchable as exc:
            why = str(exc)
    for r in rows[1:]:
        env.store.release(r.run_id, env.worker)
    tell_unbatched(env, rows[0], why)
    return [run_evaluation(env, rows[0])]


def tell_unbatched(env: Env, row: RunRow, why: str) -> None:
    """Say once why a cell's seeds train one at a time (once per reason: a transfer suite's many cells that
    adapt share one line)."""
    if why not in env.told_unbatched:
        env.told_unbatched.add(why)
        logger.info(f"note: {_label(env, row)} (and any cell like it): seeds train one at a time ({why})")


def _label(env: Env, row: RunRow) -> str:
    cell = env.cells.get(row.cell_id)
    return cell.label if cell is not None else row.cell_id


def _run_batch(env: Env, rows: list[RunRow], configs: list[RunConfig], dev) -> list[str | None]:
    from contextlib import ExitStack

    from ffbench.training.batched import Unbatchable, fit_seeds

    store, worker = env.store, env.worker
    infos = [run_info(env, r, c, dev) for r, c in zip(rows, configs)]
    lives = [live_run(env, r) for r in rows]
    try:
        with ExitStack() as held:
            beats = [
                held.enter_context(Heartbeat(store, r.run_id, worker, heartbeat_interval(env.lease_s))) for r in rows
            ]
            told = [
                epoch_callback(env, r, live, hb.check, c.epochs) for r, live, hb, c in zip(rows, lives, beats, configs)
            ]
            results = fit_seeds(configs, dev, on_epoch=lambda i, row: told[i](row))
        outcomes = [
            (res.status, res.error, dict(metrics=res.metrics, curves=res.curves, compute=res.compute), res.manifest)
            for res in results
        ]
    except LeaseLost:  # another worker took one of them over: give the rest back, they run again
        for r in rows:
            store.release(r.run_id, worker)
        return [None] * len(rows)
    except KeyboardInterrupt:
        for r, live in zip(rows, lives):
            store.release(r.run_id, worker)
            if live is not None:
                live.stop()
        raise
    except Exception as exc:
        if infrastructure(exc):
            for r in rows[1:]:
                store.release(r.run_id, worker)
            raise _stop(env, rows[0].run_id, exc) from exc
        for live in lives:
            if live is not None:
                live.stop()
        if isinstance(exc, Unbatchable):
            raise
        # a method's exception: which seeds it belongs to is only known alone, so they run alone
        raise Unbatchable(f"training them together raised {type(exc).__name__}: {str(exc)[:200]}") from exc
    statuses: list[str | None] = []
    for r, info, (status, error, payload, extra) in zip(rows, infos, outcomes):
        info.update(extra)
        if not _finish(env, r.run_id, status, manifest=info, error=error, **payload):
            statuses.append(None)
            continue
        _mirror(env, r.run_id)
        statuses.append(status)
    return statuses


def run_trial(env: Env, row: RunRow) -> str | None:
    """One tuning slot: ask the cell's study for a trial, train it on every tuning seed, record, tell."""
    from optuna.trial import TrialState

    from ffbench.training.train import resolve_device

    store, worker, run_id = env.store, env.worker, row.run_id
    cell = env.cells[row.cell_id]
    spec = cell.tuning
    storage = env.storage()
    study = studies.load_study(storage, env.suite, cell, row.trial)
    studies.fail_orphan(study, row.optuna_trial)  # the trial of a worker that died holding this slot
    trial = study.ask(studies.distributions(spec["space"]))
    trial.set_user_attr("ffbench.slot", row.trial)
    trial.set_user_attr("ffbench.run_id", run_id)
    trial.set_user_attr("ffbench.worker", worker)
    params = dict(trial.params)
    repeat = repeat_of_slot(spec, row.trial)
    seeds = tuning_seeds(spec, repeat)
    base = replace(apply_params(RunConfig.from_dict(row.config), params), seed=seeds[0])
    if not store.set_trial(run_id, worker, trial.number, params, base.to_dict()):
        study.tell(trial, state=TrialState.FAIL)
        return None
    dev = resolve_device(env.device)
    info = manifest(str(dev))
    info["data"] = run_data_identity(base)
    info["code"] = cell.code
    info.update(
        {
            "optuna_trial": trial.number,
            "study": studies.study_name(env.suite, cell, repeat),
            "tuning_seeds": seeds,
            "tuning_repeat": repeat,
        }
    )
    out: dict[str, Any] = {
        "status": DONE,
        "error": None,
        "metrics": {"n_tuning_seeds": len(seeds)},
        "curves": [],
        "compute": {},
    }
    live = live_run(env, row)  # one MLflow run for every tuning seed
    try:
        with Heartbeat(store, run_id, worker, heartbeat_interval(env.lease_s)) as hb:

            def on_epoch_for(i: int, seed: int):
                reporter = studies.Reporter(trial, base.epochs, i, lost=hb.check)
                return reporter, epoch_callback(
                    env,
                    row,
                    live,
                    reporter,
                    base.epochs * len(seeds),
                    offset=base.epochs * i,
                    shown=lambda r, seed=seed: _no_test(dict(r, seed=seed)),
                )

            batch = batch_problem(env, [replace(base, seed=s) for s in seeds]) is None
            train_trial(out, base, seeds, dev, on_epoch_for, env.weights_dir, batch=batch)
    except LeaseLost:
        return None  # the new holder marks this Optuna trial failed
    except KeyboardInterrupt:
        store.release(run_id, worker)
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        if live is not None:
            live.stop()
        raise
    except Exception as exc:
        if infrastructure(exc):
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise _stop(env, run_id, exc) from exc
        out.update(status=FAILED, error=_failure(exc))
    status, metrics = out["status"], out["metrics"]
    info.update(out.pop("manifest", {}))
    if not _finish(
        env,
        run_id,
        status,
        metrics=metrics,
        curves=out["curves"],
        compute=out["compute"],
        manifest=info,
        error=out["error"],
    ):
        return None
    try:
        if status == DONE:
            study.tell(trial, metrics[METRIC], skip_if_finished=True)
        else:
            study.tell(trial, state=TrialState.PRUNED if status == PRUNED else TrialState.FAIL, skip_if_finished=True)
    except Exception as exc:  # the store has the outcome; Optuna is reconciled when evaluation is registered
        logger.warning(f"warning: telling Optuna about {run_id} failed: {exc}")
    _mirror(env, run_id)
    register_evaluation(store, env.suite, cell, storage)
    return status


def train_trial(
    out: dict[str, Any],
    base: RunConfig,
    seeds: list[int],
    dev,
    on_epoch_for: Callable[[int, int], tuple[Any, Callable]],
    weights_dir: str | None = None,
    batch: bool = False,
) -> None:
    """Train one tuning trial's configuration on every tuning seed. ``on_epoch_for(i, seed)`` gives the
    pruner's reporter for seed i and the per-epoch callback. Fills ``out`` (status, error, metrics, curves,
    compute) as it goes, so a caller that catches a method's exception keeps what was trained; a pruned
    trial ends as PRUNED with the best validation value seen. With ``batch`` the seeds train as one stacked
    model (``ffbench.training.batched``) and their epochs are then told to the pruner seed after seed, in the order
    and with the steps of training them one after another, so the pruner decides as it would have."""
    from ffbench.training.batched import Unbatchable, fit_seeds
    from ffbench.training.train import fit

    out.update(status=DONE, error=None, metrics={"n_tuning_seeds": len(seeds)}, curves=[], compute={})
    metrics, curves, values, reporter = out["metrics"], out["curves"], [], None
    trained = None
    if batch and len(seeds) > 1:
        try:
            trained = fit_seeds([replace(base, seed=s) for s in seeds], dev)
            out.setdefault("manifest", {})["batched"] = {"seeds": list(seeds)}
        except Unbatchable:
            trained = None

    def run(i: int, seed: int, on_epoch):
        if trained is None:
            return fit(replace(base, seed=seed), dev, on_epoch=on_epoch, weights_dir=weights_dir)
        for row in trained[i].curves:  # replayed: the pruner sees what training them in turn shows it
            on_epoch(row)
        return trained[i]

    try:
        for i, seed in enumerate(seeds):
            reporter, on_epoch = on_epoch_for(i, seed)
            result = run(i, seed, on_epoch)
            curves += [_no_test(dict(r, seed=seed)) for r in result.curves]
            if result.manifest.get("source"):
                out.setdefault("manifest", {}).setdefault("sources", []).append(result.manifest["source"])
            out["compute"] = result.compute
            if result.status != DONE:
                out.update(status=result.status, error=f"tuning seed {seed}: {result.error}")
                return
            values.append(result.metrics[METRIC])
            metrics[f"val_acc.seed{seed}"] = result.metrics[METRIC]
            metrics[f"best_epoch.seed{seed}"] = result.metrics.get("best_epoch")
        metrics[METRIC] = sum(values) / len(values)
    except studies.Pruned as p:
        out.update(status=PRUNED, error=str(p))
        curves += [_no_test(dict(r, seed=seeds[len(values)])) for r in (reporter.rows if reporter else [])]
        seen = values + [r[METRIC] for r in (reporter.rows if reporter else []) if METRIC in r]
        metrics.update({METRIC: max(seen) if seen else math.nan, "pruned_at_step": p.step})


def _no_test(row: dict[str, Any]) -> dict[str, Any]:
    """Tuning never looks at the test set: its curves keep training and validation figures only."""
    return {k: v for k, v in row.items() if not k.startswith("test_")}
