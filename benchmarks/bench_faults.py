"""Faults against a small suite, with real processes, a real SQLite store and a real MLflow database: each
scenario breaks something (a kill, an outage, a full disk, a half-created MLflow database, a forged
checkpoint, a store or MLflow database pointing outside the output folder, a relative dataset root, a bad
lease, a broken plugin, two runs at once), then recovers the ordinary way (run the same command again, or
`ffbench sync`), and the table counts the runs expected, found in the store and in MLflow, duplicated in
either, and the files written outside the scenario's output folder.

    .venv/bin/python benchmarks/bench_faults.py [--keep DIR]

Every row should show 0 lost, 0 duplicated, 0 outside and the expected exit code; "resume s" is how long
the whole resuming command took (start-up, the runs left and the MLflow catch-up) with the default 600 s
lease: a run killed on this host is given back at once instead of after the lease. The full-disk row needs
a small tmpfs (root); without one it says why it was skipped.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
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
sys.path.insert(0, str(ROOT))  # this checkout's ffbench, as the commands it starts use
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
from ffbench.execution import execute
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


def ffbench(
    *args: str, script: str | None = None, cwd: Path | None = None, path: str = "", **extra: str
) -> subprocess.Popen:
    head = [sys.executable, "-c", script] if script else [sys.executable, "-m", "ffbench.cli"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [path, str(ROOT)])),
        "OMP_NUM_THREADS": "1",
        "FFBENCH_THREADS": "1",
        **extra,
    }
    return subprocess.Popen(
        [*head, *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd
    )


LAST: dict[str, str] = {}  # the last finished command's output


def done(p: subprocess.Popen) -> int:
    LAST["out"], LAST["err"] = p.communicate(timeout=600)
    return p.returncode


def files(base: Path) -> set[tuple[Path, int]]:
    """(file, modification time) under ``base``: what a scenario writes shows as new or changed entries."""
    out = set()
    for p in base.rglob("*"):
        try:
            if p.is_file():
                out.add((p.resolve(), p.stat().st_mtime_ns))
        except OSError:
            pass
    return out


def outside(base: Path, before: set, out: Path) -> int:
    """Files written or changed under ``base`` since ``before``, but not inside ``out``."""
    root = out.resolve()
    return sum(root not in p.parents for p, _ in files(base) - before)


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

    from ffbench.plan.design import expand
    from ffbench.plan.suite import load

    expected = {r.run_id for r in expand(load(str(suite))).runs}
    with sqlite3.connect(out / "results.db") as c:
        rows = [
            r
            for (r,) in c.execute(
                "SELECT run_id FROM runs WHERE suite = 'bench-faults' AND status = 'done' AND superseded IS NULL"
            )
            if r in expected
        ]
    from ffbench.record.tracking import _forget_engine

    uri = f"sqlite:///{out / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("bench-faults")
    found = client.search_runs([exp.experiment_id], max_results=5000) if exp is not None else []
    kids = Counter(
        r.data.tags["ffbench.run_id"]
        for r in found
        if r.data.tags.get("ffbench.kind") == "evaluation" and r.data.tags["ffbench.run_id"] in expected
    )
    _forget_engine(uri)  # a later scenario may replace a database of the same name
    store = Counter(rows)
    return len(store), sum(v - 1 for v in store.values()), len(kids), sum(v - 1 for v in kids.values())


def scenarios(base: Path):
    """One row per scenario: {name, out, suite, code (of the recovering command), expect (its expected exit
    code), seconds (of the resume), outside (files written outside ``out``)}."""
    short = long_ = base / "suite.toml"  # a run lasts about a second: long enough to be killed inside one
    short.write_text(SUITE.format(epochs=40))

    def row(
        name: str,
        out: Path,
        code: int,
        t0: float,
        snap: set,
        suite: Path = short,
        expect: int = 0,
        where: Path | None = None,
    ) -> dict:
        return {
            "name": name,
            "out": out,
            "suite": suite,
            "code": code,
            "expect": expect,
            "seconds": time.time() - t0,
            "outside": outside(where or base, snap, out),
        }

    snap = files(base)
    out = base / "kill-between-store-and-mirror"
    done(ffbench("run", str(short), "--out", str(out), "--no-progress", "--device", "cpu", script=KILL_AFTER_STORE))
    t0 = time.time()
    done(ffbench("sync", str(short), "--out", str(out)))
    code = done(ffbench("run", str(short), "--out", str(out), "--no-progress", "--device", "cpu"))
    yield row("SIGKILL between store and mirror, sync, run", out, code, t0, snap)

    snap = files(base)
    out = base / "mlflow-down"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    first = done(
        ffbench(
            "run",
            str(short),
            "--out",
            str(out),
            "--no-progress",
            "--device",
            "cpu",
            "--tracking-uri",
            f"http://127.0.0.1:{port}",
        )
    )
    t0 = time.time()
    code = done(ffbench("sync", str(short), "--out", str(out)))
    yield row(f"MLflow unreachable (run exit {first}), then sync", out, code, t0, snap)

    for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT"), (signal.SIGKILL, "SIGKILL")):
        snap = files(base)
        out = base / f"run-{name}"
        p = ffbench("run", str(long_), "--out", str(out), "--no-progress", "--device", "cpu")
        wait_running(out / "results.db")
        p.send_signal(sig)
        first = done(p)
        t0 = time.time()
        code = done(ffbench("run", str(short), "--out", str(out), "--no-progress", "--device", "cpu"))
        yield row(f"{name} of `run` (exit {first}), run again", out, code, t0, snap)

    snap = files(base)
    out = base / "launcher-SIGTERM"
    p = ffbench("run", str(long_), "--out", str(out), "--no-progress", "--device", "cpu", "--workers", "2")
    wait_running(out / "results.db", 2)
    p.send_signal(signal.SIGTERM)
    first = done(p)
    t0 = time.time()
    code = done(ffbench("run", str(short), "--out", str(out), "--no-progress", "--device", "cpu", "--workers", "2"))
    yield row(f"SIGTERM of --workers 2 (exit {first}), run again", out, code, t0, snap)

    snap = files(base)
    out = base / "three-workers"
    t0 = time.time()
    codes = [
        done(p)
        for p in [
            ffbench("worker", str(short), "--out", str(out), "--no-progress", "--device", "cpu", "--poll", "0.2")
            for _ in range(3)
        ]
    ]
    yield row("3 independent workers, fresh folder", out, max(codes), t0, snap)

    snap = files(base)
    out = base / "emptied-store"
    done(ffbench("run", str(short), "--out", str(out), "--no-progress", "--device", "cpu"))
    with sqlite3.connect(out / "results.db") as c:
        c.execute("DELETE FROM runs")
    t0 = time.time()
    code = done(ffbench("run", str(short), "--out", str(out), "--no-progress", "--device", "cpu"))
    yield row("results.db emptied, run again", out, code, t0, snap)

    yield from hostile_scenarios(base, short, row)


HALF_PLUGIN = """
from ffbench.core.method import Method, method_card

@method_card(name="half.demo", summary="registered, then the import fails", rules=("none",),
             capabilities=frozenset({"any-backbone"}))
class Demo(Method):
    def train_step(self, x, y):
        return {}
    def evaluate(self, x):
        return {}, []

import sys
sys.exit(0)
"""
FORGE = """
import json, sys, torch
class Hostile:
    def __reduce__(self):
        return open, (sys.argv[3], "w")
config, epochs = json.loads(sys.argv[2]), int(sys.argv[4])
torch.save({"format": 2, "config": config, "epoch": epochs, "metrics": {"test_acc": 0.999, "x": Hostile()},
            "curves": [{"epoch": e} for e in range(epochs)]}, sys.argv[1])
"""
MOUNTS: list[Path] = []


def write_idx(folder: Path, seed: int) -> None:
    """Small MNIST-shaped IDX files (300 train / 60 test images)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in (
        ("train-images-idx3-ubyte", rng.integers(0, 255, (300, 28, 28))),
        ("train-labels-idx1-ubyte", np.arange(300) % 10),
        ("t10k-images-idx3-ubyte", rng.integers(0, 255, (60, 28, 28))),
        ("t10k-labels-idx1-ubyte", np.arange(60) % 10),
    ):
        (folder / name).write_bytes(
            bytes([0, 0, 8, arr.ndim])
            + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
            + arr.astype(np.uint8).tobytes()
        )


def hostile_scenarios(base: Path, short: Path, row):
    """The scenarios of a hostile environment: a full disk, a half-created MLflow database, a forged
    checkpoint, paths pointing outside the output folder, a relative dataset root, leases, a broken plugin
    and two runs at once."""
    run = ("--no-progress", "--device", "cpu")

    disk = base / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode == 0:
        MOUNTS.append(disk)
        snap, out = files(base), disk / "out"
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (2048 - 1150) * 1024)  # about 1.1 MB left: MLflow's tables fill it
        first = done(ffbench("run", short, "--out", out, *run))
        lines = len(LAST["err"].strip().splitlines())
        filler.unlink()
        t0 = time.time()
        code = max(done(ffbench("run", short, "--out", out, *run)), done(ffbench("sync", short, "--out", out)))
        yield row(f"full disk (exit {first}, {lines} stderr lines), freed, run, sync", out, code, t0, snap)
    else:
        print(f"(full disk skipped: cannot mount a tmpfs: {mounted.stderr.strip()})", file=sys.stderr)

    snap, out = files(base), base / "sync-killed-creating-mlflow"
    done(ffbench("run", short, "--out", out, *run, "--no-tracking"))
    for delay in (1.0, 2.0, 3.0):  # before, while and after MLflow creates its tables
        for f in out.glob("*mlflow.db*"):
            f.unlink()
        p = ffbench("sync", short, "--out", out)
        time.sleep(delay)
        p.kill()
        p.communicate()
    t0 = time.time()
    code = done(ffbench("sync", short, "--out", out))
    yield row("SIGKILL of sync while MLflow creates its tables (3 points), sync", out, code, t0, snap)

    snap, out = files(base), base / "half-migrated-mlflow"
    done(ffbench("run", short, "--out", out, *run, "--no-tracking"))
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from mlflow.tracking import MlflowClient; "
            f"MlflowClient('sqlite:///{out / 'mlflow.db'}').search_experiments()",
        ],
        check=True,
        capture_output=True,
    )
    with sqlite3.connect(out / "mlflow.db") as c:
        c.execute("CREATE TABLE _alembic_tmp_jobs (x)")
    t0 = time.time()
    code = done(ffbench("sync", short, "--out", out))
    yield row("half-migrated mlflow.db (_alembic_tmp_jobs), sync", out, code, t0, snap)

    unbatched = base / "unbatched.toml"
    unbatched.write_text(SUITE.format(epochs=40).replace("version = 1", "version = 1\nbatch_seeds = false"))
    snap, out = files(base), base / "forged-checkpoint"
    p = ffbench("run", unbatched, "--out", out, *run, FFBENCH_CHECKPOINT_S="0")
    while not list((out / "checkpoints").glob("*.pt")) and p.poll() is None:
        time.sleep(0.05)
    p.kill()
    p.communicate()
    ckpt = next((out / "checkpoints").glob("*.pt"))
    with sqlite3.connect(out / "results.db") as c:
        (config,) = c.execute("SELECT config FROM runs WHERE run_id = ?", (ckpt.stem,)).fetchone()
    marker = base / "forged-marker"
    subprocess.run([sys.executable, "-c", FORGE, str(ckpt), config, str(marker), "40"], check=True)
    t0 = time.time()
    code = done(ffbench("run", unbatched, "--out", out, *run))
    with sqlite3.connect(out / "results.db") as c:
        made_up = sum("0.999" in (m or "") for (m,) in c.execute("SELECT metrics FROM runs"))
    yield row(
        f"forged checkpoint (finished, 0.999, hostile pickle): marker {marker.exists()}, 0.999 recorded {made_up}",
        out,
        code + 100 * (marker.exists() or made_up > 0),
        t0,
        snap,
        suite=unbatched,
    )

    snap, out = files(base), base / "traversal" / "a" / "b" / "out"
    done(ffbench("run", short, "--out", out, *run))
    with sqlite3.connect(out / "results.db") as c:
        c.execute("UPDATE runs SET suite = '../../../outside/trav'")
    t0 = time.time()
    code = done(ffbench("report", "--out", out))
    with sqlite3.connect(out / "results.db") as c:
        c.execute("UPDATE runs SET suite = 'bench-faults'")
    yield row("store's suite name `../../../outside/trav`, report", out, code, t0, snap)

    snap, out = files(base), base / "artifact-location"
    done(ffbench("run", short, "--out", out, *run))
    done(ffbench("report", short, "--out", out))
    with sqlite3.connect(out / "mlflow.db") as c:
        c.execute("UPDATE experiments SET artifact_location = ?", ((base / "elsewhere").as_uri(),))
        c.execute("UPDATE runs SET artifact_uri = ?", ((base / "elsewhere").as_uri(),))
    t0 = time.time()
    code = done(ffbench("report", short, "--out", out))
    yield row("artifact location edited in mlflow.db, report", out, code, t0, snap)

    original, out = base / "original", base / "copied"
    done(ffbench("run", short, "--out", original, *run))
    done(ffbench("report", short, "--out", original))
    shutil.copytree(original, out)
    snap, t0 = files(base), time.time()
    code = done(ffbench("report", short, "--out", out))
    yield row("copied output folder, report on the copy", out, code, t0, snap)

    home, elsewhere = base / "roots", base / "roots-elsewhere"
    write_idx(home / "data", 0)
    write_idx(elsewhere / "data", 1)  # other data under the same relative path
    mnist = home / "mnist.toml"
    mnist.write_text(SUITE.format(epochs=2).replace('"synthetic"', '"mnist"') + '[datasets.mnist]\nroot = "data"\n')
    snap, out = files(base), base / "relative-root"
    done(ffbench("run", mnist, "--out", out, *run, cwd=home))
    t0 = time.time()
    code = done(ffbench("run", mnist, "--out", out, *run, cwd=elsewhere))
    wrote = outside(base, snap, out)
    write_idx(home / "data", 2)  # the data changes under the finished cells
    snap = files(base)
    changed = done(ffbench("run", mnist, "--out", out, *run, cwd=elsewhere))
    wrote += outside(base, snap, out)
    write_idx(home / "data", 0)
    r = row(
        f"relative root run from 2 folders; data changed: exit {changed}",
        out,
        code + 100 * (changed != 2),
        t0,
        files(base),
        suite=mnist,
    )
    yield {**r, "outside": wrote}

    snap, out = files(base), base / "lease-minus-one"
    first = done(ffbench("run", short, "--out", out, *run, "--lease", "-1", "--workers", "2"))
    t0 = time.time()
    code = done(ffbench("run", short, "--out", out, *run, "--workers", "2"))
    yield row(f"--lease -1 --workers 2 (exit {first}), run", out, code + 100 * (first != 2), t0, snap)

    snap, out = files(base), base / "future-heartbeat"
    done(ffbench("run", short, "--out", out, *run))
    with sqlite3.connect(out / "results.db") as c:
        c.execute(
            "UPDATE runs SET status = 'running', worker = 'farhost:1', host = 'farhost', pid = 1, "
            "heartbeat = ? WHERE run_id = (SELECT min(run_id) FROM runs)",
            (time.time() + 1e6,),
        )
    t0 = time.time()
    code = done(ffbench("run", short, "--out", out, *run, "--lease", "5"))
    yield row("foreign claim, heartbeat 11 days ahead, run --lease 5", out, code, t0, snap)

    plugin = base / "plugin"
    plugin.mkdir()
    (plugin / "half_plugin.py").write_text(HALF_PLUGIN)
    (plugin / "half_plugin-0.1.dist-info").mkdir()
    (plugin / "half_plugin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: half-plugin\nVersion: 0.1\n"
    )
    (plugin / "half_plugin-0.1.dist-info" / "entry_points.txt").write_text("[ffbench.methods]\nhalf = half_plugin\n")
    snap, out = files(base), base / "plugin-sys-exit"
    t0 = time.time()
    code = done(ffbench("run", short, "--out", out, *run, path=str(plugin)))
    warned = sum("half_plugin" in line for line in LAST["err"].splitlines())
    yield row(f"plugin registers, then sys.exit(0) at import ({warned} warning)", out, code, t0, snap)

    snap, out = files(base), base / "two-runs-at-once"
    t0 = time.time()
    procs = [ffbench("run", short, "--out", out, *run) for _ in range(2)]
    codes, ran = [], []
    for p in procs:
        codes.append(done(p))
        found = re.search(r"ran (\d+) of", LAST["out"])
        ran.append(int(found.group(1)) if found else -1)
    yield row(
        f"two `run` at once: ran {' + '.join(map(str, ran))}", out, max(codes) + 100 * (sum(ran) != EXPECTED), t0, snap
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="a folder to keep the outputs in (default: a temporary one)")
    args = parser.parse_args()
    base = Path(args.keep or tempfile.mkdtemp(prefix="bench-faults-"))
    base.mkdir(parents=True, exist_ok=True)
    head = f"| {'scenario':84s} | expected | in store | in MLflow | duplicated | outside | exit (expected) | resume s |"
    print(head)
    print("|" + "---|" * 8)
    bad = 0
    try:
        for r in scenarios(base):
            in_store, dup_store, in_mlflow, dup_mlflow = count(r["out"], r["suite"])
            bad += (
                (in_store != EXPECTED)
                + (in_mlflow != EXPECTED)
                + dup_store
                + dup_mlflow
                + r["outside"]
                + (r["code"] != r["expect"])
            )
            print(
                f"| {r['name']:84s} | {EXPECTED:8d} | {in_store:8d} | {in_mlflow:9d} | {dup_store + dup_mlflow:10d} "
                f"| {r['outside']:7d} | {r['code']:4d} ({r['expect']})     | {r['seconds']:8.1f} |",
                flush=True,
            )
    finally:
        for disk in MOUNTS:
            subprocess.run(["umount", "-l", str(disk)], check=False)
    print(
        f"\noutputs under {base}; "
        f"{'every row complete, without duplicates or files outside' if not bad else 'PROBLEMS above'}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
