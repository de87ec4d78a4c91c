"""The Ray executor on a real two-node Ray cluster on 127.0.0.1: the same results as a local run, a killed
worker process retried and every run recorded once, a killed driver resumed, tuning with pruning, and a
node without the data."""

import argparse
import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install 'ffbench[ray]')")

from suites import suite_toml

from ffbench.execution import (
    ray_executor,
    runner,
    studies,  # noqa: E402
)
from ffbench.execution.execute import InfrastructureError  # noqa: E402
from ffbench.plan.suite import SuiteError  # noqa: E402
from ffbench.record.store import DONE, PENDING, PRUNED, Store  # noqa: E402

RAY = Path(sys.executable).with_name("ray")
# a loopback-only test cluster: no token authentication (Ray turns it on when ~/.ray/auth_token exists)
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
ENV = {**os.environ, **RAY_ENV, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
os.environ.update(RAY_ENV)


TUNING = """
[tuning]
trials = 4
seeds = [100]
sampler = "RandomSampler"
sampler_args = { seed = 0 }
pruner = "ThresholdPruner"
pruner_args = { lower = 0.95, n_warmup_steps = 0 }
[tuning.space.bp]
lr = ["log", 1e-4, 1e-1]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str]) -> subprocess.Popen:
    """`ray start ...` in its own process group: the node's daemons stay in it after `ray start` returns."""
    p = subprocess.Popen(
        [str(RAY), "start", *args, "--disable-usage-stats"],
        env=ENV,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out, _ = p.communicate(timeout=120)
    if p.returncode:
        raise RuntimeError(f"ray start failed:\n{out[-3000:]}")
    return p


def _stop_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        time.sleep(2)


@pytest.fixture(scope="session")
def cluster():
    """A head and a worker node, one CPU each, as separate process groups; stopped at the end."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    groups = []
    try:
        groups.append(
            _start(
                [
                    "--head",
                    "--node-ip-address",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--num-cpus",
                    "1",
                    "--include-dashboard=false",
                ]
            ).pid
        )
        groups.append(_start(["--address", address, "--node-ip-address", "127.0.0.1", "--num-cpus", "1"]).pid)
        yield {"address": address, "head": groups[0], "worker": groups[1]}
    finally:
        for g in reversed(groups):
            _stop_group(g)
        current = Path("/tmp/ray/ray_current_cluster")  # written by our `ray start --head`
        if current.exists() and current.read_text().strip().endswith(f":{port}"):
            current.unlink(missing_ok=True)


@pytest.fixture
def write(write_suite):
    def make(name, methods=("bp",), seeds=(0, 1), epochs=2, width=16, dataset="synthetic", extra="", suite=None):
        text = suite_toml(
            name,
            methods=methods,
            datasets=[dataset],
            seeds=seeds,
            epochs=epochs,
            widths=[width],
            extra=extra,
            suite=suite,
        )
        return write_suite(text, name)

    return make


def on_ray(cluster, path, out, **kw):
    kw.setdefault("progress", False)
    return ray_executor.run_suite(str(path), out, device="cpu", address=cluster["address"], **kw)


def by_id(store, suite):
    return {r["run_id"]: r for r in store.rows(suite)}


def mlflow_children(summary) -> Counter:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(summary["tracking_uri"])
    exp = client.get_experiment_by_name(summary["suite"].name)
    runs = client.search_runs([exp.experiment_id], "tags.`ffbench.kind` != 'cell'", max_results=1000)
    return Counter(r.data.tags.get("ffbench.run_id") for r in runs if "ffbench.run_id" in r.data.tags)


def _no_time(curves):
    return [{k: v for k, v in c.items() if k != "epoch_time_s"} for c in curves]


# ---------------------------------------------------------------- no cluster needed
def test_options_are_checked_with_clear_messages():
    parser = argparse.ArgumentParser()
    ray_executor.add_ray_arguments(parser)
    args = parser.parse_args(["--executor", "ray", "--ray-address", "ray://head:10001", "--ray-cpus-per-run", "2"])
    assert ray_executor.ray_options(args) == {
        "address": "ray://head:10001",
        "cpus_per_run": 2,
        "max_retries": 2,
        "data_dir": None,
    }
    with pytest.raises(SuiteError, match=r"--ray-address 'head'.*auto, host:port.*ray://host:port"):
        ray_executor.RayOptions(address="head").check()
    with pytest.raises(SuiteError, match=r"--ray-cpus-per-run 0: must be a whole number >= 1"):
        ray_executor.RayOptions(cpus_per_run=0).check()
    with pytest.raises(SuiteError, match=r"--workers 2: with --executor ray"):
        ray_executor.run_suite("quick", workers=2)


def test_board_keeps_the_latest_value_and_the_verdict():
    b = ray_executor.TrialBoard()
    b.report("r1", 0, 0.2)
    b.report("r1", 1, 0.4)
    assert b.drain() == [("r1", 1, 0.4)] and b.drain() == []
    assert b.verdict("r1", 1) is None  # not judged yet: the task waits
    b.decide("r1", 1, True)
    assert b.verdict("r1", 1) is True and b.verdict("r1", 2) is None
    b.forget("r1")
    assert b.verdict("r1", 1) is None


# ---------------------------------------------------------------- on the cluster
def test_ray_gives_the_same_results_as_a_local_run(cluster, tmp_path, write):
    path = write("same", methods=["bp", "bp.deepsup"])
    local = runner.run_suite(str(path), tmp_path / "local", device="cpu", progress=False, track=False)
    remote = on_ray(cluster, path, tmp_path / "ray")
    a, b = by_id(local["store"], "same"), by_id(remote["store"], "same")
    assert set(a) == set(b) and len(a) == 4 and remote["executed"] == 4
    for rid in a:
        assert b[rid]["status"] == a[rid]["status"] == DONE
        assert b[rid]["metrics"] == a[rid]["metrics"], rid  # same seeds, same numbers, bit for bit
        assert _no_time(b[rid]["curves"]) == _no_time(a[rid]["curves"])
        m = b[rid]["manifest"]
        assert (
            m["executor"] == "ray"
            and m["host"] == socket.gethostname()
            and m["streams"] == a[rid]["manifest"]["streams"]
        )
    assert len({r["manifest"]["ray"]["node_id"] for r in b.values()}) == 2  # both nodes took runs
    assert mlflow_children(remote) == {rid: 1 for rid in a}


def _ray_task_pids(pgid: int) -> list[int]:
    """The worker processes of one node executing a run right now: their parent, the node's raylet, is in
    the node's process group (Ray gives its workers groups of their own)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if not (d / "cmdline").read_bytes().startswith(b"ray::run_task"):
                continue
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if os.getpgid(ppid) == pgid:
                pids.append(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def test_a_killed_worker_process_is_retried_and_every_run_recorded_once(cluster, tmp_path, write):
    path = write("kill", seeds=[0, 1, 2], epochs=120, width=64)  # about 1.5 s of training per run
    killed: list[int] = []
    over = threading.Event()

    def killer():
        while not over.is_set() and not killed:
            pids = _ray_task_pids(cluster["worker"])
            if pids:
                time.sleep(0.3)  # mid-task: its data is loaded and it trains
                os.kill(pids[0], signal.SIGKILL)  # (without a retry its run could not end up done)
                killed.append(pids[0])
            time.sleep(0.1)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        s = on_ray(cluster, path, tmp_path / "out", max_retries=2)
    finally:
        over.set()
        t.join()
    assert killed, "no task ran on the worker node"
    rows = s["store"].rows("kill")
    assert len(rows) == 3 and all(r["status"] == DONE and r["attempts"] == 1 for r in rows)
    assert all(r["manifest"]["ray"]["worker_pid"] != killed[0] for r in rows)  # the killed one was redone
    assert s["executed"] == 3
    assert mlflow_children(s) == {r["run_id"]: 1 for r in rows}  # no MLflow duplicates


DRIVER = """
import sys
from ffbench.execution import ray_executor, runner
try:
    ray_executor.run_suite(sys.argv[1], sys.argv[2], device="cpu", address=sys.argv[3], progress=False)
except BaseException as exc:  # as the command does: one line and the exit status
    code = runner.stopped(exc)
    if code is None:
        raise
    sys.exit(code)
"""


def _driver_until(cluster, path, out, done: int, store=None):
    """A driver in its own process, running until the store holds ``done`` finished runs."""
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(path), str(out), cluster["address"]],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    end = time.time() + 150
    while time.time() < end:
        if store is None and (out / "results.db").exists():
            store = Store(out / "results.db")
        if store is not None and store.status_counts("crash").get(DONE, 0) >= done:
            return driver, store
        assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
        time.sleep(0.2)
    raise AssertionError("the driver recorded nothing")


@pytest.mark.slow
def test_a_killed_driver_resumes_with_only_the_missing_runs(cluster, tmp_path, write):
    # a few seconds per run, one task each: the driver is still running when it is stopped
    path = write("crash", seeds=[0, 1, 2, 3, 4, 5], epochs=400, width=64, suite={"batch_seeds": False})
    out = tmp_path / "out"
    driver, store = _driver_until(cluster, path, out, 1)
    driver.send_signal(signal.SIGTERM)  # stops cleanly: tasks cancelled, their rows given back
    assert driver.wait(timeout=60) == 143, driver.stderr.read().decode()[-3000:]
    assert "interrupted:" in driver.stderr.read().decode()
    assert store.status_counts("crash").get("running", 0) == 0
    driver, store = _driver_until(cluster, path, out, store.status_counts("crash").get(DONE, 0) + 1, store)
    driver.kill()  # a crash: its claims are held by a process that no longer exists
    driver.wait()
    before = {r["run_id"]: r for r in store.rows("crash")}
    done_before = {rid for rid, r in before.items() if r["status"] == DONE}
    assert 2 <= len(done_before) < 6
    s = on_ray(cluster, path, out)
    rows = {r["run_id"]: r for r in s["store"].rows("crash")}
    assert all(r["status"] == DONE for r in rows.values()) and len(rows) == 6
    assert s["executed"] == 6 - len(done_before)  # only what was missing
    assert all(rows[rid]["finished"] == before[rid]["finished"] for rid in done_before)  # not redone
    assert mlflow_children(s) == {rid: 1 for rid in rows}


def test_tuning_through_ray_prunes_as_locally(cluster, tmp_path, write):
    path = write("tune", seeds=[0], extra=TUNING)
    local = runner.run_suite(str(path), tmp_path / "local", device="cpu", progress=False, track=False)
    remote = on_ray(cluster, path, tmp_path / "ray")
    a, b = by_id(local["store"], "tune"), by_id(remote["store"], "tune")
    assert set(a) == set(b)
    slots = sorted(rid for rid in a if a[rid]["role"] == "tuning")
    assert len(slots) == 4  # the equal budget: the same slots
    statuses = Counter(a[rid]["status"] for rid in slots)
    assert statuses[PRUNED] >= 1 and statuses[DONE] >= 1, statuses  # the test needs both outcomes
    for rid in slots:  # the same parameters (seeded per slot), the same verdicts of the pruner
        assert (b[rid]["status"], b[rid]["params"]) == (a[rid]["status"], a[rid]["params"]), rid
        if b[rid]["status"] == PRUNED:
            assert b[rid]["metrics"]["pruned_at_step"] == a[rid]["metrics"]["pruned_at_step"]
    evals = [rid for rid in a if a[rid]["role"] == "evaluation"]
    assert evals and all(b[rid]["metrics"] == a[rid]["metrics"] for rid in evals)  # the same chosen trial
    cell = remote["design"].cells[0]
    study = studies.load_study(studies.open_storage(remote["optuna_storage"]), remote["suite"], cell, 0)
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    assert states == {"PRUNED": statuses[PRUNED], "COMPLETE": statuses[DONE]}


def _write_mnist(folder: Path, n_train=120, n_test=40) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 255, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 255, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, arr in arrays.items():
        head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        with gzip.open(folder / f"{name}.gz", "wb") as f:
            f.write(head + arr.astype(np.uint8).tobytes())


def test_a_node_without_the_data_stops_the_suite_naming_node_and_path(cluster, tmp_path, write):
    import ray

    data = tmp_path / "mnist-here-only"
    _write_mnist(data)
    path = write("nodata", seeds=[0], dataset="mnist", extra=f'[datasets.mnist]\nroot = "{data}"\n')
    s = runner.open_session(str(path), tmp_path / "out", track=False)  # the driver has the data ...
    shutil.rmtree(data)  # ... the nodes do not
    ray_executor.connect(cluster["address"])
    try:
        with pytest.raises(InfrastructureError) as err:
            ray_executor.execute(s, ray_executor.RayOptions(cluster["address"]), device="cpu")
    finally:
        ray.shutdown()
    message = str(err.value)
    assert f"on node {socket.gethostname()}" in message and str(data) in message and "DataNotFoundError" in message
    assert "stays pending" in message
    assert [r["status"] for r in s.store.rows("nodata")] == [PENDING]  # not a method's failure
