"""The foundation end to end: a real suite into a real store and a real MLflow database."""

import pytest
from mlflow.tracking import MlflowClient

from ffbench.cli import main
from ffbench.execution.runner import run_suite
from ffbench.record.store import Store


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    first = run_suite("smoke", out, device="cpu", progress=False)
    return out, first


def test_every_run_is_stored_with_config_metrics_and_manifest(smoke):
    out, first = smoke
    assert first["executed"] == 4
    rows = Store(out / "results.db").rows("smoke")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"done"}
    r = rows[0]
    assert r["config"]["epochs"] == 2 and r["config"]["backbone_options"] == {
        "widths": [32, 32],
        "granularity": "layer",
    }
    assert 0 <= r["metrics"]["test_acc"] <= 1 and len(r["curves"]) == 2
    assert r["compute"]["saved_bytes_per_step"] > 0 and r["compute"]["epoch_time_s"] > 0
    assert set(r["manifest"]) >= {"torch", "git_commit", "git_dirty", "device", "streams"}
    # two methods with the same seed see the same split and order: common random numbers
    by = {(row["factors"]["method"], row["seed"]): row for row in rows}
    assert by[("bp", 0)]["manifest"]["streams"] == by[("bp.deepsup", 0)]["manifest"]["streams"]
    assert by[("bp", 0)]["manifest"]["streams"] != by[("bp", 1)]["manifest"]["streams"]


def test_rerun_skips_finished_runs(smoke):
    out, _ = smoke
    again = run_suite("smoke", out, device="cpu", progress=False)
    assert again["executed"] == 0
    assert len(Store(out / "results.db").rows("smoke")) == 4


def test_mlflow_hierarchy_suite_cell_seed(smoke):
    out, _ = smoke
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    assert exp.artifact_location.startswith("file://" + str(out))
    parents = client.search_runs([exp.experiment_id], "tags.`ffbench.kind` = 'cell'")
    assert sorted(p.data.tags["method"] for p in parents) == ["bp", "bp.deepsup"]
    for parent in parents:
        assert parent.data.tags["dataset"] == "synthetic" and parent.data.tags["cfg.epochs"] == "2"
        assert parent.data.metrics["n"] == 2 and "test_acc_mean" in parent.data.metrics
        children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        assert sorted(c.data.tags["seed"] for c in children) == ["0", "1"]
        child = children[0]
        assert child.data.tags["ffbench.role"] == "evaluation" and child.info.status == "FINISHED"
        history = client.get_metric_history(child.info.run_id, "val_acc")
        assert [m.step for m in history] == [1, 2]


def test_cli_run_prints_table_and_locations(smoke, capsys):
    out, _ = smoke
    assert main(["run", "smoke", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "| synthetic | mlp | bp | 2 | 0 |" in text and "±" in text
    assert str(out / "results.db") in text and "mlflow.db" in text
    assert (out / "table.md").exists() and (out / "results.csv").exists()


def test_report_command_writes_reports_and_attaches_them_to_mlflow(smoke, capsys):
    out, _ = smoke
    assert main(["report", "smoke", "--out", str(out), "--resamples", "500"]) == 0
    assert (out / "reports" / "smoke" / "comparison.html").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    suite_run = client.search_runs([exp.experiment_id], "tags.`ffbench.kind` = 'suite'")[0]
    assert "report/comparison.html" in [a.path for a in client.list_artifacts(suite_run.info.run_id, "report")]
    cells = client.search_runs([exp.experiment_id], "tags.`ffbench.kind` = 'cell'")
    verdicts = {c.data.tags["method"]: c.data.tags["verdict_vs_control"] for c in cells}
    assert verdicts["bp"] == "control" and verdicts["bp.deepsup"] in {
        "better",
        "worse",
        "equivalent",
        "insufficient evidence",
    }
    # two seeds: no bootstrap interval (n < 3), so too little evidence for any verdict but "control"
    assert verdicts["bp.deepsup"] == "insufficient evidence"
    assert all(c.data.metrics["n"] == 2 and "test_acc_mean" in c.data.metrics for c in cells)
