"""Live MLflow tracking on a real SQLite MLflow store: a run's epochs are visible while it trains, its child
is RUNNING until the mirror finishes it, replaying the store adds no point, parents last as long as their
cell, and the experiment opens on the run table."""

import textwrap
import time
from dataclasses import replace

import pytest

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402
from suites import suite_toml

from ffbench.execution import runner
from ffbench.execution.workers import work  # noqa: E402
from ffbench.record import tracking  # noqa: E402
from ffbench.record.store import Store  # noqa: E402

SUITE = suite_toml("live", seeds=[0, 1], epochs=3)


def history(client, run_id, key="val_acc"):
    return [(m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key)]


def child_of(client, exp_id, run_id):
    found = client.search_runs([exp_id], f"tags.`ffbench.run_id` = '{run_id}'")
    return found[0] if found else None


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    """The suite run by one worker whose per-epoch hook reads the MLflow store after each epoch."""
    tmp = tmp_path_factory.mktemp("live")
    path = tmp / "live.toml"
    path.write_text(textwrap.dedent(SUITE))
    out = tmp / "out"
    session = runner.open_session(str(path), out)
    env = session.env("cpu")
    client = MlflowClient(session.tracker.uri)
    exp_id = session.tracker.experiment_id
    seen = []  # (run_id, epoch just finished, status of its child, val_acc steps visible in MLflow)

    def look(row, done, total):
        deadline = time.time() + 10  # the write happens off the training thread: wait for it, briefly
        while True:
            child = child_of(client, exp_id, row["run_id"])
            steps = [s for s, _, _ in history(client, child.info.run_id)] if child else []
            if done in steps or time.time() > deadline:
                break
            time.sleep(0.05)
        seen.append((row["run_id"], done, child.info.status if child else None, steps))

    env.progress = look
    assert work(env) == 2
    runner.catch_up(session)
    return out, session, client, exp_id, seen


def test_epochs_are_visible_while_the_run_trains(live_run):
    _, _, _, _, seen = live_run
    first = [s for s in seen if s[1] == 1]
    assert len(first) == 2  # both seeds
    for run_id, _, status, steps in first:
        assert status == "RUNNING" and steps == [1], (run_id, status, steps)
    assert [s[3] for s in seen if s[1] == 3] == [[1, 2, 3], [1, 2, 3]]


def test_the_mirror_finishes_the_streamed_child_without_duplicate_points(live_run):
    out, session, client, exp_id, _ = live_run
    rows = Store(out / "results.db").rows("live")
    kids = client.search_runs([exp_id], "tags.`ffbench.kind` = 'evaluation'")
    assert len(kids) == 2 and {k.info.status for k in kids} == {"FINISHED"}
    for row in rows:
        kid = child_of(client, exp_id, row["run_id"])
        streamed = history(client, kid.info.run_id)
        assert [s for s, _, _ in streamed] == [1, 2, 3]  # once each, streamed and mirrored
        assert [v for _, _, v in streamed] == [c["val_acc"] for c in row["curves"]]
        # timestamps: the run's start plus its training seconds, all from the store (replayable)
        assert [t for _, t, _ in streamed] == [t for _, t, _ in tracking.epoch_points(row["curves"], row["started"])]
        assert kid.info.start_time == round(row["started"] * 1000)


def test_a_replay_from_the_store_writes_the_same_points(live_run):
    out, session, client, exp_id, _ = live_run
    store = Store(out / "results.db")
    row = store.rows("live")[0]
    kid = child_of(client, exp_id, row["run_id"])
    before = {k: history(client, kid.info.run_id, k) for k in ("val_acc", "train_loss", "test_acc")}
    client.delete_tag(kid.info.run_id, tracking.COMPLETE)  # as if the mirror had been cut short
    fresh = tracking.Tracker(session.tracker.uri, out / "mlartifacts")
    fresh.init_experiment("live")
    assert fresh.log_run(row) == kid.info.run_id
    assert {k: history(client, kid.info.run_id, k) for k in before} == before
    assert len(client.search_runs([exp_id], "tags.`ffbench.kind` = 'evaluation'")) == 2


def test_an_abandoned_attempt_is_replaced_not_extended(live_run):
    out, session, client, exp_id, _ = live_run
    row = Store(out / "results.db").rows("live")[1]
    kid = child_of(client, exp_id, row.run_id)
    client.delete_tag(kid.info.run_id, tracking.COMPLETE)
    row = replace(row, started=row.started + 5.0)  # another attempt of the same run (its first worker lost the lease)
    fresh = tracking.Tracker(session.tracker.uri, out / "mlartifacts")
    fresh.init_experiment("live")
    rid = fresh.log_run(row)
    assert rid != kid.info.run_id and client.get_run(kid.info.run_id).info.lifecycle_stage == "deleted"
    assert [s for s, _, _ in history(client, rid)] == [1, 2, 3]


def test_parent_lasts_from_its_first_run_start_to_its_last_run_end(live_run):
    out, _, client, exp_id, _ = live_run
    rows = Store(out / "results.db").rows("live")
    (parent,) = client.search_runs([exp_id], "tags.`ffbench.kind` = 'cell'")
    assert parent.info.status == "FINISHED"
    assert parent.info.start_time == round(min(r["started"] for r in rows) * 1000)
    assert parent.info.end_time == round(max(r["finished"] for r in rows) * 1000)
    assert parent.data.tags["method"] == "bp" and parent.data.tags["verdict_vs_control"] == "control"
    assert "test_acc_mean" in parent.data.metrics


def test_the_experiment_is_a_model_training_one(live_run):
    _, session, client, exp_id, _ = live_run
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
    url = tracking.experiment_url("http://127.0.0.1:5000", exp_id)
    assert url == f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?workflowType=machine_learning"
