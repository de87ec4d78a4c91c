"""Workers: several processes share a suite, each run executes once; killed workers; resume; failures."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from suites import suite_toml

from ffbench.cli import main
from ffbench.execution import results, runner, studies
from ffbench.execution.pool import assign_devices
from ffbench.record.store import DONE, FAILED, RUNNING, Store

TUNING = """
[tuning]
trials = {trials}
seeds = [100]
sampler = "TPESampler"
sampler_args = {{ seed = 0, n_startup_trials = 2 }}
pruner = "NopPruner"
"""


@pytest.fixture(autouse=True)
def one_thread_per_worker(monkeypatch):
    monkeypatch.setenv("FFBENCH_THREADS", "1")  # worker processes share the cores instead of fighting


@pytest.fixture
def write(write_suite):
    """The suite above with the given name, version, methods, epochs and extra sections."""

    def make(name="w", version=1, methods=("bp", "bp.deepsup"), epochs=2, extra="") -> Path:
        text = suite_toml(name, version=version, methods=methods, seeds=[0, 1], epochs=epochs, extra="\n" + extra)
        return write_suite(text, f"{name}-{version}")

    return make


@pytest.mark.slow
def test_two_worker_processes_run_every_run_exactly_once(tmp_path, write):
    from mlflow.tracking import MlflowClient

    path = write(epochs=4, extra=TUNING.format(trials=3))
    s = runner.run_suite(str(path), tmp_path / "out", device="cpu", progress=False, workers=2, lease_s=60)
    suite, design, store = s["suite"], s["design"], s["store"]
    assert s["exit_codes"] == [0, 0], (tmp_path / "out" / "logs" / "worker-0.log").read_text()[-3000:]
    rows = store.rows(suite.name)
    assert len(rows) == len(design.trials) + len(design.runs) == 2 * 3 + 2 * 2
    assert all(r["status"] == DONE and r["attempts"] == 1 for r in rows)  # each run executed exactly once
    assert Counter(r["cell_id"] for r in rows if r["role"] == "tuning") == {c.cell_id: 3 for c in design.cells}
    print("runs per worker:", Counter(r["worker"] for r in rows))
    # MLflow: one parent per cell, one child per run, tuning and evaluation tagged as such
    client = MlflowClient(s["tracking_uri"])
    exp = client.get_experiment_by_name(suite.name)
    mruns = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in mruns if r.data.tags.get("ffbench.kind") == "cell"]
    children = [r for r in mruns if r.data.tags.get("ffbench.kind") in ("tuning", "evaluation")]
    assert len(parents) == len(design.cells)
    assert Counter(r.data.tags["ffbench.run_id"] for r in children) == {r["run_id"]: 1 for r in rows}
    parent_ids = {p.info.run_id for p in parents}
    assert all(r.data.tags["mlflow.parentRunId"] in parent_ids for r in children)
    assert Counter(r.data.tags["ffbench.role"] for r in children) == {"tuning": 6, "evaluation": 4}


def _start_worker(path: Path, out: Path, lease: float) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "ffbench.cli",
        "worker",
        str(path),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--lease",
        str(lease),
        "--poll",
        "0.2",
        "--no-tracking",
        "--no-progress",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())


def _kill_when_running(proc: subprocess.Popen, store: Store, suite: str, role: str, timeout: float = 90) -> list[str]:
    """SIGKILL the worker while it holds a row of ``role`` (a tuning slot: once its Optuna trial is asked);
    return the ids of every row it held when it died (a cell's evaluation seeds are claimed together)."""
    end = time.time() + timeout
    while time.time() < end:
        held = [
            s
            for s in store.states(suite)
            if s["status"] == RUNNING and s["role"] == role and s["worker"] and s["worker"].endswith(f":{proc.pid}")
        ]
        if held and role == "tuning":  # wait until it has asked Optuna for its trial
            held = [h for h in held if store.rows(run_id=h["run_id"])[0]["optuna_trial"] is not None]
        if held:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return sorted(
                s["run_id"]
                for s in store.states(suite)
                if s["status"] == RUNNING and s["worker"] and s["worker"].endswith(f":{proc.pid}")
            )
        assert proc.poll() is None, "the worker exited before it could be killed"
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no {role} run started within {timeout} s")


@pytest.mark.slow
def test_killed_workers_then_restart_lose_and_duplicate_nothing(tmp_path, write):
    lease = 2.0
    path = write(name="k", methods=["bp"], epochs=40, extra=TUNING.format(trials=2))
    out = tmp_path / "out"
    store = Store(out / "results.db")
    # a worker dies (SIGKILL) in the middle of a tuning trial, another in the middle of an evaluation run
    (killed_trial,) = _kill_when_running(_start_worker(path, out, lease), store, "k", "tuning")
    killed_evals = _kill_when_running(_start_worker(path, out, lease), store, "k", "evaluation")
    assert killed_evals and {store.rows(run_id=r)[0]["status"] for r in killed_evals} == {RUNNING}
    # the suite is run again: only what is missing runs, the dead workers' runs are redone
    s = runner.run_suite(str(path), out, device="cpu", progress=False, track=False, lease_s=lease)
    suite, design = s["suite"], s["design"]
    rows = store.rows("k")
    assert sorted(r["run_id"] for r in rows) == sorted(r.run_id for r in design.trials + design.runs)
    assert all(r["status"] == DONE for r in rows)
    attempts = {r["run_id"]: r["attempts"] for r in rows}
    assert attempts.pop(killed_trial) == 2 and [attempts.pop(r) for r in killed_evals] == [2] * len(killed_evals)
    assert set(attempts.values()) == {1}
    # Optuna: the killed trial was marked failed; the budget (store slots) is still exactly 2
    import optuna

    study = optuna.load_study(
        study_name=studies.study_name(suite, design.cells[0]), storage=studies.open_storage(s["optuna_storage"])
    )
    states = Counter(t.state.name for t in study.trials)
    assert states == {"COMPLETE": 2, "FAIL": 1}
    assert s["executed"] >= 2


def test_failures_are_recorded_counted_and_shown(tmp_path, capsys, write):
    # SGD at a learning rate of 10 with momentum 0.99 diverges (an impossible setting, e.g. too large a train_size,
    # or an absurd one, such as a learning rate of 1e6, stops the planner)
    path = write(
        name="f",
        methods=["bp"],
        extra='[methods.bp]\noptimizer = "sgd"\nmomentum = 0.99\n\n'
        '[axes.lr]\ntrain_field = "lr"\nlevels = [0.001, 10.0]',
    )
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--no-tracking", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "2 failed runs (recorded as outcomes):" in out
    assert "seed 0: diverged: training loss" in out
    store = Store(tmp_path / "out" / "results.db")
    failed = store.rows("f", status=FAILED)
    assert len(failed) == 2 and all(r["factors"]["lr"] == 10.0 for r in failed)
    assert "| synthetic | mlp | bp | 10.0 | 0 | 2 | — |" in out
    assert "ran 4 of 4 runs this time (4 finished: 2 done, 2 failed" in out


def test_versions_never_mix(tmp_path, write):
    out = tmp_path / "out"
    v1 = runner.run_suite(
        str(write(name="v", version=1, methods=["bp"], epochs=1)), out, device="cpu", progress=False, track=False
    )
    v2 = runner.run_suite(
        str(write(name="v", version=2, methods=["bp"], epochs=1)), out, device="cpu", progress=False, track=False
    )
    assert v2["executed"] == 2  # nothing of version 1 is reused
    table, frame = results.results_table(v2["store"], v2["suite"], v2["design"])
    assert set(frame["suite_version"]) == {2} and list(table["n"]) == [2]
    assert len(v2["store"].frame("v", version=1)) == 2
    assert not {c.cell_id for c in v1["design"].cells} & {c.cell_id for c in v2["design"].cells}


def test_devices_round_robin(monkeypatch):
    assert assign_devices("cpu", 3) == ["cpu"] * 3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert assign_devices("auto", 3) == ["cuda:0", "cuda:1", "cuda:0"]
    assert assign_devices("cuda:1", 2) == ["cuda:1", "cuda:1"]


def test_launcher_gives_back_the_runs_of_a_dead_local_worker(tmp_path, write):
    path = write(name="r", methods=["bp"], epochs=1)
    s = runner.prepare(str(path), tmp_path / "out")
    store = Store(tmp_path / "out" / "results.db")
    runner.init_suite(s[0], s[1], store)
    run_id = s[1].runs[0].run_id
    assert store.claim(run_id, "vm:4242", 600)
    assert store.release_worker("vm:4242") == 1
    row = store.rows(run_id=run_id)[0]
    assert row["status"] == "pending" and row["worker"] is None


def test_a_one_seed_cell_shows_no_spread_rather_than_nan():
    import pandas as pd

    row = dict(
        dataset="mnist",
        backbone="cnn",
        method="cwc",
        n=1,
        failed=0,
        test_acc_mean=91.4,
        test_acc_sd=float("nan"),
        test_acc_ci_low=float("nan"),
        test_acc_ci_high=float("nan"),
        verdict="control",
        epoch_time_s=457.7,
        saved_MB_per_step=114.9,
    )
    two = {**row, "method": "bp", "n": 2, "test_acc_sd": 0.25, "verdict": None}
    text = results.format_table(pd.DataFrame([row, two]))
    assert "| 91.40 ± — | — |" in text and "| 91.40 ± 0.25 |" in text and "nan" not in text


def test_part_of_a_suite_now_and_the_rest_later(tmp_path, write):
    """--cells / --seeds run part of a suite into the same store (the same run IDs); the whole suite then
    trains only what is left, and a bad pattern or seed is refused naming the allowed values."""
    path, out = write(methods=["bp", "bp.deepsup"], epochs=1), tmp_path / "out"
    whole = runner.prepare(str(path))[1]
    part = runner.run_suite(str(path), out, device="cpu", progress=False, track=False, cells=["bp.*"], seeds=[1])
    assert part["executed"] == 1 and [c.label for c in part["design"].cells] == ["bp.deepsup/synthetic/mlp"]
    done = {r["run_id"] for r in part["store"].states("w", 1) if r["status"] == DONE}
    assert done == {r.run_id for r in whole.runs if r.cell.factors["method"] == "bp.deepsup" and r.seed == 1}
    rest = runner.run_suite(str(path), out, device="cpu", progress=False, track=False)
    assert rest["executed"] == 3 and rest["progress"]["finished"] == 4
    with pytest.raises(runner.SuiteError, match=r"--cells cnn\*: no cell matches; the cells are bp/synthetic/mlp"):
        runner.prepare(str(path), cells=["cnn*"])
    with pytest.raises(runner.SuiteError, match=r"--seeds 5: not an evaluation seed of this suite; allowed: 0,1"):
        runner.prepare(str(path), seeds=[1, 5])


def test_spawned_workers_keep_to_the_part_asked_for(tmp_path, write, capsys):
    path, out = write(methods=["bp", "bp.deepsup"], epochs=1), tmp_path / "out"
    assert (
        main(
            [
                "run",
                str(path),
                "--out",
                str(out),
                "--workers",
                "2",
                "--cells",
                "bp",
                "--seeds",
                "0-1",
                "--no-tracking",
                "--no-progress",
            ]
        )
        == 0
    )
    states = Store(out / "results.db").states("w", 1)
    assert sorted((r["run_id"].endswith(("-s0", "-s1")), r["status"]) for r in states) == [(True, DONE)] * 2
    assert "ran 2 of 2 runs" in capsys.readouterr().out


def test_a_seed_list_shortened_within_a_version_leaves_no_run_pending(tmp_path, write):
    # seeds [0, 1, 2] planned, then the suite lists [0, 1]: seed 2's never-started run goes, the rest stays
    path = write(name="r", methods=["bp"], epochs=1)
    path.write_text(path.read_text().replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    store = Store(tmp_path / "out" / "results.db")
    suite, design, _ = runner.prepare(str(path), tmp_path / "out")
    runner.init_suite(suite, design, store)
    assert store.claim(design.runs[1].run_id, "vm:4242", 600)  # seed 1 running: kept whatever the list says
    path.write_text(path.read_text().replace("seeds = [0, 1, 2]", "seeds = [0]"))
    suite, design, _ = runner.prepare(str(path), tmp_path / "out")
    runner.init_suite(suite, design, store)
    assert sorted((r["seed"], r["status"]) for r in store.rows("r")) == [(0, "pending"), (1, "running")]
    path.write_text(path.read_text().replace("seeds = [0]", "seeds = [0, 1, 2]"))  # listed again: planned again
    suite, design, _ = runner.prepare(str(path), tmp_path / "out")
    runner.init_suite(suite, design, store)
    assert sorted(r["seed"] for r in store.rows("r")) == [0, 1, 2]
