"""ASGE: the VGG-like block, patch goodness and P_l rules, the frozen projection, locality, learning."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import ffbench.methods.asge as asge_mod
from ffbench.core.config import RunConfig
from ffbench.core.seeds import Streams
from ffbench.data.data import prepare
from ffbench.training import backbones
from ffbench.training.train import build, fit

CPU = torch.device("cpu")
SMALL_VGG = {"channels": [16, 32, 64], "pool": [0, 1]}


def make(mopts=None, backbone="vgg.asge", bopts=None, seed=0):
    cfg = RunConfig(
        method="asge",
        dataset="digits",
        backbone=backbone,
        seed=seed,
        backbone_options=dict(SMALL_VGG if bopts is None else bopts),
        method_options=mopts or {},
    )
    streams = Streams(seed)
    data = prepare("digits", streams, CPU)
    return build(cfg, data, streams, CPU), data


def test_backbone_is_registered_in_a_fresh_process():
    code = "from ffbench.core.registry import BACKBONES; print(BACKBONES.get('vgg.asge').card.name)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "vgg.asge"


def test_block_is_conv_relu_rmspool_channel_layernorm():
    method, _ = make()
    block = method.backbone.units[0]
    assert isinstance(block.conv, nn.Conv2d) and isinstance(block.act, nn.ReLU)
    assert isinstance(block.pool, backbones.RMSPool2d) and isinstance(block.norm, nn.LayerNorm)
    assert isinstance(method.backbone.units[2].pool, nn.Identity)  # not in `pool`
    x = torch.randn(4, 1, 8, 8)
    y, out = block.forward_pair(x)
    rms = (y.pow(2).unfold(2, 2, 2).unfold(3, 2, 2).mean((-1, -2)) + 1e-6).sqrt()
    assert torch.allclose(out, nn.functional.layer_norm(rms.permute(0, 2, 3, 1), (16,)).permute(0, 3, 1, 2), atol=1e-5)
    assert method.backbone.out_shapes == [(16, 4, 4), (32, 2, 2), (64, 2, 2)]


def test_grid_rules_and_patch_goodness():
    method, _ = make()  # maps before pooling: 16x8x8, 32x4x4, 64x2x2; C_L = 64
    assert method.patches == [2, 1, 1]  # reading (a): round(sqrt(64/C_l)) = 2, 1.41 -> 1, 1
    method, _ = make({"grid": "linear"})
    assert method.patches == [4, 2, 1]  # reading (b): 64/C_l, clipped to the map size
    method, _ = make({"patches": [8, 3, 5]})
    assert method.patches == [8, 3, 2]  # explicit, clipped to H_l
    y = torch.randn(2, 3, 6, 6)
    exact = y.pow(2).reshape(2, 3, 2, 3, 2, 3).mean((3, 5)).flatten(1)
    assert torch.allclose(asge_mod.patch_goodness(y, 2, "adaptive"), exact)
    assert torch.allclose(asge_mod.patch_goodness(y, 2, "crop"), exact)
    y7 = torch.randn(2, 3, 7, 7)  # 4 does not divide 7
    crop = asge_mod.patch_goodness(y7, 4, "crop")  # 4x4 patches of 1x1 pixels of the top-left 4x4
    assert torch.allclose(crop, y7[:, :, :4, :4].pow(2).flatten(1))
    assert asge_mod.patch_goodness(y7, 4, "adaptive").shape == (2, 3 * 16)
    assert torch.allclose(asge_mod.patch_goodness(y, 2, "adaptive", "sum"), exact * 9)


def test_projection_is_frozen_and_in_no_optimizer():
    method, data = make({"predict": "linear"})
    projections = {n: b for n, b in method.named_buffers() if n.startswith("heads.")}
    assert len(projections) == 2 * len(method.backbone.units)
    assert all(not b.requires_grad for b in projections.values())
    in_opt = {id(p) for opt in method.ctx.optimizers for g in opt.param_groups for p in g["params"]}
    assert not any(id(b) in in_opt for b in projections.values())
    assert in_opt == {id(p) for p in method.parameters()}  # every trainable part is in some optimizer
    before = {n: b.clone() for n, b in projections.items()}
    params_before = [p.detach().clone() for p in method.backbone.parameters()]
    for i in range(3):
        method.train_step(data.train.x[i * 32 : (i + 1) * 32], data.train.y[i * 32 : (i + 1) * 32])
    assert all(torch.equal(before[n], b) for n, b in projections.items())
    assert any(not torch.equal(a, p) for a, p in zip(params_before, method.backbone.parameters()))


def test_blocks_learn_from_their_own_loss_only(monkeypatch):
    method, data = make()
    owner = {p: k for k, u in enumerate(method.backbone.units) for p in u.parameters()}
    owner.update({p: "readout" for p in method.readout.parameters()})
    assert set(owner) == set(method.parameters())
    current, seen = [None], []
    for p, k in owner.items():
        p.register_hook(lambda grad, k=k: seen.append((current[0], k)))
    import ffbench.core.method

    real_step = ffbench.core.method.step

    def tracking_step(opt, loss):
        current[0] = "readout" if opt is method.readout_opt else method.opts.index(opt)
        real_step(opt, loss)

    monkeypatch.setattr(ffbench.core.method, "step", tracking_step)  # the unit loop and the read-out
    stats = method.train_step(data.train.x[:32], data.train.y[:32])
    assert seen and all(loss_k == unit_k for loss_k, unit_k in seen)
    assert {k for _, k in seen} == {0, 1, 2, "readout"}
    assert {"loss", "loss.unit1", "loss.unit2", "loss.unit3", "loss.readout"} == set(stats)


def test_prediction_rules():
    method, data = make({"predict": "sum"})
    rules, units = method.evaluate(data.val.x[:8])
    assert method.default_rule == "sum" and set(rules) == {"sum", "last", "linear"} and len(units) == 3
    assert torch.allclose(rules["sum"], sum(units)) and torch.equal(rules["last"], units[-1])
    with pytest.raises(ValueError, match="predict"):
        make({"predict": "vote"})


def test_asge_learns_digits_quickly():
    r = fit(
        RunConfig(
            method="asge",
            dataset="digits",
            backbone="vgg.asge",
            epochs=4,
            lr=1e-2,
            backbone_options={"channels": [32, 64, 128], "pool": [0, 1]},
        ),
        CPU,
    )
    assert r.status == "done"
    assert r.metrics["test_acc"] > 0.85, r.metrics  # chance is 0.10
    assert {"test_acc.last", "test_acc.sum", "test_acc.linear", "test_acc.unit3"} <= set(r.metrics)
