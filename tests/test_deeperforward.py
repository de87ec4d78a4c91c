"""deeperforward: the unit loss and GroupNorm hand-off by hand, the ResNet-17 wiring against a hand-written forward
pass, gradients that stay in their unit, the range rule, option and backbone checks, and that it learns digits."""

import math

import pytest
import torch
import torch.nn.functional as F

import ffbench.core.method
from ffbench.core.config import RunConfig
from ffbench.core.method import Context
from ffbench.core.registry import METHODS
from ffbench.training import backbones
from ffbench.training.train import fit, method_options

PLANES = [10, 20, 40, 80]


def make(backbone="resnet.df", bopts=None, k=10, shape=(1, 8, 8), **opts):
    bopts = {"planes": PLANES, "dropout": 0.0} if bopts is None else bopts
    bb = backbones.build(backbone, shape, k, bopts)
    ctx = Context(device=torch.device("cpu"), generator=torch.Generator().manual_seed(0), optimizer="adamw", lr=0.08)
    options = method_options(
        RunConfig(method="deeperforward", dataset="digits", backbone=backbone, method_options=opts)
    )
    return METHODS.get("deeperforward").obj(bb, k, options, ctx)


def test_unit_loss_is_ce_on_group_means():
    """Unit 0 of tinycnn.df: scores = mean of each class group of ReLU(conv(LN(x))), loss = CE of them."""
    torch.manual_seed(0)
    m = make("tinycnn.df", {"channels": [4, 4, 4, 4], "dropout": 0.0}, k=2)
    x, y = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 1])
    scores, feat, _ = m.forward_unit(0, x)
    xn = (x - x.mean((1, 2, 3), keepdim=True)) / (x.var((1, 2, 3), unbiased=False, keepdim=True) + 1e-5).sqrt()
    act = F.conv2d(xn, m.backbone.units[0].conv.weight, padding=2).clamp_min(0)
    g = torch.stack([act[:, :2].mean((1, 2, 3)), act[:, 2:].mean((1, 2, 3))], 1)  # no square
    assert torch.allclose(scores, g, atol=1e-6)
    want = sum(-g[i, y[i]] + torch.log(torch.exp(g[i]).sum()) for i in range(3)) / 3
    assert m.unit_loss(0, scores, y, feat).item() == pytest.approx(want.item(), rel=1e-5)


def test_hand_off_is_group_norm_of_own_channels():
    """The hand-off has zero mean and unit variance per sample and class group; carried skip channels pass as is."""
    m = make()
    h = torch.randn(2, 10 + 7, 4, 4) * 3 + 1
    out = m.pass_on(1, h)
    groups = out[:, :10].reshape(2, 10, -1)
    assert torch.allclose(groups.mean(2), torch.zeros(2, 10), atol=1e-5)
    assert torch.allclose(groups.var(2, unbiased=False), torch.ones(2, 10), atol=1e-3)
    assert torch.equal(out[:, 10:], h[:, 10:])


def test_resnet17_wiring_matches_a_hand_written_forward():
    """Stage unit 2 adds the (pooled) stage input, unit 4 concatenates what was saved after unit 2
    (docs/methods/notes/deeperforward.md §12.1)."""
    torch.manual_seed(1)
    m = make(shape=(1, 16, 16)).eval()
    x = torch.randn(2, 1, 16, 16)
    _, per_unit = m.evaluate(x)
    convs = [u.conv for u in m.backbone.units]
    h, want = F.layer_norm(x, x.shape[1:]), []
    shortcut = None
    for i, conv in enumerate(convs):
        y = F.relu(conv(h))
        want.append(y.reshape(2, 10, -1).mean(2))
        h = F.group_norm(y, 10)
        j = (i - 1) % 4
        if i > 0 and j == 1:
            h = h + shortcut
        if i > 0 and j == 3:
            h = torch.cat([h, shortcut], 1)
        if i == 0 or j == 1:
            shortcut = h
        if i > 0 and j == 3:
            shortcut = F.avg_pool2d(h, 2)
    assert len(per_unit) == 17
    for got, exp in zip(per_unit, want):
        assert torch.allclose(got, exp, atol=1e-5)


def test_no_gradient_crosses_a_unit_boundary(monkeypatch):
    """Each unit's loss reaches that unit's convolution alone, skip inputs included, one optimizer step each."""
    m = make(bopts={"planes": [10, 20], "dropout": 0.0})
    touched, losses, real_step = [], [], ffbench.core.method.step
    unit_loss = m.unit_loss

    def recording_loss(k, scores, y, h):
        out = unit_loss(k, scores, y, h)
        losses.append(out)
        return out

    def recording_step(opt, loss):
        names, params = zip(*m.named_parameters())
        grads = torch.autograd.grad(losses[-1], params, retain_graph=True, allow_unused=True)
        touched.append({n.split(".")[2] for n, g in zip(names, grads) if g is not None and g.abs().sum() > 0})
        real_step(opt, loss)

    monkeypatch.setattr(m, "unit_loss", recording_loss)
    monkeypatch.setattr(ffbench.core.method, "step", recording_step)
    stats = m.train_step(torch.randn(8, 1, 8, 8), torch.arange(8) % 10)
    assert touched == [{str(k)} for k in range(9)]
    assert stats["loss"].item() == pytest.approx(sum(stats[f"loss.unit{k + 1}"].item() for k in range(9)), rel=1e-6)


def test_rules_sum_the_chosen_range():
    m = make("tinycnn.df", {"channels": [10, 10, 10, 10], "dropout": 0.0}, start=1, end=2)
    scores = [torch.full((1, 10), float(v)) for v in (1, 2, 4, 8)]
    scores[2][0, 3] = 100.0
    rules = m.rules(scores, [None] * 4)
    assert torch.equal(rules["range"], scores[1] + scores[2]) and rules["range"].argmax().item() == 3
    assert torch.equal(rules["all"], sum(scores)) and torch.equal(rules["last"], scores[3])
    assert make("tinycnn.df", {"channels": [10] * 4}).rules(scores, [None] * 4)["range"][0, 0].item() == 14


def test_bad_configurations_are_refused_before_training():
    skip = METHODS.get("deeperforward").obj.skip

    def cfg(backbone="tinycnn.df", bopts=None, **opts):
        return RunConfig(
            method="deeperforward",
            dataset="digits",
            backbone=backbone,
            backbone_options=bopts or {},
            method_options=opts,
        )

    assert "resnet.df or tinycnn.df backbones only" in skip(cfg("cnn"))
    assert "start=3, end=1 is no range of the 4 units" in skip(cfg(start=3, end=1))
    assert "no range of the 9 units" in skip(cfg("resnet.df", {"planes": [10, 20]}, start=2, end=9))
    assert "channels [15] are not divisible by the class count 10" in skip(cfg(bopts={"channels": [10, 15, 20, 30]}))
    assert skip(cfg("resnet.df", {"planes": [10, 20]}, start=0, end=8)) is None
    with pytest.raises(ValueError, match="must double from stage to stage"):
        backbones.build("resnet.df", (1, 8, 8), 10, {"planes": [10, 30]})


def test_odd_sides_keep_the_skip_aligned():
    """28x28 MNIST: stages at 28, 14, 7 and 4 (a strided conv and the pooled skip both round 7 up)."""
    bb = backbones.build("resnet.df", (1, 28, 28), 10, {"planes": PLANES})
    assert [s[1:] for s in bb.out_shapes[1::4]] == [(28, 28), (14, 14), (7, 7), (4, 4)]
    assert bb.out_shapes[-1] == (80, 4, 4)


def test_learns_digits():
    r = fit(
        RunConfig(
            method="deeperforward",
            dataset="digits",
            backbone="tinycnn.df",
            backbone_options={"channels": [20, 40, 80, 80]},
            seed=0,
            epochs=2,
        ),
        "cpu",
    )
    assert r.status == "done" and r.metrics["test_acc"] > 0.5 and math.isfinite(r.metrics["test_acc.all"])


def test_matched_bp_borrows_the_class_group_scores_and_hand_off():
    """bp.deepsup with head match:deeperforward: the same scores, GroupNorm hand-off and skips, trained end to end."""
    bopts = {"planes": [10, 20], "dropout": 0.0}
    cfg = RunConfig(
        method="bp.deepsup",
        dataset="digits",
        backbone="resnet.df",
        backbone_options=bopts,
        method_options={"head": "match:deeperforward"},
        seed=0,
        epochs=1,
        lr=0.01,
    )
    bp_cls = METHODS.get("bp.deepsup").obj
    assert bp_cls.skip(cfg) is None
    assert (
        "match:deeperforward: deeperforward runs on the resnet.df or tinycnn.df backbones only, not cnn"
        in bp_cls.skip(RunConfig(**{**cfg.__dict__, "backbone": "cnn"}))
    )
    bb = backbones.build("resnet.df", (1, 8, 8), 10, bopts)
    ctx = Context(device=torch.device("cpu"), generator=torch.Generator().manual_seed(0), lr=0.01)
    m = bp_cls(bb, 10, method_options(cfg), ctx)
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8)
    local = m.local
    h = bb.units[1](torch.randn(8, 10, 8, 8))  # stage 1, unit 1: its activity and the stem output it carries
    assert torch.equal(m.pass_on(1, h), local.pass_on(1, h)) and h.shape[1] == 20
    before = [u.conv.weight.clone() for u in bb.units]
    stats = m.train_step(x, y)
    assert math.isfinite(stats["loss"].item()) and all(
        not torch.equal(b, u.conv.weight) for b, u in zip(before, bb.units)
    )
    rules, per_unit = m.evaluate(x)
    assert {"last", "average", "deeperforward.range", "deeperforward.all"} <= set(rules) and len(per_unit) == 9
    assert fit(cfg, "cpu").status == "done"
