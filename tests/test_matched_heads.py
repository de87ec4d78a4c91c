"""Architecture-matched BP baselines: `head = "match:<method>"` gives bp / bp.deepsup the local method's heads,
unit outputs and hand-off (inside the graph), so on the same weights and input their per-unit scores, rules
and hand-offs equal the local method's; linear heads pool by average or flatten."""

import pytest
import torch

from ffbench.core.config import RunConfig
from ffbench.core.heads import LinearHead
from ffbench.core.method import Context
from ffbench.core.registry import METHODS
from ffbench.training import backbones
from ffbench.training.train import fit

CASES = {  # match -> (local method, backbone, options, input shape)
    "cwc": ("cwc", "cnn.cfse", {"channels": [20, 20, 40, 40]}, (1, 8, 8)),
    "asge": ("asge", "vgg.asge", {"channels": [8, 16, 16], "pool": [0, 1]}, (1, 12, 12)),
    "sff": ("sff", "cnn", {"channels": [8, 16, 16]}, (1, 8, 8)),
    "monoforward": ("monoforward", "mlp", {"widths": [16, 12, 8]}, (1, 8, 8)),
}


def build(name, backbone, bb_options, shape, **options):
    torch.manual_seed(0)
    b = backbones.build(backbone, shape, 10, bb_options)
    card = METHODS.get(name).card
    o = {**{k: v for k, v in card.defaults.items() if k in card.options}, **options}
    return METHODS.get(name).obj(b, 10, o, Context(torch.device("cpu"), torch.Generator(), epochs=2))


@pytest.mark.parametrize("match", list(CASES))
def test_matched_heads_and_hand_off_equal_the_local_method(match):
    local_name, backbone, bb_options, shape = CASES[match]
    local_opts = {"ilt": "none"} if local_name == "cwc" else {}
    local = build(local_name, backbone, bb_options, shape, **local_opts)
    deep = build("bp.deepsup", backbone, bb_options, shape, head=f"match:{match}")
    # the same seed built the same weights
    assert all(torch.equal(a, b) for a, b in zip(local.state_dict().values(), deep.local.state_dict().values()))
    local.eval(), deep.eval()
    x = torch.randn(6, *shape)
    with torch.no_grad():
        rules_l, units_l = local.evaluate(x)
        rules_d, units_d = deep.evaluate(x)
    assert len(units_l) == len(units_d) and all(torch.equal(a, b) for a, b in zip(units_l, units_d))
    for r, v in rules_l.items():
        assert torch.equal(rules_d[f"{match}.{r}"], v), r
    # the hand-off: same values, but inside BP's graph, where the local method cuts it
    h = x
    for k in range(len(local.backbone.units) - 1):
        _, _, cut = local.forward_unit(k, h)
        feat, out = deep.local.unit_outputs(k, h)
        passed = deep.local.pass_on(k, out)
        assert torch.allclose(passed, cut) and passed.grad_fn is not None and cut.grad_fn is None
        h = cut
    # bp: only the last head, through the same hand-offs
    bp = build("bp", backbone, bb_options, shape, head=f"match:{match}")
    bp.eval()
    with torch.no_grad():
        assert torch.allclose(bp.evaluate(x)[0]["head"], rules_l["last"] if "last" in rules_l else units_l[-1])


@pytest.mark.parametrize("name", ["bp", "bp.deepsup"])
def test_gradients_cross_the_matched_hand_off(name):
    deep = build(name, "vgg.asge", {"channels": [8, 16], "pool": [0]}, (1, 8, 8), head="match:asge")
    before = deep.backbone.units[0].conv.weight.clone()
    proj = deep.local.heads[-1].weight.clone()
    deep.train_step(torch.randn(8, 1, 8, 8), torch.arange(8) % 10)
    assert not torch.equal(before, deep.backbone.units[0].conv.weight)  # the last loss reaches unit 1
    assert torch.equal(proj, deep.local.heads[-1].weight)  # ASGE's projection stays fixed


def test_cwc_match_trains_the_sf_read_out_on_detached_features():
    deep = build("bp.deepsup", "cnn.cfse", {"channels": [20, 20]}, (1, 8, 8), head="match:cwc")
    w = deep.local.head.weight.clone()
    stats = deep.train_step(torch.randn(8, 1, 8, 8), torch.arange(8) % 10)
    assert "loss.head" in stats and not torch.equal(w, deep.local.head.weight)
    assert all(p is not deep.local.head.weight for g in deep.opt.param_groups for p in g["params"])


def test_linear_head_pools_by_average_or_flatten():
    h = torch.randn(2, 4, 3, 3)
    avg, flat = LinearHead((4, 3, 3), 10), LinearHead((4, 3, 3), 10, "flatten")
    assert avg.fc.in_features == 4 and flat.fc.in_features == 36
    assert torch.allclose(flat(h), flat.fc(h.flatten(1))) and torch.allclose(avg(h), avg.fc(h.mean((2, 3))))
    bp = build("bp", "cnn", {"channels": [8, 16]}, (1, 8, 8), pool="flatten")
    assert bp.heads[-1].fc.in_features == 16 * 4 * 4


def test_match_cwc_elsewhere_is_skipped_and_a_matched_run_trains():
    cfg = RunConfig(method="bp.deepsup", dataset="synthetic", backbone="mlp", method_options={"head": "match:cwc"})
    assert "needs CwC's backbone" in METHODS.get("bp.deepsup").obj.skip(cfg)
    cfg = RunConfig(
        method="bp.deepsup",
        dataset="synthetic",
        backbone="vgg.asge",
        epochs=1,
        batch_size=32,
        method_options={"head": "match:asge"},
        backbone_options={"channels": [8, 16], "pool": [0]},
    )
    r = fit(cfg, "cpu")
    assert r.status == "done" and {"test_acc.asge.linear", "test_acc.asge.sum", "test_acc.unit2"} <= set(r.metrics)
