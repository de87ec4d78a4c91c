"""Trifecta: SymBa's loss, the overlapping local updates against a hand-written step, gradients within the
window, inference by goodness per label, a digits run, and its refusals."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import ffbench.core.method
from ffbench.core.config import RunConfig
from ffbench.core.method import Context
from ffbench.core.registry import METHODS
from ffbench.methods.goodness import symba_loss
from ffbench.plan.design import incompatibility
from ffbench.training import backbones
from ffbench.training.train import fit, method_options

K = 3


def make(olu=True, norm="bn", lr=1e-2, **opts):
    torch.manual_seed(0)
    bb = backbones.build("cnn.trifecta", (1, 8, 8), K, {"channels": [4, 4, 6], "pool": [0], "norm": norm})
    ctx = Context(device=torch.device("cpu"), generator=torch.Generator().manual_seed(0), lr=lr, epochs=2)
    config = RunConfig(
        method="trifecta", dataset="digits", backbone="cnn.trifecta", method_options={"olu": olu, **opts}
    )
    return METHODS.get("trifecta").obj(bb, K, method_options(config), ctx)


def batch():
    torch.manual_seed(1)
    return torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])


def test_symba_loss_hand_computed():
    g_pos = torch.tensor([1.0, 0.5], requires_grad=True)
    g_neg = torch.tensor([0.2, 0.9], requires_grad=True)
    loss = symba_loss(g_pos, g_neg, 4.0)
    sp = lambda u: math.log1p(math.exp(u))  # noqa: E731
    assert loss.item() == pytest.approx((sp(-4 * 0.8) + sp(-4 * -0.4)) / 2)
    loss.backward()  # symmetric: dL/dG+ = -dL/dG- = -alpha sigmoid(-alpha delta) / B
    want = torch.tensor([-4 * torch.sigmoid(torch.tensor(-3.2)) / 2, -4 * torch.sigmoid(torch.tensor(1.6)) / 2])
    torch.testing.assert_close(g_pos.grad, want)
    torch.testing.assert_close(g_neg.grad, -want)


def hand_batch(m, x, y, y_neg, t, olu, lr):
    """One training batch of the reference, written out: [x; x] with the label maps, each block's goodness,
    SymBa's loss; block k steps iff k + t is odd (every block without OLU), its Adam over the block before
    it (block 0: the embedding) and itself; a block that steps hands on detached, any other inside the graph."""
    units, losses = m.backbone.units, {}
    labels = torch.cat([y, y_neg])
    h = torch.cat([torch.cat([x, x]), m.embedding.weight[labels].view(-1, 1, 8, 8)], 1)
    for k, unit in enumerate(units):
        out = unit(h)
        if (k + t) % 2 == 1 or not olu:
            g = (out**2).mean(dim=(1, 2, 3))
            loss = F.softplus(-4.0 * (g[:6] - g[6:])).mean()
            opt = torch.optim.Adam(
                [*(units[k - 1].parameters() if k else [m.embedding.weight]), *unit.parameters()], lr
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[k], out = loss.item(), out.detach()
        h = out
    return losses


@pytest.mark.parametrize("olu", [True, False])
def test_steps_equal_the_hand_written_reference(olu):
    m, (x, y) = make(olu), batch()
    gen = torch.Generator().manual_seed(0)  # the method's stream: negatives uniform over the wrong classes
    for t in range(2 if olu else 1):  # with OLU no block steps twice in two batches: fresh Adam states by hand
        y_neg = (y + torch.randint(1, K, y.shape, generator=gen)) % K
        assert not (y_neg == y).any()
        expected = copy.deepcopy(m)
        losses = hand_batch(expected, x, y, y_neg, t, olu, 1e-2)
        stats = m.train_step(x, y)
        assert sorted(losses) == ([1] if t == 0 else [0, 2]) if olu else [0, 1, 2]
        for k, value in losses.items():
            assert stats[f"loss.unit{k + 1}"].item() == pytest.approx(value, rel=1e-5)
        for (name, got), want in zip(m.named_parameters(), expected.parameters()):
            torch.testing.assert_close(got, want, msg=name)


@pytest.mark.parametrize("olu", [True, False])
def test_a_loss_reaches_one_block_back_under_olu_and_none_without(olu, monkeypatch):
    m, (x, y) = make(olu), batch()
    touched, losses, real_step = [], [], ffbench.core.method.step
    unit_loss = m.unit_loss

    def recording_loss(k, scores, y, h):
        out = unit_loss(k, scores, y, h)
        losses.append(out["loss"])
        return out

    def recording_step(opt, loss):
        names, params = zip(*m.named_parameters())
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        parts = {n.split(".")[2] if n.startswith("backbone") else "emb" for n, g in zip(names, grads) if g is not None}
        touched.append(parts)
        real_step(opt, loss)

    monkeypatch.setattr(m, "unit_loss", recording_loss)
    monkeypatch.setattr(ffbench.core.method, "step", recording_step)
    m.train_step(x, y)
    m.train_step(x, y)
    if olu:  # batch 0: block 1 (reaching block 0 and the embedding); batch 1: block 0, and block 2 reaching block 1
        assert touched == [{"emb", "0", "1"}, {"emb", "0"}, {"1", "2"}]
    else:
        assert touched == [{"emb", "0"}, {"1"}, {"2"}] * 2
    assert len(losses) == 6  # every block logs its loss on every batch, stepping or not


def test_inference_is_the_argmax_of_the_goodness_per_label():
    m, (x, _) = make(), batch()
    m.eval()
    rules, per_unit = m.evaluate(x)
    goodness = torch.zeros(3, 6, K)  # blocks, rows, labels: one pass per label, BatchNorm on running statistics
    with torch.no_grad():
        for label in range(K):
            h = torch.cat([x, m.embedding.weight[label].view(1, 1, 8, 8).expand(6, 1, 8, 8)], 1)
            for k, unit in enumerate(m.backbone.units):
                h = unit(h)
                goodness[k, :, label] = (h**2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(torch.stack(per_unit), goodness)
    torch.testing.assert_close(rules["last"], goodness[-1])
    torch.testing.assert_close(rules["all"], goodness.mean(0))
    assert m.default_rule == "last" and make(rule="all").default_rule == "all"


def test_learns_digits():
    config = RunConfig(
        method="trifecta",
        dataset="digits",
        backbone="cnn.trifecta",
        epochs=2,
        batch_size=64,
        backbone_options={"channels": [16, 16, 32], "pool": [0, 2]},
    )
    r = fit(config, "cpu")
    assert r.status == "done" and r.metrics["test_acc"] > 0.5, r.metrics  # chance: 0.1
    assert {"test_acc.last", "test_acc.all", "test_acc.unit3"} <= set(r.metrics)
    assert {"train_goodness_pos.unit1", "train_goodness_neg.unit3"} <= set(r.curves[-1])


def test_other_options_train_one_step():
    x, y = batch()
    for opts in ({"loss": "ff"}, {"embedding": "fixed"}, {"norm": "ln"}):
        norm = opts.pop("norm", "bn")
        m = make(norm=norm, **opts)
        emb = m.embedding.weight.clone()
        assert torch.isfinite(m.train_step(x, y)["loss"])
        m.train_step(x, y)  # block 0 steps on the second batch
        assert torch.equal(m.embedding.weight, emb) == (opts.get("embedding") == "fixed")


def test_refusals():
    cls = METHODS.get("trifecta").obj
    no_label = RunConfig("trifecta", "digits", "cnn.trifecta", backbone_options={"label_channels": 0})
    assert "label_channels = 1" in cls.skip(no_label)
    assert cls.skip(RunConfig("trifecta", "digits", "cnn.trifecta")) is None
    assert "runs only on backbones cnn.trifecta" in incompatibility("trifecta", "cnn")
    with pytest.raises(ValueError, match="symba"):
        method_options(RunConfig("trifecta", "digits", "cnn.trifecta", method_options={"loss": "bce"}))


def test_the_strict_variant_detaches_every_block_under_each_recipe():
    strict, olu = METHODS.get("trifecta.local").obj.card, METHODS.get("trifecta").obj.card
    assert strict.defaults["olu"] is False and strict.recipe("reference", "mnist")[0]["olu"] is False
    assert olu.defaults["olu"] is True and olu.recipe("reference", "mnist")[0]["olu"] is True


def test_the_backbone_adds_the_label_channel_and_bp_runs_without_it():
    small = {"channels": [4, 4, 6], "pool": [0, 2]}
    bb = backbones.build("cnn.trifecta", (1, 8, 8), K, small)
    assert bb.in_shape == (2, 8, 8) and bb.out_shapes == [(4, 4, 4), (4, 4, 4), (6, 2, 2)]
    ln = backbones.build("cnn.trifecta", (1, 8, 8), K, {**small, "norm": "ln"})
    assert isinstance(ln.units[1][0], torch.nn.LayerNorm) and ln.units[1][0].normalized_shape == (4, 4, 4)
    config = RunConfig("bp", "digits", "cnn.trifecta", epochs=1, backbone_options={**small, "label_channels": 0})
    assert fit(config, "cpu").status == "done"
