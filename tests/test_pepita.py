"""PEPITA: the update equals the paper's rule (computed here by hand) with no backward pass, F is fixed and
drawn at initialisation, inference is one clean pass, the learning-rate schedule and the decay reach the step,
the method learns on digits, and bad configurations are refused before anything trains."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ffbench.core.config import RunConfig
from ffbench.core.options import OptionError, check_options
from ffbench.core.registry import METHODS
from ffbench.core.seeds import Streams
from ffbench.data.data import prepare
from ffbench.training.train import build, fit

CPU = torch.device("cpu")
SGD = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0}


def make(mopts=None, widths=(16, 12), seed=0, **train):
    cfg = RunConfig(
        method="pepita",
        dataset="digits",
        backbone="mlp",
        seed=seed,
        backbone_options={"widths": list(widths)},
        method_options=mopts or {},
        **{**SGD, **train},
    )
    streams = Streams(seed)
    data = prepare("digits", streams, CPU)
    return build(cfg, data, streams, CPU), data


def hand_step(weights, fb, x, y, masks, lr, keep_biases=None):
    """The paper's rule written out: two passes sharing the masks, then W -= lr * dW / B for every layer."""
    k = weights[-1].shape[0]
    target = F.one_hot(y, k).float()

    def run(inp):
        hs = [inp]
        for w, m in zip(weights[:-1], masks):
            hs.append(torch.relu(hs[-1] @ w.T) * m)
        return hs, torch.softmax(hs[-1] @ weights[-1].T, 1)

    hs, out = run(x)
    hs_mod, out_mod = run(x + (out - target) @ fb.T)  # x~ = x + F e
    new = []
    for layer, w in enumerate(weights):
        if layer + 1 < len(weights):
            delta = (hs[layer + 1] - hs_mod[layer + 1]) * masks[layer]  # (h - h~), masked as the code does
        else:
            delta = out_mod - target  # e~
        new.append(w - lr * delta.T @ hs_mod[layer] / len(x))
    return new


def weights_of(method):
    return [lin.weight.detach().clone() for lin in [*method.linears, method.out]]


def test_update_is_the_papers_rule_and_no_backward_runs(monkeypatch):
    method, data = make({"keep": 0.5, "decay_at": []})
    x, y = data.train.x[:32].flatten(1), data.train.y[:32]
    before, fb = weights_of(method), method.feedback.clone()
    g = torch.Generator().set_state(method.ctx.generator.get_state())
    keep = (torch.rand(32, 28, generator=g) < 0.5).float() / 0.5  # the masks the step will draw
    masks = keep.split([16, 12], 1)

    def no_backward(*a, **k):
        raise AssertionError("PEPITA must not call backward")

    monkeypatch.setattr(torch.Tensor, "backward", no_backward)
    monkeypatch.setattr(torch.autograd, "backward", no_backward)
    method.train()
    method.start_epoch(0)
    stats = method.train_step(data.train.x[:32], y)
    expected = hand_step(before, fb, x, y, masks, lr=0.1)
    for got, want in zip(weights_of(method), expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert torch.equal(method.feedback, fb)  # F is fixed
    assert all(not lin.bias.any() for lin in method.linears)  # bias-free: zero and never updated
    assert torch.isfinite(stats["loss"]) and not stats["loss"].requires_grad


def test_the_schedule_and_the_decay_scale_the_update():
    method, data = make({"keep": 1.0, "decay_at": [0.5]}, epochs=4)
    x, y = data.train.x[:16], data.train.y[:16]
    base = hand_step(weights_of(method), method.feedback, x.flatten(1), y, [torch.ones(1)] * 2, lr=0.1)
    change = [b - w for b, w in zip(base, weights_of(method))]
    method.ctx.set_lr_factor(0.5)  # the harness's schedule, on the optimizer the method steps
    method.start_epoch(2)  # the second half: decay 0.1 at round(0.5 * 4) = 2
    start = weights_of(method)
    method.train_step(x, y)
    for got, w0, d in zip(weights_of(method), start, change):
        torch.testing.assert_close(got - w0, 0.05 * d, rtol=1e-4, atol=1e-7)
    method.start_epoch(1)
    assert method.factor == 1.0


def test_feedback_matrix_is_drawn_at_initialisation_with_the_codes_scale():
    a, _ = make()
    fb = a.feedback
    bound = math.sqrt(6 / 64) * 0.05
    assert fb.shape == (64, 10) and fb.abs().max() <= bound and fb.min() < 0 < fb.max()
    assert torch.equal(make()[0].feedback, fb)  # the init stream: the same seed, the same F
    assert not torch.equal(make(seed=1)[0].feedback, fb)
    sign, _ = make({"error": "sign", "feedback_dist": "positive", "feedback_scale": 0.5})
    assert sign.feedback.min() >= 0 and sign.feedback.max() <= math.sqrt(6 / 64) * 0.5 * 0.1
    assert "feedback" not in dict(a.named_parameters())


def test_inference_is_one_clean_pass_and_argmax_of_the_output():
    method, data = make({"keep": 0.5})
    x = data.test.x[:20]
    method.eval()
    rules, units = method.evaluate(x)
    w = weights_of(method)
    h = torch.relu(torch.relu(x.flatten(1) @ w[0].T) @ w[1].T)
    torch.testing.assert_close(rules["output"], h @ w[2].T)  # no dropout mask at inference
    assert units == [] and torch.equal(method.evaluate(x)[0]["output"], rules["output"])


def test_trained_biases_follow_the_same_rule():
    method, data = make({"bias": "trained", "keep": 1.0, "decay_at": []})
    b0 = [lin.bias.detach().clone() for lin in method.linears]
    method.start_epoch(0)
    method.train_step(data.train.x[:16], data.train.y[:16])
    assert all(not torch.equal(lin.bias, b) for lin, b in zip(method.linears, b0))


def test_linear_probe_trains_the_output_layer_alone():
    method, data = make({"decay_at": []})
    method.adapt("linear-probe", 1)
    before = weights_of(method)
    method.start_epoch(0)
    method.train_step(data.train.x[:16], data.train.y[:16])
    after = weights_of(method)
    assert all(torch.equal(a, b) for a, b in zip(after[:-1], before[:-1])) and not torch.equal(after[-1], before[-1])
    assert method.default_rule == "output"


def test_learns_digits_without_saving_activations():
    cfg = RunConfig(
        method="pepita",
        dataset="digits",
        backbone="mlp",
        epochs=3,
        backbone_options={"widths": [128]},
        **{**SGD, "momentum": 0.9},
    )
    result = fit(cfg, "cpu")
    assert result.status == "done", result.error
    assert result.metrics["test_acc"] > 0.8  # chance is 0.1
    assert result.compute["saved_bytes_per_step"] == 0  # no graph: the report shows '—', not 0 MB


def test_bad_configurations_are_refused_before_training():
    card = METHODS.get("pepita").card
    for bad in ({"keep": 0.0}, {"error": "grad"}, {"decay_at": [1.5]}, {"feedback_dist": "normal"}):
        with pytest.raises(OptionError):
            check_options(card.options, bad, "method pepita")
    adam = RunConfig(method="pepita", dataset="digits", backbone="mlp", optimizer="adam")
    assert "decay_at" in METHODS.get("pepita").obj.skip(adam)
    assert METHODS.get("pepita").obj.skip(RunConfig(**{**adam.to_dict(), "method_options": {"decay_at": []}})) is None
    with pytest.raises(ValueError, match="fully connected"):
        make_cnn = RunConfig(method="pepita", dataset="digits", backbone="cnn", **SGD)
        streams = Streams(0)
        build(make_cnn, prepare("digits", streams, CPU), streams, CPU)
