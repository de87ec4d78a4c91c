"""Run a suite: enumerate its runs, claim the missing ones from the store, fit, record, mirror.

The store decides what is left to do, so running a suite again after a crash or a kill executes only
what is missing; a run whose worker died is taken over once its heartbeat is older than the lease.
A run that diverges or raises inside a method is recorded as a failed outcome, not a crash.
"""
from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffbench import __version__
from ffbench.design import Design, Run, expand
from ffbench.seeds import Streams
from ffbench.store import DONE, FAILED, FINISHED, Store, worker_name
from ffbench.suite import Suite, load

LEASE_S = 600.0  # a run whose heartbeat is older than this is considered abandoned
HEARTBEAT_S = 30.0
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Paths:
    out: Path

    @property
    def store(self) -> Path:
        return self.out / "results.db"

    @property
    def mlflow_db(self) -> Path:
        return self.out / "mlflow.db"

    @property
    def artifacts(self) -> Path:
        return self.out / "mlartifacts"


def default_out(suite: Suite) -> Path:
    return Path("ffbench-out") / suite.name


def manifest(device: str) -> dict[str, Any]:
    import numpy
    import torch

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    diff = git("diff", "HEAD")
    m = {"ffbench": __version__, "python": platform.python_version(), "torch": torch.__version__,
         "numpy": numpy.__version__, "platform": platform.platform(), "host": platform.node(),
         "device": device, "threads": torch.get_num_threads(),
         "git_commit": git("rev-parse", "HEAD") or "unknown",
         "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
         "git_diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else ""}
    if device.startswith("cuda"):
        m["gpu"] = torch.cuda.get_device_name(0)
        m["cuda"] = torch.version.cuda
        m["cudnn"] = torch.backends.cudnn.version()
    return m


class _Heartbeat:
    """Refresh a claimed run's lease in the background while it trains."""

    def __init__(self, store: Store, run_id: str, worker: str):
        self.store, self.run_id, self.worker = store, run_id, worker
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.stop.wait(HEARTBEAT_S):
            self.store.heartbeat(self.run_id, self.worker)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)


def execute(run: Run, store: Store, worker: str, device: str, tracker=None) -> str | None:
    """Claim and run one run; return its status, or None if another worker holds it."""
    from ffbench.train import fit, resolve_device

    if not store.claim(run.run_id, worker, LEASE_S):
        return None
    dev = resolve_device(device)
    info = manifest(str(dev))
    info["streams"] = Streams(run.seed).as_dict()
    try:
        with _Heartbeat(store, run.run_id, worker):
            result = fit(run.config, dev)
        status, error = result.status, result.error
        payload = dict(metrics=result.metrics, curves=result.curves, compute=result.compute)
    except KeyboardInterrupt:
        store.release(run.run_id, worker)
        raise
    except Exception as exc:  # a method that raises is an outcome to report, not a crash of the suite
        status, error = FAILED, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}"
        payload = dict(metrics={}, curves=[], compute={})
    if not store.finish(run.run_id, worker, status, manifest=info, error=error, **payload):
        return None  # our lease expired and someone else took the run over; their result counts
    if tracker is not None:
        row = store.rows(run_id=run.run_id)[0]
        store.set_mlflow_run(run.run_id, tracker.log_run(row))
    return status


def prepare(suite_ref: str, out: str | Path | None = None) -> tuple[Suite, Design, Paths]:
    suite = load(suite_ref)
    design = expand(suite)
    paths = Paths(Path(out) if out else default_out(suite))
    return suite, design, paths


def open_tracker(suite: Suite, paths: Paths, tracking_uri: str | None):
    from ffbench.tracking import Tracker, default_tracking_uri

    tracker = Tracker(tracking_uri or default_tracking_uri(paths.out), paths.artifacts)
    tracker.init_experiment(suite.name, suite.version, suite.description)
    return tracker


def run_suite(suite_ref: str, out: str | Path | None = None, device: str = "auto",
              tracking_uri: str | None = None, progress: bool = True, track: bool = True) -> dict[str, Any]:
    """Execute every run of the suite that is not finished yet; return a summary."""
    suite, design, paths = prepare(suite_ref, out)
    paths.out.mkdir(parents=True, exist_ok=True)
    store = Store(paths.store)
    store.add_runs(r.store_row(suite) for r in design.runs)
    tracker = open_tracker(suite, paths, tracking_uri) if track else None
    if tracker is not None:  # all parents exist before any run starts (no races between workers)
        for cell in design.cells:
            tracker.parent_run(cell.cell_id, cell.factors, cell.config.to_dict(), suite.version)

    finished = {r["run_id"] for r in store.rows(suite.name, status=list(FINISHED))}
    todo = [r for r in design.runs if r.run_id not in finished]
    worker = worker_name()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(design.runs), initial=len(design.runs) - len(todo), desc=suite.name, unit="run",
                   file=sys.stderr)
    executed = 0
    for run in todo:
        if bar is not None:
            bar.set_postfix_str(f"{run.cell.factors['method']} {run.cell.factors['backbone']} seed {run.seed}")
        if execute(run, store, worker, device, tracker) is not None:
            executed += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if tracker is not None:
        summarize_cells(suite, design, store, tracker)
    return {"suite": suite, "design": design, "paths": paths, "executed": executed, "store": store}


def summarize_cells(suite: Suite, design: Design, store: Store, tracker) -> None:
    """Aggregate each cell's evaluation seeds onto its MLflow parent run."""
    import numpy as np

    rows = store.rows(suite.name, role="evaluation")
    by_cell: dict[str, list[dict]] = {}
    for r in rows:
        by_cell.setdefault(r["cell_id"], []).append(r)
    for cell in design.cells:
        runs = by_cell.get(cell.cell_id, [])
        accs = np.array([r["metrics"]["test_acc"] for r in runs
                         if r["status"] == DONE and r["metrics"] and "test_acc" in r["metrics"]])
        summary = {"n": len(accs), "failures": sum(r["status"] == FAILED for r in runs)}
        if len(accs):
            summary.update({"test_acc_mean": accs.mean(), "test_acc_sd": accs.std(ddof=1) if len(accs) > 1 else 0.0})
        done = all(r["status"] in FINISHED for r in runs) and len(runs) == len(suite.seeds)
        tracker.log_cell_summary(cell.cell_id, cell.factors, cell.config.to_dict(), suite.version, summary, done)


def results_table(store: Store, suite: Suite, design: Design):
    """Mean ± SD of test accuracy per method, backbone and dataset, over the finished evaluation runs."""
    import pandas as pd

    frame = store.frame(suite.name)
    cells = {c.cell_id for c in design.cells}
    frame = frame[frame["cell_id"].isin(cells)]
    keys = ["dataset", "backbone", "method"]
    rows = []
    for k, g in frame.groupby(keys, sort=False):
        ok = g[g["status"] == DONE]
        acc = ok["test_acc"].astype(float) * 100 if "test_acc" in ok else pd.Series(dtype=float)
        rows.append({**dict(zip(keys, k)), "n": len(ok), "failed": int((g["status"] == FAILED).sum()),
                     "test_acc_mean": acc.mean(), "test_acc_sd": acc.std(ddof=1) if len(acc) > 1 else float("nan"),
                     "epoch_time_s": ok["epoch_time_s"].mean() if "epoch_time_s" in ok else float("nan"),
                     "saved_MB_per_step": ok["saved_bytes_per_step"].mean() / 2**20
                     if "saved_bytes_per_step" in ok else float("nan")})
    table = pd.DataFrame(rows)
    if len(table):  # the suite's own order, not the store's
        order = {"dataset": suite.datasets, "backbone": suite.backbones, "method": suite.methods}
        table = table.sort_values(keys, key=lambda col: col.map({v: i for i, v in enumerate(order[col.name])}))
    return table.reset_index(drop=True), frame


def format_table(table) -> str:
    lines = ["| dataset | backbone | method | n | failed | test acc % (mean ± SD) | s/epoch | saved MB/step |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        acc = f"{r.test_acc_mean:.2f} ± {r.test_acc_sd:.2f}" if r.n else "—"
        lines.append(f"| {r.dataset} | {r.backbone} | {r.method} | {r.n} | {r.failed} | {acc} | "
                     f"{r.epoch_time_s:.3f} | {r.saved_MB_per_step:.2f} |")
    return "\n".join(lines)
