"""The MLflow mirror of the results store: experiment = suite, parent run = cell, child run = seed.

The store stays the source of truth; this module only copies finished runs into MLflow, with every
factor and setting as a tag (so the UI can group and filter), per-epoch metrics as steps (logged in
batches), and each cell's aggregate over its seeds on the parent run. The tracking URI is always
explicit and absolute, and the database and experiment are created once, before any worker starts.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable

from ffbench.config import canonical_json

MAX_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call


def default_tracking_uri(out_dir: Path) -> str:
    return f"sqlite:///{(Path(out_dir) / 'mlflow.db').resolve()}"


def _flat(prefix: str, d: dict[str, Any]) -> dict[str, str]:
    return {f"{prefix}{k}": (canonical_json(v) if isinstance(v, (dict, list)) else str(v)) for k, v in d.items()}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


class Tracker:
    def __init__(self, tracking_uri: str, artifact_root: Path):
        os.environ.pop("MLFLOW_RUN_ID", None)  # a stray run id would override our parent runs
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri
        self.artifact_root = Path(artifact_root).resolve()
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self._parents: dict[str, str] = {}
        self.experiment_id: str | None = None

    def init_experiment(self, suite_name: str, suite_version: int, description: str = "") -> str:
        exp = self.client.get_experiment_by_name(suite_name)
        if exp is None:
            location = (self.artifact_root / suite_name).as_uri()
            try:
                eid = self.client.create_experiment(suite_name, artifact_location=location,
                                                    tags={"ffbench.suite": suite_name,
                                                          "mlflow.note.content": description})
            except Exception:  # another process created it first
                eid = self.client.get_experiment_by_name(suite_name).experiment_id
        else:
            eid = exp.experiment_id
        self.experiment_id = eid
        return eid

    def parent_run(self, cell_id: str, factors: dict[str, Any], config: dict[str, Any], suite_version: int) -> str:
        """The cell's parent run, created if missing (the launcher creates them all before workers start)."""
        if cell_id in self._parents:
            return self._parents[cell_id]
        found = self.client.search_runs([self.experiment_id], f"tags.`ffbench.cell_id` = '{cell_id}' "
                                        f"and tags.`ffbench.kind` = 'cell'", max_results=1)
        if found:
            rid = found[0].info.run_id
        else:
            name = "/".join(str(v) if k in ("method", "dataset", "backbone") else f"{k}={v}"
                            for k, v in factors.items() if v is not None)
            tags = {"ffbench.cell_id": cell_id, "ffbench.kind": "cell", "ffbench.suite_version": str(suite_version),
                    **_flat("", factors), **_flat("cfg.", _config_tags(config))}
            rid = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
            self.client.set_terminated(rid, "RUNNING")
        self._parents[cell_id] = rid
        return rid

    def log_run(self, row: dict[str, Any]) -> str:
        """Mirror one finished run (a store row) as a child of its cell's parent run."""
        from mlflow.entities import Metric, Param, RunTag

        parent = self.parent_run(row["cell_id"], row["factors"], row["config"], row["suite_version"])
        role = row["role"]
        name = f"seed {row['seed']}" if role == "evaluation" else f"trial {row['trial']} seed {row['seed']}"
        tags = {"mlflow.parentRunId": parent, "ffbench.run_id": row["run_id"], "ffbench.cell_id": row["cell_id"],
                "ffbench.kind": role, "ffbench.role": role, "ffbench.status": row["status"],
                "seed": str(row["seed"]), **_flat("", row["factors"]), **_flat("cfg.", _config_tags(row["config"]))}
        if row.get("trial") is not None:
            tags["ffbench.trial"] = str(row["trial"])
        if row.get("optuna_trial") is not None:
            tags["ffbench.optuna_trial"] = str(row["optuna_trial"])
        for k, v in (row.get("params") or {}).items():
            tags[f"{'tuning' if role == 'tuning' else 'tuned'}.{k}"] = str(v)
        if row.get("error"):
            tags["ffbench.error"] = row["error"][:4000]
        manifest = row.get("manifest") or {}
        tags.update({f"manifest.{k}": str(v)[:4000] for k, v in manifest.items() if not isinstance(v, dict)})
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags,
                                     start_time=int((row.get("started") or time.time()) * 1000))
        rid = run.info.run_id
        now = int(time.time() * 1000)
        metrics = []
        for epoch_row in row.get("curves") or []:
            step = int(epoch_row["epoch"])
            metrics += [Metric(k, float(v), now, step) for k, v in epoch_row.items() if k != "epoch" and _finite(v)]
        finals = {**(row.get("metrics") or {}), **{k: v for k, v in (row.get("compute") or {}).items()}}
        metrics += [Metric(f"final.{k}", float(v), now, 0) for k, v in finals.items() if _finite(v)]
        params = [Param(k[:250], str(v)[:6000]) for k, v in _config_tags(row["config"]).items()]
        self._batch(rid, metrics, params, [])
        state = {"done": "FINISHED", "pruned": "KILLED"}.get(row["status"], "FAILED")
        self.client.set_terminated(rid, state,
                                   end_time=int((row.get("finished") or time.time()) * 1000))
        return rid

    def log_cell_summary(self, cell_id: str, factors: dict[str, Any], config: dict[str, Any],
                         suite_version: int, summary: dict[str, Any], done: bool,
                         budget_curve: list[tuple[int, float]] | None = None) -> None:
        """Aggregate figures across a cell's evaluation seeds onto its parent run (rank/compare in the UI);
        for a tuned cell also the tuning outcome and its budget curve (best validation accuracy after k
        trials, as the metric ``tuning.best_val_acc`` at step k)."""
        from mlflow.entities import Metric, RunTag

        rid = self.parent_run(cell_id, factors, config, suite_version)
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in summary.items() if _finite(v)]
        metrics += [Metric("tuning.best_val_acc", float(v), now, int(k)) for k, v in (budget_curve or [])]
        tags = [RunTag(k, str(v)) for k, v in summary.items() if not _finite(v) and v is not None]
        self._batch(rid, metrics, [], tags)
        if done:
            self.client.set_terminated(rid, "FINISHED")

    def log_artifacts(self, paths: Iterable[Path], artifact_path: str | None = None) -> None:
        """Attach files (reports, tables) to the experiment through a dedicated 'suite' run."""
        found = self.client.search_runs([self.experiment_id], "tags.`ffbench.kind` = 'suite'", max_results=1)
        rid = found[0].info.run_id if found else self.client.create_run(
            self.experiment_id, run_name="suite report", tags={"ffbench.kind": "suite"}).info.run_id
        for p in paths:
            self.client.log_artifact(rid, str(p), artifact_path)
        self.client.set_terminated(rid, "FINISHED")

    def _batch(self, rid: str, metrics: list, params: list, tags: list) -> None:
        for i in range(0, max(len(metrics), 1), MAX_BATCH):
            self.client.log_batch(rid, metrics=metrics[i:i + MAX_BATCH], params=params if i == 0 else [],
                                  tags=tags if i == 0 else [])


def _config_tags(config: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in config.items() if not isinstance(v, dict) and k != "seed"}
    for group in ("method_options", "backbone_options", "dataset_options"):
        for k, v in (config.get(group) or {}).items():
            out[f"{group.split('_')[0]}.{k}"] = v
    return out
