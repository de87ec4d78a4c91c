"""SFF: unit-local gradients, step-and-free memory, torchvision wrappers left intact, learning, options."""

from __future__ import annotations

import pytest
import torch
import torchvision

import ffbench.methods.sff as sff_mod
from ffbench.core.config import RunConfig
from ffbench.core.method import Context
from ffbench.core.seeds import Streams
from ffbench.data.data import prepare
from ffbench.training import backbones
from ffbench.training.train import SavedTensorMeter, build, evaluate, fit, unit_saved_bytes

CPU = torch.device("cpu")
SMALL_CNN = {"channels": [8, 16, 16, 32], "granularity": "block"}


def make(method, backbone="cnn", bopts=None, mopts=None, dataset="digits", seed=0):
    cfg = RunConfig(
        method=method,
        dataset=dataset,
        backbone=backbone,
        seed=seed,
        backbone_options=dict(SMALL_CNN if bopts is None and backbone == "cnn" else bopts or {}),
        method_options=mopts or {},
    )
    streams = Streams(seed)
    data = prepare(dataset, streams, CPU)
    return build(cfg, data, streams, CPU), data


@pytest.mark.parametrize(
    "mopts,bopts",
    [
        ({}, None),
        ({"head_input": "ln", "ln": "channel", "kernel": 3, "loss": "margin"}, None),
        ({}, {"channels": [8, 16, 16], "granularity": "layer", "bn": "outside"}),
    ],
)
def test_unit_parameters_get_gradient_from_their_own_loss_only(monkeypatch, mopts, bopts):
    method, data = make("sff", bopts=bopts, mopts=mopts)
    owner = {}
    for k, (unit, head) in enumerate(zip(method.backbone.units, method.heads)):
        for p in list(unit.parameters()) + list(head.parameters()):
            owner[p] = k
    assert set(owner) == set(method.parameters())
    current, seen = [None], []
    for p, k in owner.items():
        p.register_hook(lambda grad, k=k: seen.append((current[0], k)))

    import ffbench.core.method

    real_step = ffbench.core.method.step

    def tracking_step(opt, loss):
        current[0] = method.opts.index(opt)
        real_step(opt, loss)
        current[0] = None

    monkeypatch.setattr(ffbench.core.method, "step", tracking_step)
    method.train_step(data.train.x[:32], data.train.y[:32])
    assert seen and all(loss_k == unit_k for loss_k, unit_k in seen)
    assert {k for _, k in seen} == set(range(len(method.opts)))  # every unit learned from its own loss


def test_train_step_reports_unit_losses():
    method, data = make("sff")
    stats = method.train_step(data.train.x[:32], data.train.y[:32])
    n = len(method.backbone.units)
    assert set(stats) == {"loss"} | {f"loss.unit{k + 1}" for k in range(n)}
    assert torch.isclose(stats["loss"], sum(stats[f"loss.unit{k + 1}"] for k in range(n)))
    rules, units = method.evaluate(data.val.x[:16])
    assert list(rules) == ["average", "last"] and len(units) == n
    assert torch.allclose(rules["average"], torch.stack(units).mean(0))
    method2, _ = make("sff", mopts={"rule": "last"})
    assert method2.default_rule == "last" and method.default_rule == "average"
    assert list(evaluate(method2, data.val, 16)[0]) == ["last", "average"]  # the harness puts it first


def test_sff_layer_rejects_block_backbones():
    with pytest.raises(ValueError, match="partitioned into layers.*resnet18"):
        make("sff.layer", backbone="resnet18")
    with pytest.raises(ValueError, match="granularity='layer'"):
        make("sff.layer", bopts={"channels": [8, 16], "granularity": "block"})
    method, _ = make("sff.layer", bopts={"channels": [8, 16, 16], "granularity": "layer"})
    assert len(method.opts) == 3


def _same_as_torchvision(bb, ref, stem):
    """Every module of the wrapped model is torchvision's (type, state) except the documented stem."""
    src = bb.source
    assert type(src) is type(ref)
    mods, ref_mods = dict(src.named_modules()), dict(ref.named_modules())
    assert mods.keys() == ref_mods.keys()
    for name, m in mods.items():
        if name not in stem:
            assert type(m) is type(ref_mods[name]), name
    state, ref_state = src.state_dict(), ref.state_dict()
    assert state.keys() == ref_state.keys()
    for key, value in state.items():
        if not any(key.startswith(s + ".") for s in stem):
            assert torch.equal(value, ref_state[key]), key
    # the units hold the model's own module objects (no copies)
    unit_mods = {id(m) for m in bb.units.modules()}
    return mods, unit_mods


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3"])
def test_wrappers_keep_torchvision_modules(name):
    torch.manual_seed(3)
    bb = backbones.build(name, (1, 8, 8), 10)
    torch.manual_seed(3)
    if name == "resnet18":
        ref = torchvision.models.resnet18(num_classes=10)
        stem = {"conv1", "maxpool"}
        own = ["conv1", "bn1"] + [f"layer{s}.{b}" for s in range(1, 5) for b in (0, 1)]
    else:
        ref = torchvision.models.mobilenet_v3_small(num_classes=10)
        stem = {"features.0.0"}
        own = [f"features.{i}" for i in range(len(ref.features))] + ["features.0.0"]
    mods, unit_mods = _same_as_torchvision(bb, ref, stem)
    assert all(id(mods[n]) in unit_mods for n in own)
    types_before = [(n, type(m)) for n, m in bb.source.named_modules()]
    # wrapping with SFF and training adds heads beside the model and changes parameter values only
    options = {k: v for k, v in sff_mod.SFF.card.defaults.items()}
    method = sff_mod.SFF(bb, 10, options, Context(device=CPU, generator=torch.Generator()))
    method.train_step(torch.randn(8, 1, 8, 8), torch.arange(8))
    assert method.backbone is bb and {id(m) for m in bb.units.modules()} == unit_mods
    assert [(n, type(m)) for n, m in bb.source.named_modules()] == types_before
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in bb.modules())
    # the units compose to torchvision's own forward up to the pooling
    src, x = bb.source.eval(), torch.randn(2, 1, 8, 8)
    bb.eval()
    if name == "resnet18":
        want = src.layer4(src.layer3(src.layer2(src.layer1(src.relu(src.bn1(src.conv1(x)))))))
    else:
        want = src.features(x)
    assert torch.allclose(bb(x), want)


def test_saved_bytes_step_and_free_resnet18():
    """SFF keeps one unit's activations alive (the largest unit + its head); BP keeps them all."""
    x_y = {}
    measured = {}
    for name in ("sff", "bp"):
        method, data = make(name, backbone="resnet18")
        x, y = data.train.x[:16], data.train.y[:16]
        meter = SavedTensorMeter(list(method.parameters()))
        with meter.hooks():
            method.train_step(x, y)
        measured[name] = meter.peak
        x_y[name] = method
    per_unit = unit_saved_bytes(x_y["sff"], x, y)
    assert measured["sff"] == max(per_unit)
    assert measured["sff"] < measured["bp"] / 2
    assert measured["bp"] > 0.8 * sum(per_unit)


def test_sff_learns_digits_quickly():
    r = fit(
        RunConfig(method="sff", dataset="digits", backbone="cnn", epochs=3, lr=3e-3, backbone_options=SMALL_CNN), CPU
    )
    assert r.status == "done"
    assert r.metrics["test_acc"] > 0.85, r.metrics  # chance is 0.10
    assert "test_acc.last" in r.metrics and "test_acc.unit2" in r.metrics
    r = fit(
        RunConfig(
            method="sff.layer",
            dataset="digits",
            backbone="mlp",
            epochs=3,
            lr=3e-3,
            backbone_options={"widths": [64, 64]},
        ),
        CPU,
    )
    assert r.metrics["test_acc"] > 0.85, r.metrics


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="kernel"):
        make("sff", mopts={"kernel": 2})
    with pytest.raises(ValueError, match="loss"):
        make("sff", mopts={"loss": "hinge"})
