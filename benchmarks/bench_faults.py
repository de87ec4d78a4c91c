"""Faults against a small suite, with real processes, a real SQLite store and a real MLflow database: each
scenario breaks something, then recovers the ordinary way (run the same command again, or `ffbench sync`),
and the table counts the runs expected, found in the store and in MLflow, and duplicated in either.

    .venv/bin/python benchmarks/bench_faults.py [--keep DIR]

Every row should show 0 lost and 0 duplicated; "resume s" is how long the resumed command took to give
the whole resuming command (start-up, the runs left and the MLflow catch-up) with the default 600 s lease:
a run killed on this host is given back at once instead of after the lease.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = """
[suite]
name = "bench-faults"
version = 1
[design]
methods = ["bp", "bp.deepsup"]
datasets = ["synthetic"]
backbones = ["mlp"]
seeds = [0, 1]
[train]
epochs = {epochs}
batch_size = 32
[backbones.mlp]
widths = [16]
"""
EXPECTED = 4
KILL_AFTER_STORE = """
import os, signal, sys
from ffbench import execute
real, seen = execute._mirror, []
def mirror(env, run_id):
    seen.append(run_id)
    if len(seen) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    real(env, run_id)
execute._mirror = mirror
from ffbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def ffbench(*args: str, script: str | None = None) -> subprocess.Popen:
    head = [sys.executable, "-c", script] if script else [sys.executable, "-m", "ffbench.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "FFBENCH_THREADS": "1"}
    return subprocess.Popen([*head, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def done(p: subprocess.Popen) -> int:
    p.communicate(timeout=600)
    return p.returncode


def wait_running(db: Path, n: int = 1) -> None:
    while True:
        try:
            with sqlite3.connect(db) as c:
                if c.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0] >= n:
                    return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.1)


def count(out: Path, suite: Path) -> tuple[int, int, int, int]:
    """(in store, store duplicates, in MLflow, MLflow duplicates) among the suite's current runs (a run of
    cells whose code has changed since is another run)."""
    from mlflow.tracking import MlflowClient

    from ffbench.design import expand
    from ffbench.suite import load

    expected = {r.run_id for r in expand(load(str(suite))).runs}
    with sqlite3.connect(out / "results.db") as c:
        rows = [r for (r,) in c.execute("SELECT run_id FROM runs WHERE suite = 'bench-faults' AND status = 'done' "
                                        "AND superseded IS NULL") if r in expected]
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("bench-faults")
    kids = Counter(r.data.tags["ffbench.run_id"] for r in client.search_runs([exp.experiment_id], max_results=5000)
                   if r.data.tags.get("ffbench.kind") == "evaluation" and r.data.tags["ffbench.run_id"] in expected)
    store = Counter(rows)
    return len(store), sum(v - 1 for v in store.values()), len(kids), sum(v - 1 for v in kids.values())


def scenarios(base: Path):
    """(name, out folder, exit code of the recovering command, seconds of the resume)."""
    short = long_ = base / "suite.toml"  # a run lasts about a second: long enough to be killed inside one
    short.write_text(SUITE.format(epochs=40))

    out = base / "kill-between-store-and-mirror"
    done(ffbench("run", str(short), "--out", str(out), "--no-progress", "--device", "cpu", script=KILL_AFTER_STORE))
    t0 = time.time()
    done(ffbench("sync", str(short), "--out", str(out)))
    code = done(ffbench("run", str(short), "--out", str(out), "--no-progress", "--device", "cpu"))
    yield "SIGKILL between store and mirror, sync, run", out, code, time.time() - t0

    out = base / "mlflow-down"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    first = done(ffbench("run", str(short), "--out", str(out), "--no-progress", "--device", "cpu",
                         "--tracking-uri", f"http://127.0.0.1:{port}"))
    t0 = time.time()
    code = done(ffbench("sync", str(short), "--out", str(out)))
    yield f"MLflow unreachable (run exit {first}), then sync", out, code, time.time() - t0

    for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT"), (signal.SIGKILL, "SIGKILL")):
        out = base / f"run-{name}"
        p = ffbench("run", str(long_), "--out", str(out), "--no-progress", "--device", "cpu")
        wait_running(out / "results.db")
        p.send_signal(sig)
        first = done(p)
        t0 = time.time()
        code = done(ffbench("run", str(short), "--out", str(out), "--no-progress", "--device", "cpu"))
        yield f"{name} of `run` (exit {first}), run again", out, code, time.time() - t0

    out = base / "launcher-SIGTERM"
    p = ffbench("run", str(long_), "--out", str(out), "--no-progress", "--device", "cpu", "--workers", "2")
    wait_running(out / "results.db", 2)
    p.send_signal(signal.SIGTERM)
    first = done(p)
    t0 = time.time()
    code = done(ffbench("run", str(short), "--out", str(out), "--no-progress", "--device", "cpu", "--workers", "2"))
    yield f"SIGTERM of --workers 2 (exit {first}), run again", out, code, time.time() - t0

    out = base / "three-workers"
    t0 = time.time()
    codes = [done(p) for p in [ffbench("worker", str(short), "--out", str(out), "--no-progress", "--device", "cpu",
                                       "--poll", "0.2") for _ in range(3)]]
    yield "3 independent workers, fresh folder", out, max(codes), time.time() - t0

    out = base / "emptied-store"
    done(ffbench("run", str(short), "--out", str(out), "--no-progress", "--device", "cpu"))
    with sqlite3.connect(out / "results.db") as c:
        c.execute("DELETE FROM runs")
    t0 = time.time()
    code = done(ffbench("run", str(short), "--out", str(out), "--no-progress", "--device", "cpu"))
    yield "results.db emptied, run again", out, code, time.time() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="a folder to keep the outputs in (default: a temporary one)")
    args = parser.parse_args()
    base = Path(args.keep or tempfile.mkdtemp(prefix="bench-faults-"))
    base.mkdir(parents=True, exist_ok=True)
    head = f"| {'scenario':58s} | expected | in store | in MLflow | duplicated | exit | resume s |"
    print(head)
    print("|" + "---|" * 7)
    bad = 0
    for name, out, code, seconds in scenarios(base):
        in_store, dup_store, in_mlflow, dup_mlflow = count(out, base / "suite.toml")
        bad += (in_store != EXPECTED) + (in_mlflow != EXPECTED) + dup_store + dup_mlflow + bool(code)
        print(f"| {name:58s} | {EXPECTED:8d} | {in_store:8d} | {in_mlflow:9d} | {dup_store + dup_mlflow:10d} "
              f"| {code:4d} | {seconds:8.1f} |", flush=True)
    print(f"\noutputs under {base}; {'every row complete and without duplicates' if not bad else 'PROBLEMS above'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
