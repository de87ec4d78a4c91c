"""The MLflow mirror as a replayable projection of the store: idempotent writes, sync, parents created once
across processes, and a tracker that degrades instead of blocking when the server is down."""

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("mlflow")  # imported once for the whole module (it is slow)
from mlflow.tracking import MlflowClient  # noqa: E402

from ffbench.core.config import RunConfig  # noqa: E402
from ffbench.record import tracking  # noqa: E402
from ffbench.record.store import DONE, FAILED, Store  # noqa: E402
from ffbench.record.tracking import Tracker, mirror, sync  # noqa: E402

SUITE = "mirror-suite"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def result():
    """What a finished run leaves in the store (the shape train.fit returns): two epochs of curves with
    per-rule and per-unit accuracies, final metrics and compute figures."""
    config = RunConfig("bp", "synthetic", "mlp", seed=0, epochs=2, batch_size=64, backbone_options={"widths": [16]})
    curves = [
        {
            "epoch": e,
            "train_loss": 2.0 / e,
            "val_acc": 0.3 * e,
            "val_acc.unit1": 0.2 * e,
            "test_acc": 0.29 * e,
            "epoch_time_s": 0.01,
        }
        for e in (1, 2)
    ]
    metrics = {
        "val_acc": 0.6,
        "test_acc": 0.58,
        "test_acc.last_epoch": 0.58,
        "test_acc.unit1": 0.4,
        "best_epoch": 2,
        "diverged": float("nan"),
    }
    compute = {"epoch_time_s": 0.01, "images_per_s": 5e4, "saved_bytes_per_step": 1.5e5, "device": "cpu"}
    return config, SimpleNamespace(metrics=metrics, curves=curves, compute=compute)


def make_store(tmp_path, result, n_cells=2, seeds=(0, 1), finish=True) -> Store:
    config, res = result
    store = Store(tmp_path / "results.db")
    rows = []
    for c in range(n_cells):
        factors = {"method": "bp", "dataset": "synthetic", "backbone": "mlp", "lr": c}
        for seed in seeds:
            rows.append(
                {
                    "run_id": f"r{c}s{seed}",
                    "suite": SUITE,
                    "suite_version": 1,
                    "cell_id": f"cell{c}",
                    "role": "evaluation",
                    "seed": seed,
                    "trial": None,
                    "factors": factors,
                    "config": dict(config.to_dict(), seed=seed),
                }
            )
    store.add_runs(rows)
    if finish:
        for r in rows:
            assert store.claim(r["run_id"], "w", 60)
            status = FAILED if r["run_id"] == "r0s1" else DONE
            store.finish(
                r["run_id"],
                "w",
                status,
                metrics=res.metrics,
                curves=res.curves,
                compute=res.compute,
                manifest={"ffbench": "test"},
                error="boom" if status == FAILED else None,
            )
    return store


def tracker_for(tmp_path) -> Tracker:
    t = Tracker(tracking.default_tracking_uri(tmp_path), tmp_path / "mlartifacts")
    assert t.init_experiment(SUITE, 1) is not None and not t.degraded
    return t


def children(t: Tracker, run_id: str | None = None) -> list:
    f = "tags.`ffbench.kind` = 'evaluation'" + (f" and tags.`ffbench.run_id` = '{run_id}'" if run_id else "")
    return MlflowClient(t.uri).search_runs([t.experiment_id], f, max_results=1000)


def parents(t: Tracker) -> list:
    return MlflowClient(t.uri).search_runs([t.experiment_id], "tags.`ffbench.kind` = 'cell'", max_results=1000)


def test_mirroring_a_row_twice_gives_one_complete_child(tmp_path, result):
    store = make_store(tmp_path, result, n_cells=1, seeds=(0,))
    t = tracker_for(tmp_path)
    assert mirror(store, t, "r0s0") and mirror(store, t, "r0s0")
    (child,) = children(t, "r0s0")
    assert child.data.tags[tracking.COMPLETE] == "1" and child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == parents(t)[0].info.run_id
    assert store.rows(run_id="r0s0")[0]["mirrored_to"] == t.uri

    # a mirror cut short (created, half written, never marked): written again, still one child and no
    # duplicated metric history
    client = MlflowClient(t.uri)
    client.delete_tag(child.info.run_id, tracking.COMPLETE)
    store.mark_mirrored("r0s0", None, None)
    assert store.unmirrored(SUITE)[0]["run_id"] == "r0s0"
    assert mirror(store, t, store.unmirrored(SUITE)[0])
    (again,) = children(t, "r0s0")
    assert again.info.run_id == child.info.run_id and again.data.tags[tracking.COMPLETE] == "1"
    assert len(client.get_metric_history(child.info.run_id, "val_acc")) == 2  # two epochs, once each
    assert len(parents(t)) == 1


def test_sync_replays_what_the_store_holds_and_mlflow_lacks(tmp_path, result):
    store = make_store(tmp_path, result, n_cells=2, seeds=(0, 1, 2))
    store.add_runs(
        [
            {
                "run_id": "pending",
                "suite": SUITE,
                "suite_version": 1,
                "cell_id": "cell0",
                "role": "evaluation",
                "seed": 9,
                "trial": None,
                "factors": {"method": "bp"},
                "config": result[0].to_dict(),
            }
        ]
    )
    t = tracker_for(tmp_path)
    assert mirror(store, t, "r1s0")  # one was mirrored live before the interruption
    calls = []
    assert sync(store, SUITE, t, aggregates=lambda: calls.append(1)) == (5, 0)
    assert calls == [1] and store.unmirrored(SUITE) == []
    kids = children(t)
    assert sorted(k.data.tags["ffbench.run_id"] for k in kids) == sorted(
        f"r{c}s{s}" for c in range(2) for s in range(3)
    )
    assert {k.data.tags["ffbench.run_id"]: k.info.status for k in kids}["r0s1"] == "FAILED"
    assert sorted(p.data.tags["ffbench.cell_id"] for p in parents(t)) == ["cell0", "cell1"]
    by_cell = {p.data.tags["ffbench.cell_id"]: p.info.run_id for p in parents(t)}
    assert all(k.data.tags["mlflow.parentRunId"] == by_cell[k.data.tags["ffbench.cell_id"]] for k in kids)
    # a second sync, and a fresh process's tracker, find nothing to do and duplicate nothing
    assert sync(store, SUITE, Tracker(t.uri, tmp_path / "mlartifacts")) == (0, 0)
    assert len(children(t)) == 6 and len(parents(t)) == 2
    # moved to another tracking store: everything counts as missing there, and is replayed
    other = tmp_path / "other"
    t2 = Tracker(tracking.default_tracking_uri(other), other / "mlartifacts")
    assert len(store.unmirrored(SUITE, t2.uri)) == 6
    assert sync(store, SUITE, t2) == (6, 0) and len(children(t2)) == 6


def test_store_migration_adds_the_mirror_column(tmp_path, result):
    store = make_store(tmp_path, result, n_cells=1)
    with store.engine.begin() as c:  # a store from before the column existed
        c.exec_driver_sql("ALTER TABLE runs DROP COLUMN mirrored_to")
    store.engine.dispose()
    reopened = Store(tmp_path / "results.db")
    assert len(reopened.unmirrored(SUITE)) == 2
    reopened.mark_mirrored("r0s0", "abc", "sqlite:///x")
    assert [r["run_id"] for r in reopened.unmirrored(SUITE, "sqlite:///x")] == ["r0s1"]


RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ffbench.record.tracking import Tracker
    out, name = Path(sys.argv[1]), sys.argv[2]
    import mlflow.tracking  # the slow part, before the start line
    (out / f"ready-{name}").touch()
    while not (out / "go").exists():
        time.sleep(0.005)
    t = Tracker(f"sqlite:///{out / 'mlflow.db'}", out / "mlartifacts")
    eid = t.init_experiment("race", 1)
    rid = t.parent_run("cellX", {"method": "bp"}, {"lr": 0.1}, 1)
    print(eid, rid, t.degraded)
""")


def test_three_processes_create_one_parent_on_a_fresh_folder(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(3)
    ]
    deadline = time.time() + 120
    while len(list(tmp_path.glob("ready-*"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    assert not (tmp_path / "mlflow.db").exists()  # nobody has touched the database yet
    (tmp_path / "go").touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-2000:] for _, e in outs]
    lines = [o.split() for o, _ in outs]
    assert all(line[2] == "None" for line in lines), outs  # every initialisation succeeded, none degraded
    assert len({line[0] for line in lines}) == 1 and len({line[1] for line in lines}) == 1
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("race")
    assert len(client.search_runs([exp.experiment_id], "tags.`ffbench.kind` = 'cell'")) == 1


def test_unreachable_server_degrades_quickly_and_never_raises(tmp_path, result, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = make_store(tmp_path, result, n_cells=1)
    t0 = time.perf_counter()
    t = Tracker(f"http://127.0.0.1:{port}", tmp_path / "mlartifacts")
    assert t.init_experiment(SUITE, 1) is None
    first = time.perf_counter() - t0
    assert first < 8 and t.degraded
    t1 = time.perf_counter()
    assert not mirror(store, t, "r0s0")
    assert t.parent_run("c", {}, {}, 1) is None and t.log_cell_summary("c", {}, {}, 1, {"n": 1}, True) is None
    assert sync(store, SUITE, t) == (0, 2)
    assert time.perf_counter() - t1 < 0.5  # later calls do not retry
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: MLflow")]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0]
    assert t.skipped == 3 and "2 finished run(s)" in t.backlog_message(store, SUITE)
    print(f"unreachable server: first call gave up after {first:.2f} s")


def test_short_http_timeouts_and_no_telemetry_by_default(monkeypatch, tmp_path):
    for k in (*tracking.HTTP_DEFAULTS, "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "FFBENCH_MLFLOW_TELEMETRY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "33")  # the user's setting wins
    tracking.configure_environment()
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT
    from mlflow.telemetry.client import get_telemetry_client
    from mlflow.telemetry.utils import is_telemetry_disabled

    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 33 and MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 1
    assert is_telemetry_disabled() and get_telemetry_client() is None
    monkeypatch.setenv("FFBENCH_MLFLOW_TELEMETRY", "1")
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY")
    monkeypatch.delenv("DO_NOT_TRACK")
    tracking.configure_environment()
    assert "MLFLOW_DISABLE_TELEMETRY" not in os.environ and "DO_NOT_TRACK" not in os.environ


def test_without_a_lock_a_duplicate_parent_is_deleted_by_its_creator(tmp_path):
    """The path for tracking servers (no shared file to lock): create, search again, keep the oldest."""
    first, second = tracker_for(tmp_path), tracker_for(tmp_path)
    first.lock = second.lock = None
    kept = first.parent_run("cellY", {"method": "bp"}, {}, 1)
    real_search = second._search
    calls = []

    def stale_search(f, max_results=100):  # the second process searched before the first had created
        calls.append(f)
        return [] if len(calls) == 1 else real_search(f, max_results)

    second._search = stale_search
    time.sleep(0.01)  # start times differ, so 'oldest' is the first one
    assert second.parent_run("cellY", {"method": "bp"}, {}, 1) == kept and len(calls) == 2
    assert [p.info.run_id for p in parents(first)] == [kept]  # the duplicate it made was deleted
