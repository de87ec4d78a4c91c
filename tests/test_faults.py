"""Faults: kills, interrupts, an unreachable MLflow, broken stores, failing infrastructure and changed plugin
code, with real processes, real SQLite stores and real MLflow databases. What must hold every time: every
run recorded exactly once in the store and mirrored exactly once into MLflow, and a local kill resumed at
once rather than after the lease."""

import errno
import gc
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("mlflow")
import suites
from mlflow.tracking import MlflowClient  # noqa: E402
from suites import suite_toml

from ffbench.cli import main  # noqa: E402
from ffbench.record import manifest as manifest_module  # noqa: E402
from ffbench.record import tracking  # noqa: E402
from ffbench.record.store import DONE, FAILED, PENDING, RUNNING, Store  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("FFBENCH_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def suite_file(tmp_path: Path, name="faults", methods=("bp", "bp.deepsup"), epochs=2) -> Path:
    return suites.suite_file(tmp_path, name, methods=methods, seeds=[0, 1], epochs=epochs)


def env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *extra.pop("path", [])]), **extra}


def ffbench(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ffbench.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=kw.pop("env", env()),
        **kw,
    )


def finish(proc: subprocess.Popen, timeout=240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_running(db: Path, proc: subprocess.Popen, n=1, timeout=120) -> list[tuple]:
    """The running rows once ``n`` are running (read with plain sqlite3, as an outsider would)."""
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, proc.communicate()
        if db.exists():
            try:
                with sqlite3.connect(db) as c:
                    rows = c.execute("SELECT run_id, worker, host, pid FROM runs WHERE status = 'running'").fetchall()
            except sqlite3.OperationalError:
                rows = []
            if len(rows) >= n:
                return rows
        time.sleep(0.1)
    raise AssertionError("no run started")


def wait_cell_parents(db: Path, proc: subprocess.Popen, timeout=120) -> None:
    """Until the MLflow database holds a cell's parent run (read with plain sqlite3, as an outsider would)."""
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, proc.communicate()
        try:
            with sqlite3.connect(db) as c:
                if c.execute("SELECT 1 FROM tags WHERE key = 'ffbench.kind' AND value = 'cell'").fetchone():
                    return
        except sqlite3.OperationalError:  # not created yet
            pass
        time.sleep(0.1)
    raise AssertionError("no cell parent run in MLflow")


def mlflow_children(db: Path, suite: str) -> tuple[Counter, list]:
    """(children per ffbench run ID and generation, parents) of the suite's experiment."""
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(suite)
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    tracking._forget_engine(f"sqlite:///{db}")  # the next look opens the file anew (a test replaces it)
    kids = Counter(
        (r.data.tags["ffbench.run_id"], r.data.tags.get("ffbench.generation", "0"))
        for r in runs
        if r.data.tags.get("ffbench.kind") in ("evaluation", "tuning")
    )
    return kids, [r for r in runs if r.data.tags.get("ffbench.kind") == "cell"]


def assert_complete(out: Path, suite: str, n_runs: int, n_cells: int) -> None:
    """Every run once in the store, done, and once in MLflow under one parent per cell."""
    rows = Store(out / "results.db").rows(suite)
    assert len(rows) == n_runs and {r["status"] for r in rows} == {DONE}
    kids, parents = mlflow_children(out / "mlflow.db", suite)
    assert kids == {(r["run_id"], "0"): 1 for r in rows}
    assert len(parents) == n_cells and all(p.info.status == "FINISHED" for p in parents)


# ---------------------------------------------------------------- kills and interrupts
KILL_AFTER_STORE = """
import os, signal, sys
from ffbench.execution import execute
real = execute._mirror
count = []
def mirror_then_die(env, run_id):
    count.append(run_id)
    if len(count) == 2:  # the second run is in the store, and the process dies before MLflow sees it
        os.kill(os.getpid(), signal.SIGKILL)
    real(env, run_id)
execute._mirror = mirror_then_die
from ffbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_between_store_and_mirror_then_sync(tmp_path):
    path, out = suite_file(tmp_path), tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILL_AFTER_STORE,
            "run",
            str(path),
            "--out",
            str(out),
            "--no-progress",
            "--device",
            "cpu",
        ],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    code, _, err = finish(proc)
    assert code == -signal.SIGKILL, err[-2000:]
    store = Store(out / "results.db")
    assert len(store.unmirrored("faults")) == 1  # recorded, never mirrored
    assert main(["sync", str(path), "--out", str(out)]) == 0
    assert store.unmirrored("faults") == []
    # the rest of the suite, then the whole picture: nothing lost, nothing twice
    assert main(["run", str(path), "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    assert_complete(out, "faults", 4, 2)


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_interrupted_run_gives_back_its_run_and_resumes(tmp_path, sig, status):
    path, out = suite_file(tmp_path, epochs=400), tmp_path / "out"
    proc = ffbench("run", path, "--out", out, "--no-progress", "--device", "cpu")
    wait_running(out / "results.db", proc)
    wait_cell_parents(out / "mlflow.db", proc)  # the mirror writes off the training thread: parents to close
    proc.send_signal(sig)
    code, _, err = finish(proc)
    assert code == status and "interrupted: 4 runs pending, rerun the same command to resume" in err, err[-3000:]
    assert "Traceback" not in err
    store = Store(out / "results.db")
    assert {r["status"] for r in store.rows("faults")} == {PENDING}  # given back: no lease to wait for
    _, parents = mlflow_children(out / "mlflow.db", "faults")
    assert parents and all(p.info.status != "RUNNING" for p in parents)


def test_sigkilled_worker_is_resumed_at_once_despite_the_default_lease(tmp_path):
    path, out = suite_file(tmp_path, epochs=400), tmp_path / "out"
    proc = ffbench("worker", path, "--out", out, "--no-progress", "--device", "cpu", "--no-tracking")
    held = wait_running(out / "results.db", proc, n=2)  # a cell's two seeds, claimed together (one batch)
    for _, worker, host, pid in held:
        assert host == socket.gethostname() and pid == proc.pid and worker == f"{host}:{pid}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store(out / "results.db")
    ids = sorted(r[0] for r in held)
    assert {store.rows(run_id=i)[0]["status"] for i in ids} == {RUNNING}
    t0 = time.time()
    assert sorted(store.release_dead("faults")) == ids  # its process is gone: back at once, lease or not
    assert time.time() - t0 < 2 and {store.rows(run_id=i)[0]["status"] for i in ids} == {PENDING}


def test_launcher_sigterm_stops_its_workers_and_resumes(tmp_path):
    path, out = suite_file(tmp_path, epochs=400), tmp_path / "out"
    proc = ffbench("run", path, "--out", out, "--no-progress", "--device", "cpu", "--workers", "2")
    held = wait_running(out / "results.db", proc, n=2, timeout=180)
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    assert code == 143 and "interrupted: 4 runs pending" in err and "Traceback" not in err
    for *_, pid in held:  # no worker left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert {r["status"] for r in Store(out / "results.db").rows("faults")} == {PENDING}
    _, parents = mlflow_children(out / "mlflow.db", "faults")
    # a parent per cell that started (both workers took the first cell's two seeds), closed
    assert len(parents) == 1 and all(p.info.status == "KILLED" for p in parents)


# ---------------------------------------------------------------- MLflow down, workers together
def test_unreachable_mlflow_then_sync(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path, out = suite_file(tmp_path), tmp_path / "out"
    code = main(
        [
            "run",
            str(path),
            "--out",
            str(out),
            "--no-progress",
            "--device",
            "cpu",
            "--tracking-uri",
            f"http://127.0.0.1:{port}",
        ]
    )
    printed = capsys.readouterr()
    assert code == 0 and (out / "table.md").exists() and (out / "results.csv").exists()
    assert "4 finished run(s) of 'faults' await mirroring" in printed.out and "Traceback" not in printed.err
    assert main(["sync", str(path), "--out", str(out)]) == 0
    assert_complete(out, "faults", 4, 2)
    assert main(["sync", str(path), "--out", str(out)]) == 0  # nothing left, nothing doubled
    assert_complete(out, "faults", 4, 2)


def test_read_only_mlflow_database_does_not_stop_the_suite(tmp_path, capsys):
    path, out = suite_file(tmp_path, methods=["bp"]), tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress", "--device", "cpu", "--no-tracking"]) == 0
    from ffbench.record.tracking import Tracker, default_tracking_uri

    Tracker(default_tracking_uri(out), out / "mlartifacts")  # an MLflow database exists, then turns read-only
    os.chmod(out / "mlflow.db", 0o444)
    try:
        if os.access(out / "mlflow.db", os.W_OK):
            pytest.skip("running as a user who may write read-only files (root)")
        assert main(["run", str(path), "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
        assert "await mirroring" in capsys.readouterr().out
    finally:
        os.chmod(out / "mlflow.db", 0o644)


@pytest.mark.slow
@pytest.mark.parametrize("existing", [False, True])
def test_three_independent_workers(tmp_path, existing):
    path, out = suite_file(tmp_path, methods=["bp", "bp.deepsup", "sff"], epochs=3), tmp_path / "out"
    if existing:  # an mlflow.db that already holds another suite's experiment
        other = suite_file(tmp_path, name="other", methods=["bp"], epochs=1)
        assert main(["run", str(other), "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    procs = [
        ffbench("worker", path, "--out", out, "--no-progress", "--device", "cpu", "--poll", "0.2") for _ in range(3)
    ]
    results = [finish(p) for p in procs]
    assert [r[0] for r in results] == [0, 0, 0], [r[2][-2000:] for r in results]
    assert_complete(out, "faults", 6, 3)
    rows = Store(out / "results.db").rows("faults")
    assert all(r["attempts"] == 1 for r in rows)


# ---------------------------------------------------------------- the store
@pytest.mark.parametrize("damage", ["empty", "truncated", "foreign", "foreign-sqlite"])
def test_a_broken_or_foreign_store_is_refused(tmp_path, capsys, damage):
    path, out = suite_file(tmp_path, methods=["bp"], epochs=1), tmp_path / "out"
    db = out / "results.db"
    if damage == "truncated":
        assert main(["run", str(path), "--out", str(out), "--no-progress", "--device", "cpu", "--no-tracking"]) == 0
        data = db.read_bytes()
        for f in out.glob("results.db-*"):
            f.unlink()
        db.write_bytes(data[: len(data) // 2])
    else:
        out.mkdir()
        if damage == "empty":
            db.touch()
        elif damage == "foreign":
            db.write_text("not a database\n" * 100)
        else:
            with sqlite3.connect(db) as c:
                c.execute("CREATE TABLE notes (x)")
    before = db.read_bytes()
    code = main(["run", str(path), "--out", str(out), "--no-progress", "--device", "cpu", "--no-tracking"])
    err = capsys.readouterr().err
    assert code == 2 and str(db) in err and "--out" in err and "move it away" in err and "Traceback" not in err
    assert db.read_bytes() == before  # not written to


def test_an_emptied_store_retrains_without_duplicating_mlflow_children(tmp_path):
    path, out = suite_file(tmp_path), tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    with sqlite3.connect(out / "results.db") as c:
        c.execute("DELETE FROM runs")
    assert main(["run", str(path), "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    assert_complete(out, "faults", 4, 2)


def test_infrastructure_errors_stop_the_suite_and_leave_the_run_pending(tmp_path, capsys, monkeypatch):
    path, out = suite_file(tmp_path, methods=["bp"]), tmp_path / "out"
    import ffbench.training.train

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    import ffbench.training.batched

    monkeypatch.setattr(ffbench.training.train, "fit", disk_full)
    monkeypatch.setattr(ffbench.training.batched, "fit_seeds", disk_full)  # the cell's seeds train together by default
    code = main(["run", str(path), "--out", str(out), "--no-progress", "--device", "cpu", "--no-tracking"])
    err = capsys.readouterr().err
    assert code == 3 and "the disk is full" in err and "stays pending" in err and "Traceback" not in err
    rows = Store(out / "results.db").rows("faults")
    assert {r["status"] for r in rows} == {PENDING} and not Store(out / "results.db").rows("faults", status=FAILED)
    # unreadable data stops the planner before anything is claimed
    bad = tmp_path / "bad.toml"
    bad.write_text(
        suite_toml("bad", datasets=["fashion-mnist"], seeds=[0, 1])
        + f'\n[datasets.fashion-mnist]\nroot = "{tmp_path}"\n'
    )
    code = main(["run", str(bad), "--out", str(tmp_path / "bad"), "--no-progress", "--no-tracking"])
    assert code == 2 and "fashion-mnist" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "results.db").exists()


def test_git_state_is_read_without_taking_locks(monkeypatch):
    seen = []
    real = subprocess.run

    def spy(cmd, **kw):
        seen.append(kw.get("env", {}).get("GIT_OPTIONAL_LOCKS"))
        return real(cmd, **kw)

    monkeypatch.setattr(manifest_module.subprocess, "run", spy)
    manifest_module.manifest("cpu")
    assert seen and set(seen) == {"0"}


# ---------------------------------------------------------------- code identity and reruns
PLUGIN = """
from ffbench.core.method import method_card
from ffbench.methods.bp import BP


@method_card(name="myplug", family="myplug", summary="backprop under another name (a plugin for tests)",
             defaults=dict(BP.card.defaults), options=dict(BP.card.options), rules=BP.card.rules,
             capabilities=BP.card.capabilities)
class MyPlug(BP):
    pass
"""


def test_changed_plugin_code_makes_its_cells_new_and_rerun_executes_on_purpose(tmp_path):
    plugins = tmp_path / "plugins"
    info = plugins / "myplug-0.1.dist-info"
    info.mkdir(parents=True)
    (plugins / "myplug.py").write_text(PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ffbench.methods]\nmyplug = myplug\n")
    (info / "top_level.txt").write_text("myplug\n")
    path, out = suite_file(tmp_path, methods=["bp", "myplug"]), tmp_path / "out"
    run = ["run", path, "--out", out, "--no-progress", "--device", "cpu", "--no-tracking"]
    e = env(path=[str(plugins)])
    code, first, err = finish(ffbench(*run, env=e))
    assert code == 0 and "ran 4 of 4" in first, err[-2000:]
    rows = Store(out / "results.db").rows("faults")
    code_of = {r["factors"]["method"]: r["code"]["method"] for r in rows}
    assert code_of["myplug"] == {"file": "myplug.py", "sha256": code_of["myplug"]["sha256"], "dist": "myplug==0.1"}
    assert all(r["manifest"]["code"] == r["code"] for r in rows)
    (plugins / "myplug.py").write_text(PLUGIN + "\n# tuned\n")
    code, second, err = finish(ffbench(*run, env=e))
    assert code == 0, err[-2000:]
    assert "1 cell of myplug is new: myplug.py changed since the stored results" in second
    assert "ran 2 of 4" in second  # only the plugin's cell; bp's results are reused
    # on purpose: bp again; the old rows stay as superseded, the table uses the new ones
    code, third, err = finish(ffbench(*run, "--rerun", "bp", env=e))
    assert code == 0 and "ran 2 of 4" in third and "| synthetic | mlp | bp | 2 | 0 |" in third, err[-2000:]
    store = Store(out / "results.db")
    old = [r for r in store.rows("faults", superseded=True) if r["superseded"]]
    assert len(old) == 2 and all(r["run_id"].endswith("~g0") for r in old)
    assert {r["generation"] for r in store.rows("faults") if r["factors"]["method"] == "bp"} == {1}


# ---------------------------------------------------------------- a full disk, a half-created MLflow database
@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MB file system (tmpfs; needs root): the disk fills up for real."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.parametrize("free_kb", [1150])
def test_a_full_disk_stops_with_one_line_and_exit_3_and_the_store_resumes(tmp_path, small_disk, free_kb):
    path, out = suite_file(tmp_path), small_disk / "out"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (2048 - free_kb) * 1024)
    code, _, err = finish(ffbench("run", path, "--out", out, "--no-progress", "--device", "cpu"))
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    assert code in (0, 3) and (code == 0 or "disk is full" in err.splitlines()[-1]), err
    assert not Store(out / "results.db").rows("faults", status=FAILED)  # the disk's fault is never the method's
    filler.unlink()  # space freed: the same store resumes (never refused for its size), nothing duplicated
    code, out_text, err = finish(ffbench("run", path, "--out", out, "--no-progress", "--device", "cpu"))
    assert code == 0 and "Traceback" not in err and "move it away" not in err, err
    assert finish(ffbench("sync", path, "--out", out))[0] == 0
    assert_complete(out, "faults", 4, 2)


def test_store_creation_on_a_full_disk_leaves_no_torn_store(tmp_path, small_disk):
    path, out = suite_file(tmp_path, methods=["bp"]), small_disk / "out"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (2048 - 80) * 1024)
    code, _, err = finish(ffbench("run", path, "--out", out, "--no-progress", "--device", "cpu", "--no-tracking"))
    assert code == 3 and "disk is full" in err and "Traceback" not in err, err
    filler.unlink()
    code, _, err = finish(ffbench("run", path, "--out", out, "--no-progress", "--device", "cpu", "--no-tracking"))
    assert code == 0, err
    assert {r["status"] for r in Store(out / "results.db").rows("faults")} == {DONE}


def stored_suite(tmp_path) -> tuple[Path, Path]:
    """A suite whose 4 runs are in the store and not yet in MLflow."""
    path, out = suite_file(tmp_path), tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress", "--device", "cpu", "--no-tracking"]) == 0
    return path, out


def test_sync_killed_while_mlflow_creates_its_tables_never_leaves_a_half_created_database(tmp_path):
    path, out = stored_suite(tmp_path)
    for delay in (1.0, 2.0, 3.0):  # before, while and after MLflow creates its tables
        for f in out.glob("*mlflow.db*"):
            f.unlink()
        p = ffbench("sync", path, "--out", out)
        time.sleep(delay)
        p.kill()
        p.communicate()
        code, _, err = finish(ffbench("sync", path, "--out", out))
        assert code == 0 and "Traceback" not in err, (delay, err)
        assert_complete(out, "faults", 4, 2)
        assert not list(out.glob(".mlflow.db.*"))  # no temporary file left behind


@pytest.mark.parametrize("damage", ["migration cut short", "no schema version"])
def test_a_half_created_mlflow_database_is_made_again_from_the_store(tmp_path, capsys, damage):
    path, out = stored_suite(tmp_path)
    db, uri = out / "mlflow.db", f"sqlite:///{out / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # a database with MLflow's tables, no run yet
    tracking._forget_engine(uri)
    with sqlite3.connect(db) as c:
        c.execute(
            "CREATE TABLE _alembic_tmp_jobs (x)" if damage == "migration cut short" else "DELETE FROM alembic_version"
        )
    capsys.readouterr()
    assert main(["sync", str(path), "--out", str(out)]) == 0
    assert "half-created" in capsys.readouterr().err
    assert_complete(out, "faults", 4, 2)
    # one that holds runs is never deleted: the advice given works
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE _alembic_tmp_jobs (x)")
    tracking._DOWN.clear()
    assert main(["sync", str(path), "--out", str(out)]) == 1
    assert f"mv {db} {db}.broken" in capsys.readouterr().err
    db.rename(db.with_name("mlflow.db.broken"))
    assert finish(ffbench("sync", path, "--out", out))[0] == 0
    assert_complete(out, "faults", 4, 2)


# ---------------------------------------------------------------- leases
@pytest.mark.parametrize(
    "option", [("--lease", "-1"), ("--lease", "0"), ("--lease", "1e9"), ("--poll", "-1"), ("--poll", "0")]
)
def test_lease_and_poll_outside_their_range_are_refused_before_anything_is_claimed(tmp_path, capsys, option):
    path, out = suite_file(tmp_path), tmp_path / "out"
    command = "worker" if option[0] == "--poll" else "run"
    assert main([command, str(path), "--out", str(out), "--no-progress", "--no-tracking", *option]) == 2
    err = capsys.readouterr().err
    assert f"{option[0]} {float(option[1]):g}: allowed values are" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_heartbeat_from_the_future_is_clock_skew_with_a_stated_rule(tmp_path, capsys):
    path, out = suite_file(tmp_path), tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress", "--device", "cpu", "--no-tracking"]) == 0
    rows = Store(out / "results.db").rows("faults")
    lease = 2.0
    with sqlite3.connect(out / "results.db") as c:  # a foreign host's claims: one far ahead, one a little ahead
        for row, ahead in ((rows[0], 1e6), (rows[1], lease / 2)):
            c.execute(
                "UPDATE runs SET status = 'running', worker = 'farhost:1', host = 'farhost', pid = 1, "
                "heartbeat = ? WHERE run_id = ?",
                (time.time() + ahead, row["run_id"]),
            )
    capsys.readouterr()
    t0 = time.time()
    assert (
        main(
            [
                "run",
                str(path),
                "--out",
                str(out),
                "--no-progress",
                "--device",
                "cpu",
                "--no-tracking",
                "--lease",
                str(lease),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert time.time() - t0 < 60
    assert err.count("waiting for 1 run(s) held by farhost:1") == 1 and "clock skew" in err
    after = {r["run_id"]: r for r in Store(out / "results.db").rows("faults")}
    assert {r["status"] for r in after.values()} == {DONE} and len(after) == 4
    assert after[rows[0]["run_id"]]["attempts"] == 2 and after[rows[1]["run_id"]]["attempts"] == 2


# ---------------------------------------------------------------- two `run` of one suite at once
def test_two_runs_of_one_suite_started_together_each_say_what_they_ran(tmp_path):
    import re

    path, out = suite_file(tmp_path, epochs=30), tmp_path / "out"
    procs = [ffbench("run", path, "--out", out, "--no-progress", "--device", "cpu") for _ in range(2)]
    outputs = [finish(p) for p in procs]
    assert all(code == 0 for code, _, _ in outputs), outputs
    ran = []
    for _, text, _ in outputs:
        m = re.search(r"ran (\d+) of 4 runs (here this time; (\d+) by other processes|this time)", text)
        assert m, text[-1000:]
        ran.append(int(m.group(1)))
        assert int(m.group(3) or 0) <= 4 - ran[-1]  # what the other process finished meanwhile
    assert sum(ran) == 4  # each counts only its own runs
    assert_complete(out, "faults", 4, 2)


# ---------------------------------------------------------------- nothing written outside the output folder
def files_under(folder: Path) -> set[tuple[Path, int]]:
    """(file, modification time) of every file under ``folder``."""
    return {(p, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("how", ["suite name in the store", "artifact location in mlflow.db", "copied output folder"])
def test_nothing_is_written_outside_the_output_folder(tmp_path, how):
    base = tmp_path / "a" / "b" / "c"
    base.mkdir(parents=True)
    path, out = suite_file(base, methods=["bp"], epochs=1), base / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    assert main(["report", str(path), "--out", str(out)]) == 0  # the experiment and its report run exist
    target = out
    if how == "suite name in the store":
        with sqlite3.connect(out / "results.db") as c:
            c.execute("UPDATE runs SET suite = '../../../outside/trav'")
        args = ["report", "--out", str(out)]
    elif how == "artifact location in mlflow.db":
        with sqlite3.connect(out / "mlflow.db") as c:
            c.execute("UPDATE experiments SET artifact_location = ?", ((tmp_path / "elsewhere").as_uri(),))
            c.execute("UPDATE runs SET artifact_uri = ?", ((tmp_path / "elsewhere").as_uri(),))
        tracking._forget_engine(f"sqlite:///{out / 'mlflow.db'}")
        args = ["report", str(path), "--out", str(out)]
    else:
        import shutil

        target = base / "copy"
        shutil.copytree(out, target)
        args = ["report", str(path), "--out", str(target)]
    tracking._DOWN.clear()
    gc.collect()  # stores the commands above left unreferenced close now: SQLite's last close rewrites results.db
    before = files_under(tmp_path)
    main(args)
    written = {p for p, _ in files_under(tmp_path) - before}
    assert {p for p in written if target.resolve() not in p.resolve().parents} == set()
    assert any(p.name == "index.html" for p in written)  # the reports themselves were written, inside


def test_a_signal_lost_in_a_finalizer_still_stops_the_run_at_the_next_epoch(capsys):
    """A signal handler's exception is swallowed when the signal lands while a finalizer runs (Python calls it
    unraisable): ``check_interrupted``, called at each epoch's end, raises it again, and nothing is printed."""
    from ffbench.execution import pool

    class SignalsWhenFreed:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside the finalizer

    with pytest.raises(pool.Interrupted) as caught:
        with pool.interrupts():
            SignalsWhenFreed()  # freed at once: its finalizer swallows the handler's Interrupted
            for _ in range(1000):  # let the interpreter run its pending handler
                pass
            pool.check_interrupted()  # what the epoch loop calls
            raise AssertionError("the signal was lost")
    assert caught.value.signum == signal.SIGTERM
    assert "Exception ignored" not in capsys.readouterr().err
    pool.check_interrupted()  # outside the block nothing is pending
