"""scff: the unit loss and the shared-weight first unit against hand computation, the self-contrastive pairs, units
that never read a label and a probe trained on frozen features, the layer schedule and learning-rate decays, the
refused configurations, and that it learns digits."""

import math

import pytest
import torch
import torch.nn.functional as F

import ffbench.methods.scff as scff
from ffbench.core.config import RunConfig
from ffbench.core.method import Context
from ffbench.core.registry import METHODS
from ffbench.training import backbones
from ffbench.training.train import fit, method_options


def make(widths=(12, 10), epochs=4, seed=0, **opts):
    bb = backbones.build("mlp", (1, 8, 8), 10, {"widths": list(widths)})
    ctx = Context(device=torch.device("cpu"), generator=torch.Generator().manual_seed(seed), epochs=epochs)
    options = method_options(RunConfig(method="scff", dataset="digits", backbone="mlp", method_options=opts))
    return METHODS.get("scff").obj(bb, 10, options, ctx)


def stdnorm(v):  # the reference's per-sample standardisation, written out
    m = sum(v) / len(v)
    sd = math.sqrt(sum((a - m) ** 2 for a in v) / (len(v) - 1))
    return [(a - m) / (1e-10 + sd) for a in v]


def test_unit_loss_is_the_papers_formula():
    m = make(theta_pos=[4.0, 1.5], theta_neg=[6.0, 2.5], lam=[0.1, 0.0])
    u = torch.tensor([[1.0, -2.0, 3.0], [2.0, 2.0, -1.0], [0.5, 0.0, 0.0], [-1.0, 4.0, 1.0]])  # 2 pos, 2 neg
    g = [sum(max(a, 0) ** 2 for a in row) / 3 for row in u.tolist()]

    def sp(t):
        return math.log1p(math.exp(t))

    for k, (tp, tn, lam) in enumerate([(4.0, 6.0, 0.1), (1.5, 2.5, 0.0), (1.5, 2.5, 0.0)]):  # unit 3: the last value
        want = (sp(tp - g[0]) + sp(tp - g[1])) / 2 + (sp(g[2] - tn) + sp(g[3] - tn)) / 2 + lam * (g[0] + g[1]) / 2
        out = m.unit_loss(k, u, torch.zeros(2, dtype=torch.long), u)
        assert out["loss"].item() == pytest.approx(want, rel=1e-6)
        assert out["goodness_pos"].item() == pytest.approx((g[0] + g[1]) / 2, rel=1e-6)


def test_first_unit_shares_one_weight_on_the_standardised_pair():
    m = make()
    pair = torch.randn(3, 2, 1, 8, 8)
    lin = m.backbone.units[0][-2]
    u, hand = m.unit_outputs(0, pair)
    assert u is hand
    for r in range(3):
        z = torch.tensor(stdnorm(pair[r].flatten().tolist()))
        want = lin.weight @ z[:64] + lin.weight @ z[64:] + 2 * lin.bias
        assert torch.allclose(u[r], want, atol=1e-5)
    h = torch.randn(3, 12)  # a later unit: its standardised input, one weight
    want = torch.stack([m.backbone.units[1][-2](torch.tensor(stdnorm(row.tolist()))) for row in h])
    assert torch.allclose(m.unit_outputs(1, h)[0], want, atol=1e-5)
    t = m.pass_on(0, torch.tensor([[1.0, 2.0, 6.0]]))  # triangle: ReLU(u - mean u)
    assert t.tolist() == [[0.0, 0.0, 3.0]]


def test_pairs_are_views_of_one_image_and_of_two():
    m = make()
    x = torch.rand(6, 1, 8, 8) + 1.0  # background (the minimum) 1 after the shift: a fill of 0 would show
    for views in ("identical", "translate"):
        m.options["views"] = views
        rows = m._pairs(torch.Generator().manual_seed(3), x)
        assert rows.shape == (12, 2, 1, 8, 8)
        pos, neg = rows[:6], rows[6:]
        assert torch.equal(neg[:, 0], pos[:, 0])  # the same first view
        shifts = {next(j for j in range(6) if torch.equal(neg[i, 1], pos[j, 1])) - i for i in range(6)}
        assert len({s % 6 for s in shifts}) == 1 and 0 not in {s % 6 for s in shifts}  # one shift r in [1, B)
        for i in range(6):
            canvas = F.pad(x[i] - x[i].min(), (2, 2, 2, 2))
            for view in pos[i]:
                if views == "identical":
                    assert torch.equal(view, x[i])
                else:  # a translation of image i by at most 2 pixels, its background on the border
                    assert any(
                        torch.equal(view, canvas[:, dy : dy + 8, dx : dx + 8]) for dy in range(5) for dx in range(5)
                    )
    m.start_epoch(3)  # the probe's epochs: the pair (x, x)
    assert torch.equal(m._pairs(torch.Generator(), x), torch.stack([x, x], 1))


def test_units_never_read_a_label_and_the_probe_trains_on_frozen_features(record_steps):
    x = torch.randn(16, 1, 8, 8)
    models = []
    for labels in (torch.arange(16) % 10, torch.randint(0, 10, (16,))):
        torch.manual_seed(0)  # the same weights
        models.append(make())
        before = [p.clone() for p in models[-1].backbone.parameters()]
        models[-1].train_step(x, labels)
    assert not all(torch.equal(p, q) for p, q in zip(before, models[-1].backbone.parameters()))  # unit 1 trained
    assert all(torch.equal(p, q) for p, q in zip(*(m.parameters() for m in models)))
    m = make(training="simultaneous", epochs=4)
    touched = record_steps(scff, m)
    stats = m.train_step(x, torch.arange(16) % 10)
    assert touched == [{"0"}, {"1"}] and "loss.probe" not in stats  # each unit's loss reaches its unit alone
    m.start_epoch(2)
    units = [p.clone() for p in m.backbone.parameters()]
    probe = [p.clone() for p in m.probe.parameters()]
    stats = m.train_step(x, torch.arange(16) % 10)
    assert touched[2:] == [{"head"}] and set(stats) == {"loss", "loss.probe"}
    assert all(torch.equal(p, q) for p, q in zip(units, m.backbone.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(probe, m.probe.parameters()))


def test_probe_rule_reads_every_units_standardised_output():
    m = make()
    x = torch.randn(5, 1, 8, 8)
    rules, per_unit = m.evaluate(x)
    h, feats = torch.stack([x, x], 1), []
    for k in range(2):
        u = m.unit_outputs(k, h)[0]
        h = torch.relu(u - u.mean(1, keepdim=True))
        feats.append(torch.stack([torch.tensor(stdnorm(r.tolist())) for r in h]))
    assert per_unit == [] and set(rules) == {"probe"}
    assert torch.allclose(rules["probe"], m.probe(torch.cat(feats, 1)), atol=1e-5)


def test_layer_schedule():
    ref = {k: v for k, (v, _) in scff._REFERENCE.items()}
    assert scff.scff_windows({**ref, "training": "greedy"}, 2, 79) == ([(0, 20), (20, 29)], 29)
    o = {"training": "greedy", "unit_epochs": None, "probe_epochs": None}
    assert scff.scff_windows(o, 3, 10) == ([(0, 2), (2, 4), (4, 5)], 5)  # half to the probe, the rest split
    assert scff.scff_windows({**o, "training": "simultaneous", "probe_epochs": 3}, 2, 10) == ([(0, 7)] * 2, 7)
    m = make(epochs=4)
    assert [m.active, m.probing] == [[True, False], False]
    m.start_epoch(1)
    assert [m.active, m.probing, m.units_to_run()] == [[False, True], False, 2]
    m.start_epoch(3)
    assert [m.active, m.probing, m.units_to_run()] == [[False, False], True, 2]


def test_a_probe_on_a_pretrained_source_trains_from_the_first_epoch():
    m = make(epochs=4)
    m.adapt("linear-probe", 1)
    m.start_epoch(0)
    assert [m.active, m.probing] == [[False, False], True]
    assert not any(p.requires_grad for p in m.backbone.parameters())


def test_learning_rate_decays():
    m = make(unit_lr=[0.01, 0.02], gamma=[0.5], period=[2], probe_epochs=50, epochs=52)
    x, y = torch.randn(4, 1, 8, 8), torch.arange(4)
    seen = []
    for _ in range(5):
        m.train_step(x, y)
        seen.append(m.opts[0].param_groups[0]["lr"])
    assert seen == [0.01, 0.005, 0.005, 0.0025, 0.0025]  # x 0.5 once the unit's batch count + 1 reaches 2, 4, ...
    assert m.unit_steps.tolist() == [5, 0]
    want = {2: 1e-3, 11: 1e-3, 12: 5e-4, 19: 2.5e-4, 51: 1e-3 / 2**7}  # halved after probe epochs 10, 17, ... 45
    for epoch, lr in want.items():
        m.readout_opt.param_groups[0]["lr"] = 1e-3  # the harness resets it (set_lr_factor) before each epoch
        m.start_epoch(epoch)
        assert m.readout_opt.param_groups[0]["lr"] == pytest.approx(lr)


@pytest.mark.parametrize(
    "opts, epochs, says",
    [
        ({"probe_epochs": 5}, 5, "leaves none of the 5 epochs"),
        ({"unit_epochs": [2, 2]}, 6, "summing to 3"),
        ({"unit_epochs": [1, 1, 1]}, 6, "one entry per unit (2)"),
        ({"unit_epochs": [1, 2], "training": "simultaneous"}, 6, "needs training='greedy'"),
        ({}, 2, "at least one epoch each"),
        ({"probe_units": [2]}, 6, "beyond the last"),
        ({"unit_lr": [0.1]}, 6, "one value per unit (2)"),
    ],
)
def test_bad_combinations_are_refused_before_anything_trains(opts, epochs, says):
    cfg = RunConfig(
        method="scff", dataset="digits", backbone="mlp", epochs=epochs, backbone_options={"widths": [8, 8]},
        method_options=opts,
    )  # fmt: skip
    assert says in METHODS.get("scff").obj.skip(cfg)
    with pytest.raises(ValueError, match="scff"):
        fit(cfg, "cpu")


def test_learns_digits():
    r = fit(
        RunConfig(
            method="scff", dataset="digits", backbone="mlp", epochs=4, seed=0, backbone_options={"widths": [64, 64]}
        ),
        "cpu",
    )
    assert r.status == "done", r.error
    assert r.metrics["test_acc"] > 0.6  # chance is 0.1
    assert r.metrics["best_epoch"] >= 3  # the probe's epochs
