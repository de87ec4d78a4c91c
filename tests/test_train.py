import subprocess
import sys

import torch
import torch.nn.functional as F

from ffbench.core.config import RunConfig
from ffbench.core.heads import make_head
from ffbench.core.method import LocalMethod, Method, method_card
from ffbench.core.seeds import Streams
from ffbench.training.train import SavedTensorMeter, StepSums, fit


@method_card(
    name="test.nan", summary="test-only: its loss is NaN", rules=("head",), capabilities=frozenset({"any-backbone"})
)
class NaNMethod(Method):
    def __init__(self, backbone, num_classes, options, ctx):
        super().__init__(backbone, num_classes, options, ctx)
        self.head = make_head("linear", backbone.out_shapes[-1], num_classes)

    def train_step(self, x, y):
        return {"loss": torch.tensor(float("nan"))}

    def evaluate(self, x):
        return {"head": self.head(self.backbone(x))}, []


@method_card(
    name="test.local",
    summary="test-only: greedy per-unit heads, step and free",
    rules=("last",),
    capabilities=frozenset({"any-backbone", "unit-heads"}),
)
class Greedy(LocalMethod):
    def make_head(self, k, shape):
        return make_head("linear", shape, self.num_classes)

    def unit_loss(self, k, scores, y):
        return F.cross_entropy(scores, y)

    def rules(self, scores, features):
        return {"last": scores[-1]}


def digits_mlp(method, **kw):
    return RunConfig(
        method=method,
        dataset="digits",
        backbone="mlp",
        epochs=kw.pop("epochs", 8),
        backbone_options={"widths": [128, 128]},
        **kw,
    )


def test_bp_and_deepsup_learn_digits():
    for method in ("bp", "bp.deepsup"):
        r = fit(digits_mlp(method), "cpu")
        assert r.status == "done"
        assert r.metrics["test_acc"] > 0.90, (method, r.metrics)
        assert len(r.curves) == 8 and r.compute["epoch_time_s"] > 0 and r.compute["images_per_s"] > 0
    assert set(r.metrics) >= {"val_acc.last", "test_acc.average", "test_acc.unit1", "test_acc.unit2"}


def test_model_selection_uses_validation_only():
    r = fit(digits_mlp("bp", epochs=5), "cpu")
    best = max(r.curves, key=lambda row: row["val_acc"])  # first maximum wins
    assert r.metrics["best_epoch"] == best["epoch"] and r.metrics["test_acc"] == best["test_acc"]
    assert r.metrics["test_acc_last"] == r.curves[-1]["test_acc"]


def test_eval_every_evaluates_every_kth_and_the_last_epoch_and_trains_the_same():
    every = fit(digits_mlp("bp", epochs=5, eval_every=2), "cpu")
    full = fit(digits_mlp("bp", epochs=5), "cpu")
    assert [r["epoch"] for r in every.curves if "val_acc" in r] == [2, 4, 5]
    assert [r["train_loss"] for r in every.curves] == [r["train_loss"] for r in full.curves]  # training untouched
    evaluated = {r["epoch"]: r for r in full.curves if r["epoch"] in (2, 4, 5)}
    best = max(evaluated.values(), key=lambda row: row["val_acc"])
    assert every.metrics["best_epoch"] == best["epoch"] and every.metrics["test_acc"] == best["test_acc"]
    assert every.metrics["test_acc_last"] == full.metrics["test_acc_last"]
    assert "eval_every" not in digits_mlp("bp").without_seed()  # at its default: existing cell IDs hold
    assert digits_mlp("bp", eval_every=2).without_seed()["eval_every"] == 2


def test_nan_loss_is_a_recorded_failure():
    r = fit(digits_mlp("test.nan", epochs=3), "cpu")
    assert r.status == "failed" and "non-finite" in r.error and r.curves == []


def test_same_seed_same_result_and_streams_stable_across_processes():
    a, b = fit(digits_mlp("bp", epochs=2, seed=4), "cpu"), fit(digits_mlp("bp", epochs=2, seed=4), "cpu")
    assert [r["val_acc"] for r in a.curves] == [r["val_acc"] for r in b.curves]
    here = Streams(11).as_dict()
    code = "from ffbench.core.seeds import Streams; print(Streams(11).as_dict())"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert eval(there) == here and len(set(here.values())) == len(here)


def test_saved_bytes_show_step_and_free():
    # 3 layers of width 512 at batch 64: BP keeps every layer's input and output, a local method one layer's
    cfg = dict(dataset="digits", backbone="mlp", epochs=1, batch_size=64, backbone_options={"widths": [512] * 3})
    bp = fit(RunConfig(method="bp", **cfg), "cpu").compute["saved_bytes_per_step"]
    local = fit(RunConfig(method="test.local", **cfg), "cpu").compute["saved_bytes_per_step"]
    layer = 64 * 512 * 4
    assert bp >= 3 * layer and layer < local < 2.2 * layer  # BP: all 3 outputs; local: one input + output


def test_meter_counts_a_storage_once_and_frees_it():
    w = torch.randn(8, 8, requires_grad=True)
    meter = SavedTensorMeter([w])
    x = torch.randn(4, 8)
    with meter.hooks():
        h = (x @ w).relu()
        loss = (h * h).sum()
    assert meter.current > 0 and meter.current == meter.peak
    loss.backward()
    del h, loss
    assert meter.current == 0


def test_step_sums_equal_adding_each_key_alone():
    """Stacked sums are the per-key float64 sums bit for bit, also for values per seed, mixed shapes and
    dtypes, and keys that change mid-epoch."""
    gen = torch.Generator().manual_seed(0)
    steps = [
        {
            "loss": torch.rand((), generator=gen) * 1e3,
            "seeds": torch.rand(3, generator=gen),
            "part": torch.rand((), generator=gen, dtype=torch.float64),
            "n": torch.tensor(i),
        }
        for i in range(50)
    ]
    steps[30] = {"part": steps[30]["part"], "loss": steps[30]["loss"], "extra": torch.tensor(2.5)}
    sums, each = StepSums(), {}
    for i, stats in enumerate(steps):
        sums.add(stats)
        for k, v in stats.items():
            each[k] = each[k] + v.double() if k in each else v.double()
        got = sums.totals()
        assert list(got) == list(each)  # first-logged order
        assert all(torch.equal(got[k], each[k]) for k in each), i


class Overlapping(Greedy):
    """Greedy heads with overlapping local updates: unit k's optimizer holds unit k-1 and unit k (and k's head)."""

    grad_window = 2

    def unit_params(self, k):
        prev = list(self.backbone.units[k - 1].parameters()) if k else []
        return [*prev, *super().unit_params(k)]


def _overlapping(update="local"):
    from ffbench.core.method import Context
    from ffbench.training.backbones import build

    torch.manual_seed(0)
    backbone = build("mlp", (1, 4, 4), 3, {"widths": [6, 5, 4]})
    cls = type("O", (Overlapping,), {"update": update}) if update != "local" else Overlapping
    return cls(backbone, 3, {}, Context(device=torch.device("cpu"), generator=torch.Generator()))


def test_grad_window_units_step_in_turns_and_a_loss_reaches_the_unit_before():
    import copy

    method = _overlapping()
    x, y = torch.randn(8, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for t in range(2):  # batch 0: unit 1 steps (k + t + 1 even, 0-based); batch 1: units 0 and 2
        before = copy.deepcopy(method)
        stats = method.train_step(x, y)
        assert set(stats) == {"loss", "loss.unit1", "loss.unit2", "loss.unit3"}  # every unit logs its loss
        steppers = [k for k in range(3) if (k + t) % 2 == 1]
        expected = copy.deepcopy(before)
        h, units = x, expected.backbone.units
        for k in range(3):
            out = units[k](h)
            if k in steppers:  # by hand: the loss back-propagates through unit k and unit k-1, one Adam step
                params = expected.unit_params(k)
                opt = torch.optim.Adam(params, lr=1e-3)
                opt.zero_grad()
                F.cross_entropy(expected.heads[k](out), y).backward()
                opt.step()
                out = out.detach()
            h = out
        for (name, got), want in zip(method.named_parameters(), expected.parameters()):
            assert torch.equal(got, want), (t, name)
        changed = {
            n.split(".")[1]
            for n, p in method.backbone.named_parameters()
            if not torch.equal(p, before.get_parameter(f"backbone.{n}"))
        }
        assert changed == ({"0", "1"} if t == 0 else {"0", "1", "2"}), (t, changed)
    assert method.turn == 2
    method.start_epoch(1)
    assert method.turn == 0  # the turns restart with each epoch


def test_grad_window_needs_local_updates():
    import pytest

    with pytest.raises(ValueError, match="grad_window 2: .* under update 'local' only"):
        _overlapping("joint")
