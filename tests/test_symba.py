"""symba: the symmetric loss against its formula, the pairing of a sample's positive and negative rows, gradients
kept inside a layer, the goodness-per-label rule, option checks, and that it learns digits."""

import math

import pytest
import torch
import torch.nn.functional as F

import ffbench.core.method
from ffbench.core.config import RunConfig
from ffbench.core.method import Context
from ffbench.core.options import OptionError
from ffbench.core.registry import METHODS
from ffbench.methods.goodness import normalise, symba_loss
from ffbench.training import backbones
from ffbench.training.train import fit, method_options


def make(widths=(16, 16, 16), k=10, **opts):
    bb = backbones.build("mlp", (1, 8, 8), k, {"widths": list(widths)})
    ctx = Context(device=torch.device("cpu"), generator=torch.Generator().manual_seed(0), optimizer="adam", lr=1e-3)
    options = method_options(RunConfig(method="symba", dataset="digits", backbone="mlp", method_options=opts))
    return METHODS.get("symba").obj(bb, k, options, ctx)


def plain_goodness(m, x, labels):
    """Each layer's goodness of overlay(x, labels), the overlay written out: the label over the first K pixels of
    the min-max scaled image, RMS-normalised, linear, ReLU, sum of squares; the next layer reads the normalised
    activity."""
    xr = x.flatten(1)
    lo, hi = xr.aminmax(dim=1, keepdim=True)
    h = torch.cat([labels, ((xr - lo) / (hi - lo))[:, m.num_classes :]], 1)
    out = []
    for lin in m.linears:
        h = lin(normalise(h, "rms")).relu()
        out.append(h.pow(2).sum(1))
    return out


def test_symba_loss_is_the_formula_and_symmetric():
    g_pos = torch.tensor([3.0, 1.0, 2.0], requires_grad=True)
    g_neg = torch.tensor([0.5, 2.5, 2.0], requires_grad=True)
    alpha = 4.0
    want = sum(math.log1p(math.exp(-alpha * (p - n))) for p, n in [(3, 0.5), (1, 2.5), (2, 2)]) / 3
    loss = symba_loss(g_pos, g_neg, alpha)
    assert loss.item() == pytest.approx(want, rel=1e-6)
    loss.backward()
    delta = (g_pos - g_neg).detach()
    assert torch.allclose(g_pos.grad, -alpha * torch.sigmoid(-alpha * delta) / 3)  # dL/dG+ = -a sigma(-a delta)
    assert torch.equal(g_pos.grad, -g_neg.grad)  # balanced: the same push on both rows, opposite signs
    huge = symba_loss(torch.tensor([0.0]), torch.tensor([1e4]), alpha)  # a naive log(1 + exp) overflows here
    assert huge.item() == pytest.approx(4e4)


def test_unit_loss_is_the_formula_on_each_samples_own_pair():
    m = make()
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 5])
    y_neg = torch.tensor([9, 8, 7, 6, 5, 4])
    ssq, base = m._image(x)
    labels = F.one_hot(torch.stack([y, y_neg]), 10).float()
    scores, h, _ = m.forward_unit(0, (ssq, base, labels))
    pos, neg = plain_goodness(m, x, labels[0])[0], plain_goodness(m, x, labels[1])[0]
    assert torch.allclose(scores, torch.stack([pos, neg], 1), rtol=1e-4)  # row b: sample b's positive, negative
    out = m.unit_loss(0, scores, y, h)
    want = F.softplus(-4.0 * (pos - neg)).mean()
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-4)
    assert {"goodness_pos", "goodness_neg"} <= set(out)  # both logged: without a threshold they may drift together
    shuffled = m.unit_loss(0, torch.stack([pos, neg.roll(1)], 1), y, h)["loss"]
    assert shuffled.item() != pytest.approx(out["loss"].item(), rel=1e-3)  # pairing matters: not a mean-of-halves


def test_no_gradient_crosses_a_layer_boundary(monkeypatch):
    m = make()
    losses, touched = [], []
    unit_loss, real_step = m.unit_loss, ffbench.core.method.step

    def recording_loss(k, scores, y, h):
        out = unit_loss(k, scores, y, h)
        losses.append(out["loss"])
        return out

    def recording_step(opt, loss):
        names, params = zip(*m.named_parameters())
        for part in losses:
            grads = torch.autograd.grad(part, params, retain_graph=True, allow_unused=True)
            touched.append({n.split(".")[2] for n, g in zip(names, grads) if g is not None and g.abs().sum() > 0})
        real_step(opt, loss)

    monkeypatch.setattr(m, "unit_loss", recording_loss)
    monkeypatch.setattr(ffbench.core.method, "step", recording_step)
    stats = m.train_step(torch.randn(8, 1, 8, 8), torch.arange(8))
    assert touched == [{"0"}, {"1"}, {"2"}]
    assert torch.isfinite(stats["loss"]) and {"loss.unit1", "loss.unit2", "loss.unit3"} <= set(stats)


def test_goodness_rule_picks_the_label_of_highest_goodness_past_layer_one():
    m = make()
    x = torch.randn(5, 1, 8, 8)
    rules, units = m.evaluate(x)
    per_label = torch.stack(
        [sum(plain_goodness(m, x, F.one_hot(torch.full((5,), c), 10).float())[1:]) for c in range(10)], 1
    )
    assert torch.allclose(rules["goodness"], per_label, rtol=1e-4)  # layers 2..L vote (skip-first)
    assert torch.equal(rules["goodness"].argmax(1), per_label.argmax(1))
    assert list(rules) == ["goodness", "softmax"] and len(units) == 3


def test_options_and_bad_combinations():
    card = METHODS.get("symba").card
    assert card.recipes["reference"]["alpha"][0] == 4.0 and card.family == "symba"
    assert "theta_scale" not in card.options  # no threshold
    assert all(o.source for k, o in card.options.items() if k in ("alpha", "scale", "negatives", "vote"))
    assert make(alpha=0.5).options["alpha"] == 0.5 and make().options["peer_weight"] == 0.0
    with pytest.raises(OptionError, match="theta_scale"):
        make(theta_scale=2.0)
    with pytest.raises(OptionError, match="alpha"):
        make(alpha=0.0)

    def skip(widths, epochs=2, **opts):
        config = RunConfig(
            "symba", "digits", "mlp", epochs=epochs, backbone_options={"widths": list(widths)}, method_options=opts
        )
        return METHODS.get("symba").obj.skip(config)

    assert skip((16, 16)) is None
    assert skip((16,)).startswith("symba: vote='skip-first' needs at least 2 layers")
    assert "symba greedy training needs epochs >= layers" in skip((16, 16, 16), training="greedy")
    assert "mixed scale conventions" in skip((16, 16), scale="sum-rms", norm="l2")


def test_learns_digits():
    r = fit(
        RunConfig(
            method="symba",
            dataset="digits",
            backbone="mlp",
            epochs=4,
            batch_size=64,
            backbone_options={"widths": [128, 128]},
        ),
        "cpu",
    )
    assert r.status == "done"
    assert r.metrics["test_acc.goodness"] > 0.6 and r.metrics["test_acc.softmax"] > 0.85, r.metrics  # chance: 0.10
    assert {"train_loss.unit1", "train_loss.unit2", "train_goodness_neg.unit2"} <= set(r.curves[-1])
