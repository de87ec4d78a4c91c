"""Run a suite: enumerate its runs, let workers claim the missing ones from the store, record, mirror.

The launcher (``run_suite``) validates the suite, enumerates cells and runs, and initialises the store,
the Optuna studies and MLflow (database, experiment and every cell's parent run) once, before any worker
starts; then it runs one worker in its own process or spawns N worker processes (``workers.py``). The
store decides what is left to do, so running a suite again after a crash or a kill executes only what is
missing; a run whose worker died is taken over once its heartbeat is older than the lease. A run that
diverges or raises inside a method is recorded as a failed outcome, not a crash.
"""
from __future__ import annotations

import hashlib
import math
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffbench import __version__
from ffbench.design import Design, Run, expand
from ffbench.store import DONE, FAILED, FINISHED, PRUNED, Store, worker_name
from ffbench.suite import Suite, SuiteError, load
from ffbench.workers import LEASE_S, POLL_S, Env, heartbeat_interval

HEARTBEAT_S = heartbeat_interval(LEASE_S)
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


def execute(run: Run, store: Store, worker: str, device: str, tracker=None, lease_s: float = LEASE_S) -> str | None:
    """Claim and run one evaluation run; return its status, or None if another worker holds it."""
    from ffbench.workers import run_evaluation

    if not store.claim(run.run_id, worker, lease_s):
        return None
    row = store.rows(run_id=run.run_id)[0]
    env = Env(suite=None, design=Design([], []), store=store, worker=worker, device=device, tracker=tracker,
              lease_s=lease_s)
    return run_evaluation(env, row)


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


def optuna_url(design: Design, paths: Paths, store_url: str | None, given: str | None, workers: int) -> str | None:
    """Where the Optuna studies live: the given URL; else the store's database when it is not SQLite
    (several machines); else a journal file under the output directory (one machine)."""
    if not any(c.tuning for c in design.cells):
        return given
    from ffbench.tuning import default_storage

    url = given or (store_url if store_url and "://" in store_url and not store_url.startswith("sqlite")
                    else default_storage(paths.out))
    if url.startswith("sqlite") and workers > 1:
        raise SuiteError(f"--optuna-storage {url}: SQLite is not safe for parallel tuning (Optuna FAQ: 'database "
                         f"is locked'); use the default journal file on one machine, or PostgreSQL")
    return url


def run_suite(suite_ref: str, out: str | Path | None = None, device: str = "auto",
              tracking_uri: str | None = None, progress: bool = True, track: bool = True, workers: int = 1,
              store_url: str | None = None, optuna_storage: str | None = None, lease_s: float | None = None,
              poll_s: float | None = None) -> dict[str, Any]:
    """Execute every run of the suite that is not finished yet; return a summary.

    workers: 1 runs in this process; N > 1 spawns N ``ffbench worker`` processes (one device each).
    store_url / optuna_storage / tracking_uri: shared locations for several machines (default: files
    under the output directory). lease_s: how stale a heartbeat must be before a run is taken over.
    """
    from ffbench import workers as w

    suite, design, paths = prepare(suite_ref, out)
    paths.out.mkdir(parents=True, exist_ok=True)
    w.set_threads()
    store = Store(store_url or paths.store)
    lease = float(lease_s or LEASE_S)
    poll = float(poll_s or min(POLL_S, max(0.2, lease / 4)))
    ourl = optuna_url(design, paths, store_url, optuna_storage, workers)
    tracker = open_tracker(suite, paths, tracking_uri) if track else None
    w.init_suite(suite, design, store, tracker, ourl)
    before = w.progress(store, suite, design)["finished"]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(w.expected_ids(design)), initial=before, desc=suite.name, unit="run", file=sys.stderr)
    exit_codes: list[int] = []
    try:
        if workers <= 1:
            env = Env(suite, design, store, worker_name(), device, tracker, ourl, lease, poll)
            w.work(env, bar)
        else:
            uri = (tracking_uri or tracker.uri) if tracker is not None else None
            procs = w.spawn(workers, suite.path.resolve(), paths.out.resolve(), store.url, ourl, uri, device, lease, poll)
            exit_codes = w.wait_for(procs, store, suite, design, bar)
    finally:
        if bar is not None:
            bar.close()
    after = w.progress(store, suite, design)
    if tracker is not None:
        summarize_cells(suite, design, store, tracker)
    return {"suite": suite, "design": design, "paths": paths, "executed": after["finished"] - before,
            "store": store, "progress": after, "exit_codes": exit_codes, "optuna_storage": ourl,
            "tracking_uri": tracker.uri if tracker is not None else None}


def verdicts(store: Store, suite: Suite, control: str | None = None, rope=None) -> dict[str, dict[str, Any]]:
    """Each cell's bootstrap CI and its verdict against the control (stats.cell_summaries)."""
    from ffbench.stats import cell_summaries

    frame = store.frame(suite.name, version=suite.version)
    if not len(frame) or "test_acc" not in frame:
        return {}
    return cell_summaries(frame, control=control or suite.control, rope=rope)


def summarize_cells(suite: Suite, design: Design, store: Store, tracker, control: str | None = None,
                    rope=None) -> None:
    """Aggregate each cell's evaluation seeds (n, mean, SD, CI, failures, verdict against the control,
    and for a tuned cell its tuning) onto its MLflow parent run, so the UI ranks and compares cells."""
    import numpy as np

    from ffbench.tuning import choose_best

    stats = verdicts(store, suite, control, rope)
    rows = store.rows(suite.name, suite_version=suite.version)
    by_cell: dict[str, list[dict]] = {}
    for r in rows:
        by_cell.setdefault(r["cell_id"], []).append(r)
    for cell in design.cells:
        runs = [r for r in by_cell.get(cell.cell_id, []) if r["role"] == "evaluation"]
        trials = sorted((r for r in by_cell.get(cell.cell_id, []) if r["role"] == "tuning"), key=lambda r: r["trial"])
        accs = np.array([r["metrics"]["test_acc"] for r in runs
                         if r["status"] == DONE and r["metrics"] and "test_acc" in r["metrics"]])
        summary: dict[str, Any] = {"n": len(accs), "failures": sum(r["status"] == FAILED for r in runs)}
        if len(accs):
            summary.update({"test_acc_mean": accs.mean(), "test_acc_sd": accs.std(ddof=1) if len(accs) > 1 else 0.0})
        st = stats.get(cell.cell_id, {})
        summary.update({f"test_acc_{k}": st[k] for k in ("median", "ci_low", "ci_high") if k in st})
        summary.update({f"{k}_vs_control": st[k] for k in ("delta", "delta_ci_low", "delta_ci_high", "p_adj",
                                                          "verdict") if k in st})
        if st:
            summary["control"] = st["control"]
        curve = []
        if trials:
            summary.update({f"tuning_{s}": sum(r["status"] == s for r in trials) for s in (DONE, PRUNED, FAILED)})
            best = choose_best(trials) if all(r["status"] in FINISHED for r in trials) else None
            if best is not None:
                summary["tuning_best_trial"] = best["trial"]
                summary["tuning_best_val_acc"] = best["metrics"]["val_acc"]
                summary.update({f"tuned.{k}": v for k, v in (best["params"] or {}).items()})
            top = -math.inf
            for k, r in enumerate(trials, start=1):
                v = (r["metrics"] or {}).get("val_acc")
                if r["status"] == DONE and isinstance(v, (int, float)) and math.isfinite(v):
                    top = max(top, v)
                if top > -math.inf:
                    curve.append((k, top))
        done = all(r["status"] in FINISHED for r in runs) and len(runs) == len(suite.seeds)
        tracker.log_cell_summary(cell.cell_id, cell.factors, cell.config.to_dict(), suite.version, summary, done,
                                 budget_curve=curve)


def results_table(store: Store, suite: Suite, design: Design):
    """Mean ± SD of test accuracy per cell (dataset, backbone, method and axis levels), over the finished
    evaluation runs of this suite version; tuning trials never enter it."""
    import pandas as pd

    frame = store.frame(suite.name, version=suite.version)
    cells = {c.cell_id for c in design.cells}
    if len(frame):
        frame = frame[frame["cell_id"].isin(cells)]
    axes = [a for a in design.axes if a in frame.columns] if len(frame) else []
    keys = ["dataset", "backbone", "method", *axes]
    rows = []
    if len(frame):
        frame = frame.copy()
        for a in axes:  # None (axis does not apply) must stay a group of its own
            frame[a] = frame[a].map(lambda v: "—" if v is None or (isinstance(v, float) and v != v) else v)
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
        order = {"dataset": suite.datasets, "backbone": suite.backbones, "method": suite.methods,
                 **{a.name: ["—"] + list(a.levels) for a in suite.axes}}

        def rank(col):
            pos = {str(v): i for i, v in enumerate(order[col.name])}
            return col.map(lambda v: pos.get(str(v), len(pos)))

        table = table.sort_values(keys, key=rank)
    return table.reset_index(drop=True), frame


def format_table(table) -> str:
    axes = [c for c in table.columns if c not in ("dataset", "backbone", "method", "n", "failed", "test_acc_mean",
                                                  "test_acc_sd", "epoch_time_s", "saved_MB_per_step")]
    head = ["dataset", "backbone", "method", *axes, "n", "failed", "test acc % (mean ± SD)", "s/epoch", "saved MB/step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.to_dict("records"):
        acc = f"{r['test_acc_mean']:.2f} ± {r['test_acc_sd']:.2f}" if r["n"] else "—"
        cells = [r["dataset"], r["backbone"], r["method"], *(r[a] for a in axes), r["n"], r["failed"], acc,
                 f"{r['epoch_time_s']:.3f}", f"{r['saved_MB_per_step']:.2f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def failures(store: Store, suite: Suite, design: Design) -> list[dict[str, Any]]:
    """Every failed or pruned row of this suite version (evaluation and tuning), with its message."""
    ids = {c.cell_id: c for c in design.cells}
    out = []
    for r in store.rows(suite.name, suite_version=suite.version, status=[FAILED, PRUNED]):
        if r["cell_id"] in ids:
            first = (r["error"] or "").strip().splitlines()
            out.append({"run_id": r["run_id"], "role": r["role"], "status": r["status"], "cell": ids[r["cell_id"]].label,
                        "seed": r["seed"], "trial": r["trial"], "message": first[0] if first else ""})
    return out
