"""Mono-Forward: the step equals CE(a_l M_l^T, y) on a detached input, written out by hand; gradients stay in
their unit; the rules; greedy windows and M_0; options and their refusals; learning on digits; the matched BP."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from ffbench.core.config import RunConfig
from ffbench.core.registry import METHODS
from ffbench.core.seeds import Streams
from ffbench.data.data import prepare
from ffbench.methods.monoforward import MonoForward
from ffbench.training.train import build, fit

CPU = torch.device("cpu")


def make(method="monoforward", backbone="mlp", bopts=None, epochs=2, **kw):
    cfg = RunConfig(
        method=method,
        dataset="digits",
        backbone=backbone,
        epochs=epochs,
        backbone_options=bopts or {"widths": [16, 12]},
        **kw,
    )
    streams = Streams(0)
    data = prepare("digits", streams, CPU)
    return build(cfg, data, streams, CPU), data


def hand_losses(params, x, y):
    """The paper's per-layer loss, written out: a_l = relu(W_l sg(a_{l-1}) + b_l), G_l = a_l M_l^T,
    L_l = mean over rows of (-G_l[y] + log sum_k exp G_l[k])."""
    (w1, b1, m1), (w2, b2, m2) = params
    a1 = torch.relu(x.flatten(1) @ w1.T + b1)
    a2 = torch.relu(a1.detach() @ w2.T + b2)
    losses = []
    for a, m in ((a1, m1), (a2, m2)):
        g = a @ m.T
        losses.append((-g.gather(1, y[:, None]).squeeze(1) + g.exp().sum(1).log()).mean())
    return losses


def linear(unit):
    return next(m for m in unit.modules() if isinstance(m, nn.Linear))


def unit_params(method):
    return [(linear(u).weight, linear(u).bias, h.fc.weight) for u, h in zip(method.backbone.units, method.heads)]


def test_one_step_is_the_papers_local_cross_entropy_and_its_sgd_update():
    method, data = make(optimizer="sgd", lr=0.5, momentum=0.0)
    x, y = data.train.x[:20], data.train.y[:20]
    before = [[p.detach().clone().requires_grad_() for p in ps] for ps in unit_params(method)]
    losses = hand_losses(before, x, y)
    stats = method.train_step(x, y)
    for k, (loss, params, after) in enumerate(zip(losses, before, unit_params(method))):
        assert torch.allclose(stats[f"loss.unit{k + 1}"], loss, atol=1e-6)
        grads = torch.autograd.grad(loss, params)
        for p, g, new in zip(params, grads, after):
            assert torch.allclose(new, p - 0.5 * g, atol=1e-6)
    assert all(h.fc.bias is None for h in method.heads)  # G = a M^T: no bias


def test_no_gradient_crosses_a_unit(monkeypatch):
    import ffbench.core.method

    method, data = make(bopts={"widths": [16, 12, 8]})
    owner = {p: k for k, unit in enumerate(method.backbone.units) for p in unit.parameters()}
    owner.update({p: k for k, head in enumerate(method.heads) for p in head.parameters()})
    assert set(owner) == set(method.parameters())
    current, seen = [None], []
    for p, k in owner.items():
        p.register_hook(lambda grad, k=k: seen.append((current[0], k)))
    real_step = ffbench.core.method.step

    def tracking_step(opt, loss):
        current[0] = method.opts.index(opt)
        real_step(opt, loss)

    monkeypatch.setattr(ffbench.core.method, "step", tracking_step)
    method.train_step(data.train.x[:16], data.train.y[:16])
    assert seen and all(loss_k == unit_k for loss_k, unit_k in seen)
    assert {k for _, k in seen} == {0, 1, 2}


def test_rules_are_the_last_units_scores_and_their_sum():
    method, data = make()
    method.eval()
    x = data.val.x[:10]
    with torch.no_grad():
        rules, units = method.evaluate(x)
        (w1, b1, m1), (w2, b2, m2) = unit_params(method)
        a1 = torch.relu(x.flatten(1) @ w1.T + b1)
        a2 = torch.relu(a1 @ w2.T + b2)
    assert torch.allclose(rules["last"], a2 @ m2.T, atol=1e-6)
    assert torch.allclose(rules["sum"], a1 @ m1.T + a2 @ m2.T, atol=1e-6)
    assert len(units) == 2 and method.default_rule == "last"
    summed, _ = make(method_options={"predict": "sum"})
    assert summed.default_rule == "sum"


def test_greedy_trains_one_unit_per_epoch_block_and_m0_is_a_stage_of_its_own():
    method, data = make(epochs=6, method_options={"training": "greedy", "m0_input_head": True})
    assert method.backbone.unit_names == ["input", "fc1", "fc2"] and method.windows == [(0, 2), (2, 4), (4, 6)]
    assert not list(method.backbone.units[0].parameters()) and method.heads[0].fc.in_features == 64
    method.start_epoch(2)  # fc1's block: M_0 and fc2 hold still
    frozen = [p.detach().clone() for k in (0, 2) for p in method.unit_params(k)]
    stats = method.train_step(data.train.x[:16], data.train.y[:16])
    assert set(stats) == {"loss", "loss.unit2"}
    assert all(torch.equal(a, b) for a, b in zip(frozen, [p for k in (0, 2) for p in method.unit_params(k)]))
    rules, units = method.evaluate(data.val.x[:4])
    assert len(units) == 3 and torch.allclose(rules["sum"], sum(units))


def test_options_change_the_units_activation_biases_and_initialisation():
    method, _ = make(method_options={"act": "tanh", "bias": False, "init": "kaiming"}, bopts={"widths": [64, 64]})
    mods = list(method.backbone.modules())
    assert any(isinstance(m, nn.Tanh) for m in mods) and not any(isinstance(m, nn.ReLU) for m in mods)
    linears = [m for m in mods if isinstance(m, nn.Linear)]
    assert all(m.bias is None for m in linears)
    w = linears[1].weight  # Xavier-uniform under tanh: bound sqrt(6 / (fan_in + fan_out))
    assert w.abs().max() <= math.sqrt(6 / 128) and w.abs().max() > 0.9 * math.sqrt(6 / 128)
    relu, _ = make(method_options={"init": "kaiming"}, bopts={"widths": [64, 64]})
    lin = linear(relu.backbone.units[1])  # Kaiming-uniform, ReLU gain: bound sqrt(6 / fan_in), zero biases
    assert lin.weight.abs().max() > 1 / math.sqrt(64) and lin.weight.abs().max() <= math.sqrt(6 / 64)
    assert not lin.bias.any()


def test_greedy_with_fewer_epochs_than_stages_is_refused_before_training():
    cfg = RunConfig(
        method="monoforward",
        dataset="digits",
        backbone="mlp",
        epochs=2,
        backbone_options={"widths": [16, 16]},
        method_options={"training": "greedy", "m0_input_head": True},
    )
    why = MonoForward.skip(cfg)
    assert "epochs >= 3" in why and "training='simultaneous'" in why
    assert MonoForward.skip(RunConfig(**{**cfg.to_dict(), "epochs": 3})) is None
    with pytest.raises(ValueError, match="epochs >= 3"):
        make(epochs=2, method_options={"training": "greedy", "m0_input_head": True})
    with pytest.raises(ValueError, match="epochs >= 2"):  # a backbone skip() cannot count: refused when built
        make(
            backbone="cnn",
            bopts={"channels": [4, 8], "granularity": "block", "pool": [0]},
            epochs=1,
            method_options={"training": "greedy"},
        )


def test_learns_digits_above_chance():
    for opts in ({}, {"training": "greedy"}):
        run = fit(
            RunConfig(
                method="monoforward",
                dataset="digits",
                backbone="mlp",
                seed=0,
                epochs=2,
                batch_size=32,
                backbone_options={"widths": [64, 64]},
                method_options=opts,
            ),
            "cpu",
        )
        assert run.status == "done" and run.metrics["test_acc"] > 0.6, (opts, run.metrics.get("test_acc"))


def test_conv_units_read_the_flattened_map_or_its_mean():
    bopts = {"channels": [4, 8], "pool": [0]}
    flat, data = make(backbone="cnn", bopts=bopts)
    avg, _ = make(backbone="cnn", bopts=bopts, method_options={"pool": "avg"})
    assert flat.heads[1].fc.in_features == 8 * 4 * 4 and avg.heads[1].fc.in_features == 8
    assert torch.isfinite(avg.train_step(data.train.x[:8], data.train.y[:8])["loss"])


def test_matched_bp_deepsup_uses_the_projections_end_to_end():
    deep, data = make("bp.deepsup", method_options={"head": "match:monoforward"})
    assert deep.local.card.name == "monoforward" and all(h.fc.bias is None for h in deep.heads)
    x, y = data.train.x[:16], data.train.y[:16]
    w1 = linear(deep.backbone.units[0]).weight
    grad = torch.autograd.grad(deep.unit_loss(1, deep.heads[1](deep.backbone(x)), y, None), w1)[0]
    assert grad.abs().sum() > 0  # unit 2's loss reaches unit 1: backpropagation, where Mono-Forward cuts
    stats = deep.train_step(x, y)
    assert set(stats) == {"loss", "loss.unit1", "loss.unit2"}
    rules, _ = deep.evaluate(data.val.x[:4])
    assert {"last", "average", "monoforward.last", "monoforward.sum"} <= set(rules)
    assert "match:monoforward" in METHODS.get("bp.deepsup").card.options["head"].choices
