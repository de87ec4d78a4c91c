"""ff.hinton: loss formulas, layer-1 overlay algebra, negatives, stop-gradient, the joint step (memory,
frozen layers, learning rates), option checks, and that it learns digits."""

import math

import pytest
import torch
import torch.nn.functional as F

import ffbench.core.method
import ffbench.methods.ff as ff
from ffbench.core.config import RunConfig
from ffbench.core.method import Context
from ffbench.core.registry import METHODS
from ffbench.training import backbones
from ffbench.training.train import SavedTensorMeter, fit, method_options


def sp(u):
    return math.log1p(math.exp(u))


def make(widths=(16, 16, 16), in_shape=(1, 8, 8), k=10, epochs=2, backbone="mlp", optimizer="sgd", **opts):
    bb = backbones.build(backbone, in_shape, k, {"widths": list(widths)} if backbone == "mlp" else {})
    ctx = Context(
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
        optimizer=optimizer,
        lr=1e-3,
        epochs=epochs,
    )
    options = method_options(RunConfig(method="ff.hinton", dataset="digits", backbone=backbone, method_options=opts))
    return METHODS.get("ff.hinton").obj(bb, k, options, ctx)


def test_ff_loss_hand_computed():
    g_pos, g_neg = torch.tensor([3.0, 1.0]), torch.tensor([0.5, 2.5])
    want = (sp(2 - 3) + sp(2 - 1) + sp(0.5 - 2) + sp(2.5 - 2)) / 4
    assert ff.ff_loss(g_pos, g_neg, 2.0).item() == pytest.approx(want, rel=1e-6)
    bce = F.binary_cross_entropy_with_logits(torch.cat([g_pos, g_neg]) - 2, torch.tensor([1.0, 1, 0, 0]))
    assert ff.ff_loss(g_pos, g_neg, 2.0).item() == pytest.approx(bce.item(), rel=1e-6)


def test_peer_loss_hand_computed():
    assert ff.peer_loss(torch.tensor([1.0, 2.0, 3.0])).item() == pytest.approx(2 / 3)
    m = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    ff.peer_loss(m).backward()  # gradient 2 (m_j - mean m) / N
    assert torch.allclose(m.grad, torch.tensor([-2 / 3, 0.0, 2 / 3]))


def test_layer_one_overlay_algebra_matches_the_plain_overlay():
    for scale in ff.SCALES:
        m = make(scale=scale)
        x = torch.randn(5, 1, 8, 8)
        ssq, base = m._image(x)
        labels = F.one_hot(torch.tensor([[0, 3, 9, 1, 2], [4, 4, 0, 7, 5]]), 10).float()
        fast = m._first(ssq, base, labels)
        xr = x.flatten(1)
        lo, hi = xr.aminmax(dim=1, keepdim=True)
        xr = (xr - lo) / (hi - lo)
        for v in range(2):
            plain = torch.cat([labels[v], xr[:, 10:]], 1)
            assert torch.allclose(fast[v], m.linears[0](ff.normalise(plain, m.norm)), atol=1e-5)
        one_hot, neutral, neutral_ssq = m._label_rows(base)  # the squared norms every row shares, exactly
        assert torch.equal(m._first(ssq, base, labels, one_hot), fast)
        assert torch.equal(m._first(ssq, base, neutral, neutral_ssq), m._first(ssq, base, neutral.clone()))


def test_goodness_and_threshold_per_scale():
    m = make(widths=(16, 8), scale="sum-rms")
    assert m.thetas == [16, 8] and ff.goodness(torch.ones(2, 8), m.goodness).tolist() == [8.0, 8.0]
    assert ff.normalise(torch.full((1, 4), 3.0), m.norm).pow(2).mean().item() == pytest.approx(1.0)
    m = make(widths=(16, 8), scale="mean-l2", theta_scale=0.5)
    assert m.thetas == [1.0, 1.0] and ff.goodness(torch.ones(2, 8), m.goodness).tolist() == [1.0, 1.0]
    assert ff.normalise(torch.full((1, 4), 3.0), m.norm).norm().item() == pytest.approx(1.0)


def test_negatives_never_true_label_by_default():
    gen = torch.Generator().manual_seed(1)
    y = torch.arange(10).repeat(500)
    neg = ff.sample_negatives(y, 10, "uniform", gen)
    assert (neg != y).all() and set(neg.tolist()) == set(range(10))
    for c in range(10):  # uniform over the 9 wrong classes
        assert len(set(neg[y == c].tolist())) == 9
    logits = torch.randn(len(y), 10)
    logits[torch.arange(len(y)), y] = 50.0  # even when the model is sure of the true class
    assert (ff.sample_negatives(y, 10, "hard", gen, logits) != y).all()
    perm = ff.sample_negatives(y, 10, "permutation", gen)
    assert sorted(perm.tolist()) == sorted(y.tolist())
    assert make().options["negatives"] == "uniform"


def test_hard_negatives_draw_what_multinomial_draws():
    y, logits = torch.arange(10).repeat(30), torch.randn(300, 10) * 3
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    probs = logits.scatter(1, y[:, None], float("-inf")).softmax(1)
    for _ in range(3):  # the same labels, and the stream left in the same state
        want = torch.multinomial(probs, 1, generator=b)[:, 0]
        assert torch.equal(ff.sample_negatives(y, 10, "hard", a, logits), want)


def test_no_gradient_crosses_a_layer_boundary(monkeypatch):
    """One step of the summed losses, and each loss reaches its own layer (or the read-out) alone."""
    m = make(widths=(16, 16, 16))
    losses, touched, steps = [], [], []
    unit_loss, readouts, real_step = m.unit_loss, m.readouts, ffbench.core.method.step
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8)

    def recording_loss(k, scores, y, h):
        out = unit_loss(k, scores, y, h)
        losses.append(out["loss"])
        return out

    def recording_readouts(features):
        out = readouts(features)
        losses.append(torch.nn.functional.cross_entropy(out["head"], y))  # the loss the loop takes of it
        return out

    def recording_step(opt, loss):
        names, params = zip(*m.named_parameters())
        for part in losses:
            grads = torch.autograd.grad(part, params, retain_graph=True, allow_unused=True)
            touched.append(
                {
                    n.split(".")[2] if n.startswith("backbone") else "head"
                    for n, g in zip(names, grads)
                    if g is not None and g.abs().sum() > 0
                }
            )
        steps.append(opt)
        real_step(opt, loss)

    monkeypatch.setattr(m, "unit_loss", recording_loss)
    monkeypatch.setattr(m, "readouts", recording_readouts)
    monkeypatch.setattr(ffbench.core.method, "step", recording_step)
    stats = m.train_step(x, y)
    assert touched == [{"0"}, {"1"}, {"2"}, {"head"}] and steps == [m.opt]
    assert {"loss", "loss.unit1", "loss.unit2", "loss.unit3", "loss.head"} <= set(stats)
    assert all(not v.requires_grad and v.dim() == 0 for v in stats.values())
    assert stats["loss"] == stats["loss.unit1"] + stats["loss.unit2"] + stats["loss.unit3"] + stats["loss.head"]


def test_joint_step_holds_every_layer_until_the_step():
    def peak(n_layers):
        m = make(widths=[64] * n_layers, vote="last")  # the read-out's input then has the same width
        meter = SavedTensorMeter(list(m.parameters()))
        with meter.hooks():
            m.train_step(torch.randn(32, 1, 8, 8), torch.arange(32) % 10)
        assert meter.current == 0  # every graph is freed by the step
        return meter.peak

    assert peak(6) - peak(4) == peak(4) - peak(2) > 0  # each layer's graph adds its own bytes


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_layers_that_do_not_train_stay_as_they_are(optimizer):
    """A layer outside its greedy window, or frozen by adaptation, gets no gradient and no update (Adam's
    zero-gradient update would move it); the others and the read-out train."""

    def step_changes(m, epoch):
        m.start_epoch(epoch)
        before = {n: p.detach().clone() for n, p in m.named_parameters()}
        x, y = torch.randn(8, 1, 8, 8), torch.arange(8)
        for _ in range(2):
            m.train_step(x, y)
        return {
            n.split(".")[2] if n.startswith("backbone") else n
            for n, p in m.named_parameters()
            if not torch.equal(before[n], p)
        }

    m = make(widths=(16, 16, 16), epochs=6, training="greedy", optimizer=optimizer)
    step_changes(m, 0)  # layer 1 trains first: its optimizer state exists when it stops training
    assert step_changes(m, 2) == {"1", "head.weight"}
    m = make(widths=(16, 16, 16), optimizer=optimizer)
    step_changes(m, 0)
    m.adapt("last-k-units", 1)
    assert step_changes(m, 0) == {"2", "head.weight"}


def test_one_optimizer_keeps_the_read_out_settings_and_the_schedule():
    m = make(head_lr=0.5, head_weight_decay=0.25)
    layers, head = m.opt.param_groups
    assert (layers["lr"], head["lr"], layers["weight_decay"], head["weight_decay"]) == (1e-3, 0.5, 0.0, 0.25)
    assert {id(p) for p in head["params"]} == {id(m.head.weight)} and len(layers["params"]) == 6
    m.ctx.set_lr_factor(0.5)
    assert (layers["lr"], head["lr"]) == (5e-4, 0.25) and m.ctx.optimizers == [m.opt]


def test_greedy_trains_one_layer_per_epoch_block():
    m = make(widths=(16, 16, 16), epochs=6, training="greedy")
    seen = []
    for e in range(6):
        m.start_epoch(e)
        seen.append([k for k, on in enumerate(m.active) if on])
    assert seen == [[0], [0], [1], [1], [2], [2]]
    stats = m.train_step(torch.randn(8, 1, 8, 8), torch.arange(8))
    assert "loss.unit3" in stats and "loss.unit1" not in stats


def test_evaluate_rules_and_unit_scores():
    m = make(widths=(16, 16, 16))
    rules, units = m.evaluate(torch.randn(7, 1, 8, 8))
    assert list(rules) == ["goodness", "softmax"] and all(s.shape == (7, 10) for s in rules.values())
    assert len(units) == 3 and torch.allclose(rules["goodness"], units[1] + units[2])  # skip-first voting
    x = torch.randn(2000, 1, 8, 8)  # 2000 x 10 label rows: evaluated in chunks, same result
    big, halves = m.evaluate(x), [m.evaluate(h) for h in x.split(1000)]
    assert torch.allclose(big[0]["goodness"], torch.cat([h[0]["goodness"] for h in halves]), atol=1e-4)
    assert torch.allclose(big[1][0], torch.cat([h[1][0] for h in halves]), atol=1e-4)
    rules, units = make(vote="all").evaluate(torch.randn(3, 1, 8, 8))
    assert torch.allclose(rules["goodness"], units[0] + units[1] + units[2])


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="mixed scale conventions.*scale='mean-l2'"):
        make(goodness="mean", norm="l2")
    with pytest.raises(ValueError, match="mixed scale conventions"):
        make(scale="sum-rms", norm="l2")
    with pytest.raises(ValueError, match="mixed scale conventions"):
        make(scale="mean-l2", goodness="sum")
    make(scale="mean-l2", goodness="mean", norm="l2")  # restating the convention is fine
    for conv in ("cnn", "cnn.cfse"):
        with pytest.raises(ValueError, match=r"needs a fully connected backbone \(mlp\)"):
            make(backbone=conv, in_shape=(1, 8, 8))

    def skip(widths, epochs=2, **opts):
        config = RunConfig(
            method="ff.hinton",
            dataset="digits",
            backbone="mlp",
            epochs=epochs,
            backbone_options={"widths": list(widths)},
            method_options=opts,
        )
        return METHODS.get("ff.hinton").obj.skip(config)

    assert "at least 2 layers" in skip((16,))
    assert "greedy" in skip((16, 16, 16), training="greedy")
    assert skip((16, 16, 16)) is None


def test_learns_digits():
    r = fit(
        RunConfig(
            method="ff.hinton",
            dataset="digits",
            backbone="mlp",
            epochs=8,
            batch_size=100,
            optimizer="sgd",
            lr=3e-3,
            weight_decay=3e-4,
            schedule="cooldown",
            backbone_options={"widths": [256, 256]},
        ),
        "cpu",
    )
    assert r.status == "done"
    # chance is 0.10; the goodness rule on 8x8 digits is weaker (the label takes 10 of the 64 inputs)
    assert r.metrics["test_acc.goodness"] > 0.6 and r.metrics["test_acc.softmax"] > 0.8, r.metrics
    assert {"train_loss.unit1", "train_loss.unit2", "train_loss.head"} <= set(r.curves[-1])


def test_design_hook_names_bad_cells():
    cls = METHODS.get("ff.hinton").obj
    ok = RunConfig("ff.hinton", "digits", "mlp", backbone_options={"widths": [8, 8]})
    assert cls.skip(ok) is None
    assert "mixed scale" in cls.skip(RunConfig("ff.hinton", "digits", "mlp", method_options={"norm": "l2"}))
    assert "greedy" in cls.skip(
        RunConfig(
            "ff.hinton",
            "digits",
            "mlp",
            epochs=2,
            method_options={"training": "greedy"},
            backbone_options={"widths": [8, 8, 8]},
        )
    )


def test_every_option_value_trains_and_evaluates():
    x, y = torch.randn(6, 1, 8, 8), torch.arange(6)
    values = {
        "negatives": ff.NEGATIVES,
        "scale": tuple(ff.SCALES),
        "vote": ("all", "last"),
        "training": ("greedy",),
        "pixels": ("as-given",),
        "init": ("torch",),
    }
    for key, levels in values.items():  # one option at a time, the others at their defaults
        for level in levels:
            m = make(widths=(8, 8), **{key: level})
            m.start_epoch(1)
            assert torch.isfinite(m.train_step(x, y)["loss"]), (key, level)
            rules, units = m.evaluate(x)
            assert rules["goodness"].shape == (6, 10) and len(units) == 2
