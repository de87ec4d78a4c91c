"""CaFo: random blocks never trained, each predictor trained on its fixed block's detached features, the
sparsemax loss, the whole-set fit (closed form, full-batch gradient descent as the code writes it), the summed
probabilities, learning on digits, and the configurations it refuses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ffbench.core.config import RunConfig
from ffbench.core.registry import METHODS
from ffbench.core.seeds import Streams
from ffbench.data.data import prepare
from ffbench.methods.cafo import head_loss, sparsemax
from ffbench.training.train import build, fit

CPU = torch.device("cpu")
CNN = {"channels": [8, 16, 32], "pool": [0, 1, 2]}  # CaFo's block shape, narrow: conv -> ReLU -> pool -> BN


def config(method="cafo", mopts=None, **train):
    return RunConfig(
        method=method, dataset="digits", backbone="cnn", backbone_options=CNN, method_options=mopts or {}, **train
    )


def make(method="cafo", mopts=None, **train):
    cfg = config(method, mopts, **train)
    streams = Streams(0)
    data = prepare("digits", streams, CPU)
    return build(cfg, data, streams, CPU), data


def block_features(method, x):
    """Each block's flattened output, computed by hand from the backbone in eval mode (its statistics held)."""
    method.eval()
    out, h = [], x
    with torch.no_grad():
        for unit in method.backbone.units:
            h = unit(h)
            out.append(h.flatten(1))
    method.train()
    return out


def test_blocks_never_train_and_each_predictor_learns_from_its_own_loss(monkeypatch):
    method, data = make()
    blocks = {k: v.clone() for k, v in method.backbone.named_parameters()}
    heads = [h[1].weight.clone() for h in method.heads]
    in_opts = {id(p) for opt in method.ctx.optimizers for g in opt.param_groups for p in g["params"]}
    assert in_opts == {id(h[1].weight) for h in method.heads}  # the predictors, never a block
    import ffbench.core.method

    seen, real_step = [], ffbench.core.method.step
    for k, head in enumerate(method.heads):
        head[1].weight.register_hook(lambda grad, k=k: seen.append((current[0], k)))
    current = [None]

    def tracking_step(opt, loss):
        current[0] = method.opts.index(opt)
        real_step(opt, loss)

    monkeypatch.setattr(ffbench.core.method, "step", tracking_step)
    for i in range(3):
        method.train_step(data.train.x[i * 64 : (i + 1) * 64], data.train.y[i * 64 : (i + 1) * 64])
    after = dict(method.backbone.named_parameters())
    assert all(torch.equal(v, after[k]) for k, v in blocks.items())  # the random blocks as drawn
    assert all(p.grad is None for p in method.backbone.parameters())
    assert all(not torch.equal(a, h[1].weight) for a, h in zip(heads, method.heads))
    assert seen and all(loss_k == head_k for loss_k, head_k in seen)
    bn = next(m for m in method.backbone.units[0].modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert bn.momentum is None and int(bn.num_batches_tracked) == 3  # the training set's statistics, gathered


def test_sparsemax_and_its_loss_by_hand():
    p, tau = sparsemax(torch.tensor([[1.0, 0.5, -1.0]]))
    assert torch.allclose(p, torch.tensor([[0.75, 0.25, 0.0]])) and torch.allclose(tau, torch.tensor([[0.25]]))
    z = torch.randn(6, 5, dtype=torch.double, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    loss = head_loss("sl", z, y)
    onehot = F.one_hot(y, 5).double()
    p = sparsemax(z.detach())[0]
    # Martins & Astudillo 2016: L(z; y) = ||onehot - z||^2 / 2 - ||p - z||^2 / 2, gradient p - onehot
    by_hand = (0.5 * (onehot - z.detach()).pow(2).sum(1) - 0.5 * (p - z.detach()).pow(2).sum(1)).mean()
    assert torch.allclose(loss, by_hand)
    loss.backward()
    assert torch.allclose(z.grad, (p - onehot) / 6)
    assert torch.allclose(p.sum(1), torch.ones(6, dtype=torch.double))


def test_closed_form_is_the_least_squares_predictor():
    method, data = make("cafo.mse", {}, batch_size=2000)
    x, y = data.train.x, data.train.y
    stats = method.train_step(x, y)
    onehot = F.one_hot(y, 10).double()
    for k, z in enumerate(block_features(method, x)):
        w = torch.linalg.lstsq(z.double(), onehot, driver="gelsd").solution
        assert torch.allclose(method.heads[k][1].weight.double(), w.T, atol=1e-4, rtol=1e-3)
        assert torch.isclose(
            stats[f"loss.unit{k + 1}"], (z.double() @ w - onehot).pow(2).sum(1).mean().float(), rtol=1e-3
        )


@pytest.mark.parametrize("method", ["cafo.ce", "cafo.sl"])
def test_full_batch_steps_are_the_codes_gradient_descent(method):
    cafo, data = make(method, {"fit_steps": 4}, batch_size=2000, optimizer="sgd", momentum=0.0, lr=0.01)
    x, y = data.train.x, data.train.y
    cafo.train_step(x, y)
    onehot = F.one_hot(y, 10).float()
    prob = (lambda s: sparsemax(s)[0]) if method == "cafo.sl" else (lambda s: s.softmax(1))
    for k, z in enumerate(block_features(cafo, x)):
        w = torch.ones(z.shape[1], 10)  # the code's start, then W <- W - step * Z'(prob(ZW) - Y) / N
        for _ in range(4):
            w = w - 0.01 * z.T @ (prob(z @ w) - onehot) / len(z)
        assert torch.allclose(cafo.heads[k][1].weight, w.T, atol=1e-5)


@pytest.mark.parametrize("loss", ["ce", "sl"])
def test_inference_sums_each_blocks_probabilities(loss):
    method, data = make(mopts={"loss": loss})
    method.train_step(data.train.x[:64], data.train.y[:64])
    method.eval()
    rules, units = method.evaluate(data.val.x[:32])
    prob = (lambda s: sparsemax(s)[0]) if loss == "sl" else (lambda s: s.softmax(1))
    assert torch.allclose(rules["sum"], sum(prob(s) for s in units))
    assert torch.equal(rules["last"], units[-1]) and method.default_rule == "sum"


def test_bn_batch_normalises_every_batch_by_its_own_statistics():
    method, data = make(mopts={"bn": "batch"})
    assert not any("running" in k for k in method.state_dict())
    method.eval()
    x = data.val.x[:32]
    alone = method.evaluate(x[:16])[1][0]
    assert not torch.allclose(alone, method.evaluate(x)[1][0][:16])  # the rows' scores depend on their batch


@pytest.mark.parametrize(
    "method,mopts,train",
    [
        ("cafo", {}, {"epochs": 3, "batch_size": 64}),
        ("cafo.mse", {}, {"epochs": 1, "batch_size": 2000}),
    ],
)
def test_learns_digits(method, mopts, train):
    result = fit(config(method, mopts, **train), "cpu")
    assert result.status == "done", result.error
    assert result.metrics["test_acc"] > 0.8  # chance is 0.1
    assert {"test_acc.sum", "test_acc.last", "test_acc.unit3"} <= set(result.metrics)


def test_refused_configurations():
    full = METHODS.get("cafo.ce").obj
    assert full.skip(config("cafo.ce", batch_size=1293)) is None  # exactly the training set
    why = full.skip(config("cafo.ce", batch_size=64))
    assert "whole training set" in why and "batch_size >= 1293" in why
    assert "loss = 'mse'" in full.skip(config("cafo.ce", {"fit": "closed_form"}))
    with pytest.raises(ValueError, match="whole training set"):
        make("cafo.ce", batch_size=64)
    assert full.seed_batching is False and METHODS.get("cafo").obj.seed_batching is True
    defaults = {m: METHODS.get(m).card.defaults for m in ("cafo.ce", "cafo.mse", "cafo.sl")}
    assert [(d["loss"], d["fit"]) for d in defaults.values()] == [
        ("ce", "steps"),
        ("mse", "closed_form"),
        ("sl", "steps"),
    ]


@pytest.mark.parametrize("method", ["cafo", "cafo.mse"])
def test_linear_probe_fits_the_last_predictor_only(method):
    cafo, data = make(method, batch_size=2000)
    cafo.adapt("linear-probe", 1)
    cafo.start_epoch(0)
    stats = cafo.train_step(data.train.x, data.train.y)
    assert set(stats) == {"loss", "loss.unit3"}
    assert all(torch.equal(h[1].weight, torch.ones_like(h[1].weight)) for h in cafo.heads[:-1])
    assert not torch.equal(cafo.heads[-1][1].weight, torch.ones_like(cafo.heads[-1][1].weight))
