"""A run stopped mid-way resumes from its last epoch checkpoint and ends exactly as if it never stopped:
per method in-process, and with a real worker process killed with SIGKILL."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from suites import suite_toml

from ffbench.core.config import RunConfig
from ffbench.record.store import DONE, Store
from ffbench.training.checkpoint import Checkpoint
from ffbench.training.train import fit

CNN = {"channels": [8, 16], "pool": [1]}
CASES = {  # every shipped method on a backbone it trains, a few seconds each on digits
    "bp": ("mlp", {"widths": [32, 32]}, {}),
    "bp.deepsup": ("cnn", CNN, {}),
    "ff.hinton": ("mlp", {"widths": [32, 32]}, {"eval_every": 2}),  # a checkpoint after an unevaluated epoch
    "cwc": ("cnn.cfse", {"channels": [10, 20, 20, 40]}, {"batch_size": 128}),
    "sff": ("cnn", CNN, {"crop_padding": 1, "flip": True}),  # the augmentation stream too
    "asge": ("vgg.asge", {"channels": [8, 16], "pool": [1]}, {}),
    # a greedy schedule resumed inside it, with M_0's input unit
    "monoforward": ("mlp", {"widths": [32, 32]}, {"method_options": {"training": "greedy", "m0_input_head": True}}),
    "pepita": ("mlp", {"widths": [32]}, {"optimizer": "sgd", "lr": 0.1}),  # dropout masks; decay after epoch 2
}


class Stop(Exception):
    pass


def config(method: str) -> RunConfig:
    backbone, options, train = CASES[method]
    return RunConfig(
        method=method, dataset="digits", backbone=backbone, epochs=3, seed=3, backbone_options=options, **train
    )


def stop_after(epoch: int):
    def on_epoch(row):
        if row["epoch"] == epoch:
            raise Stop

    return on_epoch


def without_time(curves):
    return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in curves]


@pytest.fixture
def every_epoch(monkeypatch):
    monkeypatch.setenv("FFBENCH_CHECKPOINT_S", "0")


@pytest.mark.parametrize("method", sorted(CASES))
def test_a_resumed_run_equals_one_that_never_stopped(method, tmp_path, every_epoch):
    cfg, path = config(method), tmp_path / "run.pt"
    whole = fit(cfg, "cpu")
    with pytest.raises(Stop):
        fit(cfg, "cpu", on_epoch=stop_after(2), checkpoint=str(path))
    assert path.exists()
    resumed = fit(cfg, "cpu", checkpoint=str(path))
    assert resumed.status == whole.status == "done"
    assert [r["epoch"] for r in resumed.curves] == [1, 2, 3]
    assert without_time(resumed.curves) == without_time(whole.curves)
    assert resumed.metrics == whole.metrics
    assert resumed.compute["saved_bytes_per_step"] == whole.compute["saved_bytes_per_step"]
    threads = torch.get_num_threads()
    assert resumed.manifest["resumed"] == [{"after_epoch": 2, "threads": threads, "saved_with_threads": threads}]
    assert "resumed" not in whole.manifest


def test_a_checkpoint_of_another_configuration_or_a_torn_file_is_ignored(tmp_path, every_epoch):
    path = tmp_path / "run.pt"
    with pytest.raises(Stop):
        fit(config("bp"), "cpu", on_epoch=stop_after(1), checkpoint=str(path))
    other = RunConfig(**{**config("bp").to_dict(), "lr": 3e-3})
    assert Checkpoint(path, other.to_dict()).load() is None
    r = fit(other, "cpu", checkpoint=str(path))
    assert "resumed" not in r.manifest and len(r.curves) == 3
    path.write_bytes(b"torn")
    assert Checkpoint(path, config("bp").to_dict()).load() is None


def test_no_checkpoint_before_its_interval_and_none_for_the_last_epoch(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    monkeypatch.setenv("FFBENCH_CHECKPOINT_S", "3600")
    with pytest.raises(Stop):
        fit(config("bp"), "cpu", on_epoch=stop_after(2), checkpoint=str(path))
    assert not path.exists()  # a short run pays nothing
    monkeypatch.setenv("FFBENCH_CHECKPOINT_S", "0")
    fit(config("bp"), "cpu", checkpoint=str(path))
    # the last epoch saves nothing: the state after epoch 2 stays until the worker has recorded the result
    assert Checkpoint(path, config("bp").to_dict()).load()["epoch"] == 2


ROOT = Path(__file__).resolve().parent.parent
SUITE = suite_toml("resume", datasets=["digits"], epochs=40, batch_size=None, widths=[64, 64])


def test_a_sigkilled_worker_resumes_from_its_checkpoint(tmp_path):
    suite = tmp_path / "resume.toml"
    suite.write_text(SUITE)
    env = {
        "PYTHONPATH": str(ROOT),
        "FFBENCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "FFBENCH_CHECKPOINT_S": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PATH": "/usr/bin:/bin",
    }
    cmd = [sys.executable, "-m", "ffbench.cli", "run", str(suite), "--no-progress", "--device", "cpu", "--no-tracking"]
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    proc = subprocess.Popen([*cmd, "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    saved = out / "checkpoints"
    end = time.time() + 120
    while not list(saved.glob("*.pt")):  # an epoch's state is on disk
        assert proc.poll() is None and time.time() < end, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert Store(out / "results.db").rows("resume")[0]["status"] != DONE
    done = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert not list(saved.glob("*.pt"))  # recorded: the checkpoint is gone
    (row,) = Store(out / "results.db").rows("resume")
    after = row["manifest"]["resumed"][0]["after_epoch"]
    assert row["status"] == DONE and 1 <= after < 40
    ref = subprocess.run([*cmd, "--out", str(fresh)], env=env, capture_output=True, text=True, timeout=240)
    assert ref.returncode == 0, ref.stderr
    (clean,) = Store(fresh / "results.db").rows("resume")
    assert "resumed" not in clean["manifest"]
    assert row["metrics"] == clean["metrics"]
    assert without_time(row["curves"]) == without_time(clean["curves"])


class Hostile:
    """Unpickled, it would create a marker file: a loader that ran it would be executing the file's code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def signed(path, cfg: RunConfig, content: bytes) -> bytes:
    """``content`` as a checkpoint file that verifies (made with the output folder's own key)."""
    from ffbench.training import checkpoint

    digest = checkpoint._digest(checkpoint._key(path.parent), checkpoint.binding(path.stem, cfg.to_dict()), content)
    return checkpoint.MAGIC + digest.encode() + b"\n" + content


@pytest.mark.parametrize(
    "forgery",
    [
        "unsigned, finished, 0.999",
        "signed, finished, 0.999",
        "another run's",
        "missing key",
        "wrong shape",
        "hostile pickle",
        "signed hostile pickle",
    ],
)
def test_a_forged_or_damaged_checkpoint_is_discarded_and_the_run_trains_from_the_start(
    tmp_path, every_epoch, capsys, forgery
):
    import io
    import pickle

    cfg, path, marker = config("bp"), tmp_path / "ckpt" / "run-a.pt", tmp_path / "marker"
    whole = fit(cfg, "cpu")
    with pytest.raises(Stop):
        fit(cfg, "cpu", on_epoch=stop_after(1), checkpoint=str(path))
    state = torch.load(io.BytesIO(path.read_bytes().partition(b"\n")[2]), weights_only=True)
    made_up = {
        **state,
        "epoch": cfg.epochs,
        "metrics": {**state["metrics"], "test_acc": 0.999},
        "curves": state["curves"] * cfg.epochs,
    }
    saver = Checkpoint(path, cfg.to_dict())
    if forgery == "unsigned, finished, 0.999":
        torch.save(made_up, path)
    elif forgery == "signed, finished, 0.999":
        saver.save({k: v for k, v in made_up.items() if k not in ("format", "config")})
    elif forgery == "another run's":
        with pytest.raises(Stop):
            fit(cfg, "cpu", on_epoch=stop_after(1), checkpoint=str(path.with_name("run-b.pt")))
        path.with_name("run-b.pt").replace(path)
    elif forgery == "missing key":
        saver.save({k: v for k, v in state.items() if k not in ("format", "config", "optimizers")})
    elif forgery == "wrong shape":
        method = {k: torch.zeros(*(s + 1 for s in v.shape)) if v.dim() else v for k, v in state["method"].items()}
        saver.save({**{k: v for k, v in state.items() if k not in ("format", "config")}, "method": method})
    elif forgery == "hostile pickle":
        path.write_bytes(pickle.dumps({"epoch": Hostile(marker)}))
    else:
        path.write_bytes(signed(path, cfg, pickle.dumps({"epoch": Hostile(marker)})))
    r = fit(cfg, "cpu", checkpoint=str(path))
    assert not marker.exists()
    assert r.status == "done" and "resumed" not in r.manifest and len(r.curves) == cfg.epochs
    assert without_time(r.curves) == without_time(whole.curves) and r.metrics["test_acc"] == whole.metrics["test_acc"]
    assert "discarded" in capsys.readouterr().err
