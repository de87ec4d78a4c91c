"""The multi-machine path: several workers share a suite through a real PostgreSQL server (results store and
Optuna storage), each with its own local directory as if on its own machine.

The test starts its own server (initdb + pg_ctl in a temporary directory, on a free port; as the `postgres`
system user when run as root). It needs the PostgreSQL server binaries (Debian: `apt-get install -y
postgresql`) and psycopg2 (`pip install -e '.[postgres]'`), and is skipped, saying which is missing, without them.
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from suites import suite_toml

from ffbench.record.store import DONE, Store

SUITE = suite_toml(
    "pg",
    methods=["bp", "bp.deepsup"],
    seeds=[0, 1],
    epochs=3,
    extra="""
[tuning]
trials = 3
seeds = [100]
sampler = "TPESampler"
sampler_args = { seed = 0, n_startup_trials = 2, constant_liar = true }
pruner = "MedianPruner"
pruner_args = { n_startup_trials = 2 }
""",
)


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_url():
    bindir = _bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip(
            "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and on PATH); "
            "install them: apt-get install -y postgresql"
        )
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 is missing: pip install -e '.[postgres]' (psycopg2-binary)")
    prefix: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="ffbench-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the postgres system user
        try:
            pg = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root needs the 'postgres' system user (the postgresql package creates it)")
        os.chown(tmp, pg.pw_uid, pg.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = tmp / "data"

    def run(*cmd):
        r = subprocess.run(prefix + [str(c) for c in cmd], capture_output=True, text=True, timeout=120)
        if r.returncode:
            log = (tmp / "log").read_text() if (tmp / "log").exists() else ""
            pytest.fail(f"{' '.join(map(str, cmd))} failed:\n{r.stdout}\n{r.stderr}\n{log}")

    try:
        run(bindir / "initdb", "-D", data, "-A", "trust", "-U", "ffbench", "-E", "UTF8", "--no-sync")
        run(
            bindir / "pg_ctl",
            "-D",
            data,
            "-l",
            tmp / "log",
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            "start",
        )
        run(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "ffbench", "ffbench")
        yield f"postgresql+psycopg2://ffbench@127.0.0.1:{port}/ffbench"
    finally:
        subprocess.run(
            prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_workers_on_two_machines_share_a_suite_through_postgresql(tmp_path, pg_url, write_suite):
    import optuna

    from ffbench.execution import studies
    from ffbench.execution.selection import choose_best
    from ffbench.plan.design import expand
    from ffbench.plan.suite import load

    path = write_suite(SUITE, "pg")
    env = {**os.environ, "FFBENCH_THREADS": "1"}
    procs, outs = [], []
    for i in range(2):  # two "machines": no shared local directory, only the database
        out = tmp_path / f"machine{i}"
        outs.append(out)
        cmd = [
            sys.executable,
            "-m",
            "ffbench.cli",
            "worker",
            str(path),
            "--out",
            str(out),
            "--store",
            pg_url,
            "--optuna-storage",
            pg_url,
            "--device",
            "cpu",
            "--lease",
            "60",
            "--poll",
            "0.3",
            "--no-tracking",
            "--no-progress",
        ]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(logs)[-4000:]

    suite = load(str(path))
    design = expand(suite)
    store = Store(pg_url)
    rows = store.rows("pg")
    assert sorted(r["run_id"] for r in rows) == sorted(r.run_id for r in design.trials + design.runs)
    assert all(r["attempts"] == 1 for r in rows)  # each run executed exactly once
    assert all(r["status"] == DONE for r in rows if r["role"] == "evaluation")
    assert all(r["status"] in ("done", "pruned") for r in rows if r["role"] == "tuning")
    print("runs per worker:", Counter(r["worker"] for r in rows))
    for cell in design.cells:
        study = optuna.load_study(study_name=studies.study_name(suite, cell), storage=pg_url)
        assert len(study.trials) == 3 and {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}
        evals = [r for r in rows if r["cell_id"] == cell.cell_id and r["role"] == "evaluation"]
        best = choose_best([r for r in rows if r["cell_id"] == cell.cell_id and r["role"] == "tuning"])
        assert len(evals) == 2 and all(r["params"]["_tuning_trial"] == best["trial"] for r in evals)
    for out in outs:  # nothing shared lives on the "machines"
        assert not (out / "results.db").exists() and not (out / "optuna.journal").exists()
