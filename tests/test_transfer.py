"""Transfer: the pretraining stage (saved, hashed, reused, loaded with weights_only), the adaptation modes
(what trains, what stays exactly as the source left it), the suite's [transfer] section and its checks."""

import json
import textwrap

import pytest
import torch
from suites import suite_toml

from ffbench.core.config import RunConfig
from ffbench.core.seeds import Streams
from ffbench.data.data import prepare
from ffbench.execution import runner
from ffbench.plan.design import expand
from ffbench.plan.suite import SuiteError, load
from ffbench.training import transfer
from ffbench.training.train import build, fit

MLP = {"widths": [32, 32]}
SOURCE = RunConfig(
    method="sff", dataset="digits", backbone="mlp", epochs=1, keep_classes=[0, 1, 2, 3, 4], backbone_options=MLP
).without_seed()


def target(method="sff", adapt="fine-tune", **kw):
    source = {**SOURCE, "method": method}
    return RunConfig(
        method=method,
        dataset="digits",
        backbone="mlp",
        epochs=kw.pop("epochs", 1),
        seed=kw.pop("seed", 0),
        keep_classes=[5, 6, 7, 8, 9],
        backbone_options=MLP,
        adapt=adapt,
        source=source,
        **kw,
    )


def built(config):
    streams = Streams(config.seed)
    data = prepare(config.dataset, streams, torch.device("cpu"), keep_classes=config.keep_classes)
    return build(config, data, streams, torch.device("cpu"))


def test_a_source_is_trained_once_saved_with_its_hash_and_reused(tmp_path, monkeypatch):
    loads = []
    real_load = torch.load

    def spy(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    state, info = transfer.pretrained(target(), torch.device("cpu"), tmp_path)
    assert not info["reused"] and info["seed"] == 0
    pt, meta = tmp_path / f"{info['key']}.pt", tmp_path / f"{info['key']}.json"
    sidecar = json.loads(meta.read_text())
    assert sidecar["sha256"] == transfer.sha256(pt) == info["sha256"]
    assert sidecar["config"]["keep_classes"] == [0, 1, 2, 3, 4] and 0 < sidecar["test_acc"] <= 1
    mtime = pt.stat().st_mtime_ns
    again, info2 = transfer.pretrained(target(adapt="linear-probe"), torch.device("cpu"), tmp_path)  # another cell
    assert info2["reused"] and info2["key"] == info["key"] and pt.stat().st_mtime_ns == mtime
    assert all(torch.equal(state[k], again[k]) for k in state)
    assert loads and all(w is True for w in loads)  # only ever weights_only
    other_seed = transfer.pretrained(target(seed=1), torch.device("cpu"), tmp_path)[1]
    assert other_seed["key"] != info["key"] and not other_seed["reused"]


def test_a_run_that_trains_its_source_equals_one_that_reuses_it(tmp_path):
    first = fit(target("sff", "fine-tune", epochs=2), "cpu", weights_dir=str(tmp_path))
    again = fit(target("sff", "fine-tune", epochs=2), "cpu", weights_dir=str(tmp_path))
    assert not first.manifest["source"]["reused"] and again.manifest["source"]["reused"]
    assert [r["train_loss"] for r in first.curves] == [r["train_loss"] for r in again.curves]
    assert first.metrics["test_acc"] == again.metrics["test_acc"]


def test_a_checkpoint_that_does_not_match_its_hash_is_trained_again(tmp_path):
    _, info = transfer.pretrained(target(), torch.device("cpu"), tmp_path)
    pt = tmp_path / f"{info['key']}.pt"
    pt.write_bytes(pt.read_bytes()[:-8] + b"tampered")
    _, again = transfer.pretrained(target(), torch.device("cpu"), tmp_path)
    assert not again["reused"] and again["sha256"] == transfer.sha256(pt)


def test_a_target_run_starts_from_exactly_the_source_weights(tmp_path):
    config = target()
    state, _ = transfer.pretrained(config, torch.device("cpu"), tmp_path)
    method = built(config)
    fresh = {k: v.clone() for k, v in method.backbone.state_dict().items()}
    transfer.start(method, config, *transfer.pretrained(config, torch.device("cpu"), tmp_path))
    now = method.backbone.state_dict()
    assert set(now) == set(state) and all(torch.equal(now[k], state[k]) for k in state)
    assert not all(torch.equal(fresh[k], state[k]) for k in state)  # the load changed something


@pytest.mark.parametrize("method", ["bp", "sff", "bp.deepsup", "ff.hinton"])
def test_linear_probe_leaves_the_backbone_exactly_as_the_source_trained_it(tmp_path, method):
    config = target(method, "linear-probe", epochs=2)
    state, _ = transfer.pretrained(config, torch.device("cpu"), tmp_path)
    r = fit(config, "cpu", weights_dir=str(tmp_path), keep_model=True)
    assert r.status == "done", r.error
    backbone = r.model.backbone
    assert all(torch.equal(backbone.state_dict()[k], state[k]) for k in state)
    assert all(p.grad is None for p in backbone.parameters())  # no gradient ever reached it
    assert 0 < r.compute["trainable_params"] < r.compute["n_params"]
    assert r.manifest["source"]["sha256"] == transfer.sha256(tmp_path / f"{r.manifest['source']['key']}.pt")


def test_frozen_batchnorm_keeps_the_source_statistics(tmp_path):
    cnn = {"channels": [8, 10], "pool": [1]}
    source = RunConfig(
        method="bp", dataset="digits", backbone="cnn", epochs=1, keep_classes=[0, 1, 2, 3, 4], backbone_options=cnn
    ).without_seed()
    config = RunConfig(
        method="bp",
        dataset="digits",
        backbone="cnn",
        epochs=2,
        keep_classes=[5, 6, 7, 8, 9],
        backbone_options=cnn,
        adapt="last-k-units",
        adapt_units=1,
        source=source,
    )
    state, _ = transfer.pretrained(config, torch.device("cpu"), tmp_path)
    r = fit(config, "cpu", weights_dir=str(tmp_path), keep_model=True)
    now = r.model.backbone.state_dict()
    first = [k for k in state if k.startswith("units.0.")]
    assert any("running_mean" in k for k in first)
    assert all(torch.equal(now[k], state[k]) for k in first)  # unit 1: weights and BatchNorm statistics as loaded
    assert not all(torch.equal(now[k], state[k]) for k in state if k.startswith("units.1."))  # unit 2 trained


def test_the_modes_train_what_they_say(tmp_path):
    counts = {}
    for mode in ("fine-tune", "linear-probe", "local-heads-only", "last-k-units"):
        method = built(target("sff", mode))
        transfer.start(
            method, target("sff", mode), *transfer.pretrained(target("sff", mode), torch.device("cpu"), tmp_path)
        )
        counts[mode] = sum(p.numel() for p in method.parameters() if p.requires_grad)
    units = [sum(p.numel() for p in u.parameters()) for u in method.backbone.units]
    heads = [sum(p.numel() for p in h.parameters()) for h in method.heads]
    assert counts["fine-tune"] == sum(units) + sum(heads)
    assert counts["linear-probe"] == heads[-1]  # the final head only
    assert counts["local-heads-only"] == sum(heads)
    assert counts["last-k-units"] == units[-1] + sum(heads)


SUITE = suite_toml(
    "tr",
    methods=["sff", "bp"],
    datasets=["digits"],
    seeds=[0, 1],
    batch_size=None,
    train={"keep_classes": [5, 6, 7, 8, 9], "val_size": 100},
    widths=[32, 32],
)
TRANSFER = """
[transfer]
dataset = "digits"
classes = [0, 1, 2, 3, 4]
epochs = 1

[axes]
adapt = ["scratch", "linear-probe", "local-heads-only", "fine-tune"]
"""


def write(tmp_path, text, name="tr.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_transfer_suite_runs_and_cells_share_their_source(tmp_path):
    s = runner.run_suite(
        str(write(tmp_path, SUITE + TRANSFER)), tmp_path / "out", device="cpu", progress=False, track=False
    )
    rows = [r for r in s["store"].rows("tr") if r["role"] == "evaluation"]
    assert len(rows) == 2 * 7 and all(r["status"] == "done" for r in rows)  # bp has no local-heads-only
    scratch = [r for r in rows if r["factors"]["adapt"] == "scratch"]
    assert all(r["config"]["source"] is None and "source" not in r["manifest"] for r in scratch)
    adapted = [r for r in rows if r["factors"]["adapt"] != "scratch"]
    keys = {(r["config"]["method"], r["seed"]): set() for r in adapted}
    for r in adapted:
        keys[(r["config"]["method"], r["seed"])].add(r["manifest"]["source"]["key"])
    assert all(len(k) == 1 for k in keys.values()) and len({next(iter(k)) for k in keys.values()}) == 4
    assert len(list((tmp_path / "out" / "pretrained").glob("*.pt"))) == 4  # (sff, bp) x 2 seeds, trained once
    source = adapted[0]["config"]["source"]
    assert source["keep_classes"] == [0, 1, 2, 3, 4] and source["epochs"] == 1 and source["train_subset"] is None


def test_suite_mistakes_are_named_before_anything_trains(tmp_path):
    with pytest.raises(SuiteError, match=r"adapt = 'fine-tune'.*needs a \[transfer\] section"):
        expand(load(str(write(tmp_path, SUITE + '\n[axes]\nadapt = ["fine-tune"]\n'))))
    with pytest.raises(SuiteError, match=r"\[transfer\] names a source but no run adapts"):
        expand(load(str(write(tmp_path, SUITE + '\n[transfer]\ndataset = "digits"\nepochs = 1\n'))))
    with pytest.raises(SuiteError, match=r"\[transfer\]\.epochs: missing"):
        load(str(write(tmp_path, SUITE + '\n[transfer]\ndataset = "digits"\n')))
    with pytest.raises(SuiteError, match=r"\[transfer\]\.method: unknown method 'spf'.*did you mean"):
        load(str(write(tmp_path, SUITE + '\n[transfer]\ndataset = "digits"\nepochs = 1\nmethod = "spf"\n')))
    with pytest.raises(SuiteError, match=r"\[transfer\]\.train_subset: unknown key"):
        load(str(write(tmp_path, SUITE + '\n[transfer]\ndataset = "digits"\nepochs = 1\ntrain_subset = 5\n')))
    with pytest.raises(SuiteError, match=r"\[train\]\.keep_classes and \[methods.\"bp\"\]\.classes are both set"):
        runner.prepare(str(write(tmp_path, SUITE + '\n[methods."bp"]\nclasses = 3\n')), tmp_path / "out")
    design = expand(load(str(write(tmp_path, SUITE + TRANSFER))))
    assert any("bp does not offer adapt=local-heads-only" in why for _, why in design.dropped)


def test_a_source_that_gives_the_backbone_other_shapes_is_refused_at_planning(tmp_path):
    text = SUITE.replace('methods = ["sff", "bp"]', 'methods = ["bp"]').replace(
        'backbones = ["mlp"]', 'backbones = ["cnn.cfse"]'
    )
    text = text.replace(
        "[backbones.mlp]\nwidths = [32, 32]\n", '[backbones."cnn.cfse"]\nchannels = [10, 20]\npool = [1]\n'
    )
    path = write(tmp_path, text + '\n[transfer]\ndataset = "digits"\nepochs = 1\n\n[axes]\nadapt = ["fine-tune"]\n')
    with pytest.raises(
        SuiteError,
        match=r"\[transfer\]: the source digits \(images \(1, 8, 8\), 10 classes\) cannot "
        r"start cnn.cfse on the target digits \(images \(1, 8, 8\), 5 classes\): "
        r"parameter shapes differ",
    ):
        runner.prepare(str(path), tmp_path / "out")


def test_a_source_of_another_image_size_is_refused_at_planning(tmp_path):
    from ffbench.data.datasets import DataError
    from ffbench.data.datasets import load as load_data

    try:
        load_data("fashion-mnist")
    except DataError:
        pytest.skip("Fashion-MNIST is not installed (make test installs it)")
    text = SUITE.replace('datasets = ["digits"]', 'datasets = ["fashion-mnist"]')
    path = write(tmp_path, text + '\n[transfer]\ndataset = "digits"\nepochs = 1\n\n[axes]\nadapt = ["fine-tune"]\n')
    with pytest.raises(
        SuiteError,
        match=r"the source digits \(images \(1, 8, 8\).*fashion-mnist \(images "
        r"\(1, 28, 28\).*the image sizes differ",
    ):
        runner.prepare(str(path), tmp_path / "out")


def test_imagenet_weights_missing_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url, dst, **kw):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    text = SUITE.replace('backbones = ["mlp"]', 'backbones = ["resnet18"]').replace(
        "[backbones.mlp]\nwidths = [32, 32]\n", ""
    )
    path = write(tmp_path, text + '\n[transfer]\ndataset = "imagenet"\n\n[axes]\nadapt = ["fine-tune"]\n')
    with pytest.raises(
        SuiteError,
        match=r"imagenet.*ImageNet weights of resnet18 are missing: .*hub/checkpoints/"
        r"resnet18-[0-9a-f]+\.pth does not exist and https://\S+ could not be downloaded",
    ):
        runner.prepare(str(path), tmp_path / "out")


def test_imagenet_weights_load_where_names_and_shapes_match(tmp_path):
    import torchvision

    donor = torchvision.models.resnet18(num_classes=1000).state_dict()
    config = RunConfig(
        method="bp", dataset="digits", backbone="resnet18", adapt="fine-tune", source={"weights": "imagenet"}
    )
    method = built(config)
    skipped = transfer.load_backbone(method, donor, config.source)
    model = method.backbone.source.state_dict()
    assert "conv1.weight" in skipped and "fc.weight" in skipped  # the small-image stem, the 1000-way classifier
    assert torch.equal(model["layer4.1.conv2.weight"], donor["layer4.1.conv2.weight"])
    assert torch.equal(method.backbone.units[-1][0].conv2.weight, donor["layer4.1.conv2.weight"])  # the units share it


@pytest.mark.parametrize(
    "method, backbone, options, rule, loss",
    [
        (
            "cwc",
            "cnn.cfse",
            {"channels": [10, 20], "pool": [1]},
            "sf",
            "loss.head",
        ),  # the Sf head, from the first epoch
        ("asge", "vgg.asge", {"channels": [8, 16]}, "linear", "loss.readout"),  # the read-out reads every (fixed) block
    ],
)
def test_linear_probe_of_methods_without_trainable_heads_trains_their_read_out(
    tmp_path, method, backbone, options, rule, loss
):
    source = RunConfig(
        method=method, dataset="digits", backbone=backbone, epochs=1, backbone_options=options
    ).without_seed()
    config = RunConfig(
        method=method,
        dataset="digits",
        backbone=backbone,
        epochs=3,
        backbone_options=options,
        adapt="linear-probe",
        source=source,
    )
    state, _ = transfer.pretrained(config, torch.device("cpu"), tmp_path)
    r = fit(config, "cpu", weights_dir=str(tmp_path), keep_model=True)
    assert r.status == "done", r.error
    assert r.model.default_rule == rule and r.metrics["test_acc"] == r.metrics[f"test_acc.{rule}"]
    assert all(torch.equal(r.model.backbone.state_dict()[k], state[k]) for k in state)
    losses = [row[f"train_{loss}"] for row in r.curves]
    assert losses[-1] < losses[0]  # the read-out learns from the first epoch


def test_two_processes_needing_one_source_train_it_once(tmp_path):
    import subprocess
    import sys

    code = textwrap.dedent(f"""
        import torch
        from ffbench.training import transfer
        from ffbench.core.config import RunConfig
        config = RunConfig.from_dict({target().to_dict()!r})
        print(transfer.pretrained(config, torch.device("cpu"), {str(tmp_path)!r})[1]["reused"])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert outs == ["False", "True"]  # one trained it under the lock, the other waited and read it
    assert len(list(tmp_path.glob("*.pt"))) == 1


class Hostile:
    """Unpickled, it would create a marker file: a loader that ran it would be executing the file's code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("damage", ["hostile pickle", "sidecar []", "wrong shapes"])
def test_a_damaged_source_is_trained_again_never_a_method_failure(tmp_path, capsys, damage):
    import hashlib
    import io
    import pickle

    weights, marker = tmp_path / "weights", tmp_path / "marker"
    first = fit(target("bp", "fine-tune"), "cpu", weights_dir=str(weights))
    key = first.manifest["source"]["key"]
    pt, meta = weights / f"{key}.pt", weights / f"{key}.json"
    sidecar = json.loads(meta.read_text())
    if damage == "hostile pickle":
        pt.write_bytes(pickle.dumps({"w": Hostile(marker)}))
    elif damage == "wrong shapes":
        buffer = io.BytesIO()
        torch.save(
            {k: torch.zeros(*(s + 1 for s in v.shape)) for k, v in torch.load(pt, weights_only=True).items()}, buffer
        )
        pt.write_bytes(buffer.getvalue())
    if damage == "sidecar []":
        meta.write_text("[]")
    else:  # the record matches the damaged file: only loading it shows the damage
        meta.write_text(json.dumps({**sidecar, "sha256": hashlib.sha256(pt.read_bytes()).hexdigest()}))
    again = fit(target("bp", "fine-tune"), "cpu", weights_dir=str(weights))
    assert not marker.exists()
    assert again.status == "done" and not again.manifest["source"]["reused"]
    assert again.metrics["test_acc"] == first.metrics["test_acc"]  # the same source, trained again
    assert "trained again" in capsys.readouterr().err
    assert json.loads(meta.read_text())["sha256"] == hashlib.sha256(pt.read_bytes()).hexdigest()
