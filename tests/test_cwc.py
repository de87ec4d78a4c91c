"""cwc / cwc.nocfse: loss formulas, ILT windows, stop-gradient, step-and-free memory, frozen-layer BN,
backbone and channel checks, and that it learns digits."""

import math

import pytest
import torch
import torch.nn as nn

import ffbench.methods.cwc as cwc
from ffbench.core.config import RunConfig
from ffbench.core.method import Context
from ffbench.core.registry import METHODS
from ffbench.core.seeds import Streams
from ffbench.training import backbones
from ffbench.training.train import SavedTensorMeter, build, fit, method_options, run_data

CH = [10, 20, 20, 40]


def sp(u):
    return math.log1p(math.exp(u))


def make(name="cwc", backbone="cnn.cfse", channels=CH, k=10, epochs=4, **opts):
    bb = backbones.build(backbone, (1, 8, 8), k, {"channels": list(channels)})
    ctx = Context(
        device=torch.device("cpu"), generator=torch.Generator().manual_seed(0), optimizer="adam", lr=0.01, epochs=epochs
    )
    options = method_options(RunConfig(method=name, dataset="digits", backbone=backbone, method_options=opts))
    return METHODS.get(name).obj(bb, k, options, ctx)


def test_losses_hand_computed():
    g, y = torch.tensor([[1.0, 2.0, 0.5]]), torch.tensor([1])
    ce = -2 + math.log(math.e + math.e**2 + math.e**0.5)
    pvn = 0.5 * (sp(2 - 2) + sp((1 + 0.5) / 2 - 2))
    assert cwc.cwc_loss(g, y, "cwc").item() == pytest.approx(ce, rel=1e-6)
    assert cwc.cwc_loss(g, y, "pvn").item() == pytest.approx(pvn, rel=1e-6)
    assert cwc.cwc_loss(g, y, "cwg").item() == pytest.approx(0.28 * ce + 0.72 * pvn, rel=1e-6)


def test_class_goodness_is_mean_square_per_channel_group():
    h = torch.zeros(1, 4, 2, 2)
    h[0, 2:] = 3.0  # the second of two groups
    h[0, 0, 0, 0] = 2.0
    from ffbench.core.heads import grouped_goodness

    assert grouped_goodness(h, 2).tolist() == [[0.5, 9.0]]


def test_ilt_windows():
    for table, modes in cwc.ILT_TABLES.items():
        for mode, ref in modes.items():
            total = cwc.ILT_FULL.get(table, ref[-1][1])
            head = cwc.ILT_HEAD_START[table][mode]
            assert cwc.ilt_windows(mode, table, "exact", len(ref), total) == (ref, head)
            assert cwc.ilt_windows(mode, table, "proportional", len(ref), total) == (ref, head)
    assert cwc.ilt_windows("acc", "fashion-mnist", "exact", 4, 20)[0][-1] == (0, 20)  # reference's 20-epoch cut
    assert cwc.ilt_windows("none", "mnist", "proportional", 3, 7) == ([(0, 7)] * 3, 0)
    for e in (1, 2, 3, 10, 50):
        for mode in ("acc", "fast"):
            for n in (1, 2, 4, 6):
                w, head = cwc.ilt_windows(mode, "cifar10", "proportional", n, e)
                assert len(w) == n and all(0 <= s < t <= e for s, t in w) and w[-1][1] == e and 0 <= head < e
    assert cwc.ilt_windows("acc", "fashion-mnist", "proportional", 4, 46) == ([(0, 20), (0, 30), (0, 38), (0, 46)], 0)
    assert cwc.ilt_windows("fast", "fashion-mnist", "proportional", 4, 8) == ([(0, 4), (1, 5), (1, 7), (2, 8)], 3)


def test_no_gradient_crosses_a_unit_boundary(record_steps):
    m = make(ilt="none")
    touched = record_steps(cwc, m)
    stats = m.train_step(torch.randn(16, 1, 8, 8), torch.arange(16) % 10)
    assert touched == [{"0"}, {"1"}, {"2"}, {"3"}, {"head"}]
    assert {"loss", "loss.unit1", "loss.unit4", "loss.head"} <= set(stats)
    assert all(not v.requires_grad and v.dim() == 0 for v in stats.values())


def test_step_and_free_memory_is_one_unit():
    m = make(ilt="none")
    meter = SavedTensorMeter(list(m.parameters()))
    with meter.hooks():
        m.train_step(torch.randn(32, 1, 8, 8), torch.arange(32) % 10)
    bp_meter = SavedTensorMeter(list(m.parameters()))
    with bp_meter.hooks():  # the same units end to end, as backprop would hold them
        h = torch.randn(32, 1, 8, 8)
        for u in m.backbone.units:
            h = u(h)
        h.sum().backward()
    assert meter.peak < 0.6 * bp_meter.peak


def test_ilt_freezes_units_and_their_batchnorm():
    m = make(ilt="fast", epochs=6, ilt_table="mnist")
    m.start_epoch(0)
    assert m.active == [True, False, False, False] and not m.head_active
    bn = [mod for mod in m.backbone.units[1].modules() if isinstance(mod, nn.BatchNorm2d)][0]
    assert not bn.training
    before = bn.running_mean.clone()
    stats = m.train_step(torch.randn(16, 1, 8, 8), torch.arange(16) % 10)
    assert set(stats) == {"loss", "loss.unit1"}
    m.eval(), m.train()  # the harness's evaluation round trip keeps frozen units in eval mode
    assert not bn.training and m.backbone.units[0].training
    m.start_epoch(4)  # windows [0,3) [1,4) [2,5) [3,6); the head from epoch 5
    assert m.active == [False, False, True, True] and not m.head_active
    m.start_epoch(5)
    assert m.active == [False, False, False, True] and m.head_active
    m.train_step(torch.randn(16, 1, 8, 8), torch.arange(16) % 10)
    assert torch.equal(bn.running_mean, before)  # frozen: running statistics untouched
    m = make(ilt="fast", epochs=6, ilt_table="mnist", frozen_bn="train")  # the reference's behaviour
    m.start_epoch(5)
    bn = [mod for mod in m.backbone.units[1].modules() if isinstance(mod, nn.BatchNorm2d)][0]
    before = bn.running_mean.clone()
    m.train_step(torch.randn(16, 1, 8, 8), torch.arange(16) % 10)
    assert bn.training and not torch.equal(bn.running_mean, before)


def test_sf_head_double_softmax_switch():
    x, y = torch.randn(16, 1, 8, 8), torch.zeros(16, dtype=torch.long)
    losses = []
    for double in (False, True):
        m = make(ilt="none", sf_double_softmax=double)
        with torch.no_grad():  # logits = [10, 0, ..., 0] whatever the input
            m.head.weight.zero_()
            m.head.bias.copy_(torch.tensor([10.0] + [0.0] * 9))
        losses.append(m.train_step(x, y)["loss.head"].item())
    p0 = math.exp(10) / (math.exp(10) + 9)
    assert losses[0] == pytest.approx(-10 + math.log(math.exp(10) + 9), abs=1e-6)
    assert losses[1] == pytest.approx(-p0 + math.log(math.exp(p0) + 9 * math.exp((1 - p0) / 9)), rel=1e-4)


def test_evaluate_rules_and_unit_scores():
    m = make()
    rules, units = m.evaluate(torch.randn(5, 1, 8, 8))
    assert list(rules) == ["avg", "sf"] and len(units) == 4 and torch.equal(rules["avg"], units[-1])
    assert all(s.shape == (5, 10) for s in list(rules.values()) + units)


def test_bad_backbones_and_channels_are_refused_before_anything_trains():
    def why(name, backbone, channels=CH, classes=None):
        options = {"widths": [20]} if backbone == "mlp" else {"channels": list(channels)}
        config = RunConfig(name, "digits", backbone, classes=classes, backbone_options=options)
        return METHODS.get(name).obj.skip(config)

    assert "runs on the cnn.cfse backbone only" in why("cwc", "cnn")
    assert "runs on the cnn backbone only" in why("cwc.nocfse", "cnn.cfse")
    assert "not divisible by the class count 10" in why("cwc.nocfse", "cnn", [15, 30, 30, 60])
    assert "not divisible by the class count 3" in why("cwc", "cnn.cfse", [12, 30, 31], classes=3)
    assert "runs on the cnn.cfse backbone only" in why("cwc", "mlp")
    assert why("cwc", "cnn.cfse") is None and why("cwc.nocfse", "cnn") is None
    # a run built directly is refused with the same words
    config = RunConfig("cwc", "digits", "cnn", backbone_options={"channels": list(CH)})
    streams = Streams(0)
    data = run_data(config, streams, torch.device("cpu"))
    with pytest.raises(ValueError, match="runs on the cnn.cfse backbone only"):
        build(config, data, streams, torch.device("cpu"))


@pytest.mark.parametrize("name,backbone", [("cwc", "cnn.cfse"), ("cwc.nocfse", "cnn")])
def test_learns_digits(name, backbone):
    r = fit(
        RunConfig(
            method=name,
            dataset="digits",
            backbone=backbone,
            epochs=3,
            batch_size=128,
            optimizer="adam",
            lr=0.01,
            backbone_options={"channels": [10, 20, 40, 80]},
        ),
        "cpu",
    )
    assert r.status == "done"
    assert r.metrics["test_acc.avg"] > 0.8 and r.metrics["test_acc.sf"] > 0.75, r.metrics  # chance 0.10
    assert {"train_loss.unit1", "train_loss.unit4", "train_loss.head"} <= set(r.curves[0])


def test_design_hook_names_bad_cells():
    cwc_cls, plain_cls = METHODS.get("cwc").obj, METHODS.get("cwc.nocfse").obj
    assert cwc_cls.skip(RunConfig("cwc", "digits", "cnn.cfse", backbone_options={"channels": CH})) is None
    assert "cnn.cfse backbone only" in cwc_cls.skip(RunConfig("cwc", "digits", "cnn"))
    assert "not divisible" in plain_cls.skip(
        RunConfig("cwc.nocfse", "digits", "cnn", backbone_options={"channels": [16, 32, 64, 64]})
    )
    assert "not divisible" in cwc_cls.skip(
        RunConfig("cwc", "digits", "cnn.cfse", classes=3, backbone_options={"channels": [12, 30, 31]})
    )


def test_every_option_value_trains_and_evaluates():
    x, y = torch.randn(6, 1, 8, 8), torch.arange(6)
    values = {
        "loss": cwc.LOSSES,
        "ilt": ("fast", "none"),
        "ilt_scaling": ("exact",),
        "frozen_bn": ("train",),
        "sf_double_softmax": (True,),
    }
    for key, levels in values.items():  # one option at a time, the others at their defaults
        for level in levels:
            m = make(channels=[10, 10, 20, 20], **{key: level})
            for e in range(4):
                m.start_epoch(e)
                assert torch.isfinite(m.train_step(x, y)["loss"]), (key, level, e)
            rules, units = m.evaluate(x)
            assert rules["avg"].shape == (6, 10) and len(units) == 4
