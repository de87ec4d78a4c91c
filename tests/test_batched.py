"""Seeds trained together (``ffbench.training.batched``): each seed's results equal its run alone, a seed that diverges
fails alone, each seed sees its own streams, what cannot be stacked runs alone, and the runner batches a cell's
seeds by default."""

import math
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from suites import suite_toml

from ffbench.cli import main
from ffbench.core.config import RunConfig
from ffbench.core.heads import make_head
from ffbench.core.method import LocalMethod, Method, method_card, step
from ffbench.core.options import Option
from ffbench.core.seeds import Streams
from ffbench.data.data import prepare
from ffbench.execution.execute import batch_problem
from ffbench.record.store import Store
from ffbench.training.batched import Unbatchable, fit_seeds, why_not
from ffbench.training.train import DIVERGED, build, fit

# A seed trained with others equals its run alone bit for bit: every stacked kernel is used only where it gives
# each seed's result exactly, weight gradients are summed seed by seed (ffbench.training.batched). So every value, the
# training losses included, is compared exactly (NaN equal to NaN).

SEEDS = [0, 1, 2]
MLP = {"widths": [32, 32]}
CNN = {"channels": [8, 16], "pool": [1]}
CFSE = {"channels": [10, 20, 20, 40]}
CASES = {  # id: (method, backbone, backbone options, method options, training fields)
    "bp-mlp": ("bp", "mlp", MLP, {}, {}),
    "bp-cnn": ("bp", "cnn", CNN, {}, {}),
    "deepsup-mlp": ("bp.deepsup", "mlp", MLP, {}, {}),
    "deepsup-cnn": ("bp.deepsup", "cnn", CNN, {}, {}),
    "deepsup-match-sff": ("bp.deepsup", "cnn", CNN, {"head": "match:sff"}, {}),
    "deepsup-match-cwc": ("bp.deepsup", "cnn.cfse", CFSE, {"head": "match:cwc"}, {"batch_size": 128}),
    "deepsup-match-asge": ("bp.deepsup", "vgg.asge", CNN, {"head": "match:asge"}, {}),
    "running-mean": ("test.running", "mlp", MLP, {}, {}),
    "cwc": ("cwc", "cnn.cfse", CFSE, {}, {"batch_size": 128}),
    "sff-mlp": ("sff", "mlp", MLP, {}, {}),
    "sff-cnn-augmented": ("sff", "cnn", CNN, {}, {"crop_padding": 1, "flip": True}),
    "asge": ("asge", "vgg.asge", CNN, {}, {}),
    "monoforward-mlp": ("monoforward", "mlp", MLP, {}, {}),
    "monoforward-cnn-options": (
        "monoforward",
        "cnn",
        CNN,
        {"m0_input_head": True, "act": "tanh", "bias": False, "init": "kaiming", "pool": "avg"},
        {},
    ),
    "deepsup-match-monoforward": ("bp.deepsup", "mlp", MLP, {"head": "match:monoforward"}, {}),
    "scff": ("scff", "mlp", MLP, {}, {"epochs": 4}),
    "cafo-cnn": ("cafo", "cnn", CNN, {}, {}),
    "cafo-cnn-sl-batch-bn": ("cafo", "cnn", CNN, {"loss": "sl", "bn": "batch"}, {}),
    "trifecta": ("trifecta", "cnn.trifecta", {"channels": [8, 8, 16], "pool": [0, 2]}, {}, {"batch_size": 32}),
}


def configs(method, backbone="mlp", backbone_options=MLP, method_options=None, seeds=SEEDS, epochs=2, **train):
    return [
        RunConfig(
            method=method,
            dataset="digits",
            backbone=backbone,
            seed=s,
            epochs=epochs,
            backbone_options=backbone_options,
            method_options=method_options or {},
            **train,
        )
        for s in seeds
    ]


def same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def assert_same(alone, together, seeds):
    """``together`` (one seed of a batch) is ``alone``, bit for bit: status, every curve value, every metric."""
    assert (together.status, together.error) == (alone.status, alone.error)
    assert together.manifest == {"batched": {"seeds": seeds}}
    assert len(together.curves) == len(alone.curves)
    for a, b in zip(alone.curves, together.curves):
        assert a.keys() == b.keys()
        for k in a:
            if k != "epoch_time_s":
                assert same(a[k], b[k]), (a["epoch"], k, a[k], b[k])
    assert together.metrics.keys() == alone.metrics.keys()
    for k, v in alone.metrics.items():  # accuracies, the best epoch, each test example's correctness
        assert together.metrics[k] == v or (math.isnan(v) and math.isnan(together.metrics[k])), k
    for k in ("n_params", "n_train", "n_val", "n_test", "num_classes", "units"):
        assert together.compute[k] == alone.compute[k], k
    assert together.compute["epoch_time_s"] > 0


@pytest.mark.parametrize("case", CASES)
def test_batched_seeds_equal_their_runs_alone(case):
    method, backbone, bopts, mopts, train = CASES[case]
    runs = configs(method, backbone, bopts, mopts, **train)
    alone = [fit(c, "cpu") for c in runs]
    assert [r.status for r in alone] == ["done"] * len(SEEDS)
    try:
        together = fit_seeds(runs, "cpu")
    except Unbatchable as exc:  # the fallback: taken before training, and stated (the runner says it once)
        assert "differs from seed" in str(exc) and "step alone in" in str(exc), exc
        warnings.warn(f"{case}: the seeds train one at a time on this machine: {exc}", stacklevel=2)
        return
    for a, b in zip(alone, together):
        assert_same(a, b, SEEDS)


# ---------------------------------------------------------------- a unit loss with a running statistic
@method_card(
    name="test.running",
    summary="test-only: a local method whose unit loss reads the activity and updates a running mean in place "
    "(FF's peer normalisation), and draws random label noise",
    rules=("last",),
    capabilities=frozenset({"any-backbone", "unit-heads"}),
)
class Running(LocalMethod):
    def __init__(self, backbone, num_classes, options, ctx):
        super().__init__(backbone, num_classes, options, ctx)
        for k, shape in enumerate(backbone.out_shapes):
            self.register_buffer(f"mean{k}", torch.zeros(shape[0]))

    def make_head(self, k, shape):
        return make_head("linear", shape, self.num_classes)

    def unit_loss(self, k, scores, y, h):
        running = getattr(self, f"mean{k}")
        m = 0.9 * running + 0.1 * h.mean(0)
        running.copy_(m.detach())  # each seed's row of the stacked buffer
        return {"loss": F.cross_entropy(scores, y) + (m.mean() - m).pow(2).mean(), "spread": m.std()}

    def train_step(self, x, y):
        flip = self.ctx.draw(lambda g, t: torch.rand(len(t), generator=g, device=t.device) < 0.1, y)
        return super().train_step(x, torch.where(flip, (y + 1) % self.num_classes, y))

    def rules(self, scores, features):
        return {"last": scores[-1]}


def test_a_method_that_declares_no_seed_batching_trains_its_seeds_alone():
    with pytest.raises(Unbatchable, match="ff.hinton does not declare seed_batching"):
        fit_seeds(configs("ff.hinton", "mlp", MLP, {}), "cpu")


# ---------------------------------------------------------------- one seed diverges, the others go on
@method_card(
    name="test.seednan",
    summary="test-only: from the second epoch its loss is NaN where its draw at initialisation is above a bar",
    rules=("head",),
    capabilities=frozenset({"any-backbone"}),
)
class SeedNaN(Method):
    seed_batching = True  # its losses come from ctx.per_seed
    bar = 2.0  # the test sets it between the seeds' draws

    def __init__(self, backbone, num_classes, options, ctx):
        super().__init__(backbone, num_classes, options, ctx)
        self.head = make_head("linear", backbone.out_shapes[-1], num_classes)
        self.register_buffer("draw", torch.rand(()))  # from the run's init stream: one per seed
        self.opt = ctx.make_optimizer(self.parameters())
        self.epoch = 0

    def start_epoch(self, epoch):
        self.epoch = epoch

    def train_step(self, x, y):
        loss = self.ctx.per_seed(F.cross_entropy, self.head(self.backbone(x)), y)
        if self.epoch:  # NaN gradients too: that seed's parameters and BatchNorm statistics turn NaN
            loss = loss * torch.where(self.draw > self.bar, torch.nan, 1.0)
        step(self.opt, loss)
        return {"loss": loss.detach()}

    def evaluate(self, x):
        return {"head": self.head(self.backbone(x))}, []


def test_a_diverging_seed_fails_alone_and_the_others_are_unchanged(monkeypatch):
    runs = configs("test.seednan", "cnn", {"channels": [4, 8], "pool": [1]})
    draws = []
    for c in runs:
        streams = Streams(c.seed)
        draws.append(float(build(c, prepare("digits", streams, "cpu", val_size=c.val_size), streams, "cpu").draw))
    top, second = sorted(draws)[-1], sorted(draws)[-2]
    monkeypatch.setattr(SeedNaN, "bar", (top + second) / 2)
    bad = draws.index(top)
    alone = [fit(c, "cpu") for c in runs]
    together = fit_seeds(runs, "cpu")
    assert [r.status for r in together] == ["failed" if s == bad else "done" for s in range(len(runs))]
    assert together[bad].error.startswith(DIVERGED) and "non-finite" in together[bad].error
    assert len(together[bad].curves) == 1  # its first epoch stands
    for a, b in zip(alone, together):
        assert_same(a, b, SEEDS)


# ---------------------------------------------------------------- each seed's streams
SEEN: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (x, y, draw) per training step


@method_card(
    name="test.recorder",
    summary="test-only: records its mini-batches and a draw per row from its method stream",
    rules=("head",),
    capabilities=frozenset({"any-backbone"}),
)
class Recorder(Method):
    seed_batching = True  # its losses come from ctx.per_seed

    def __init__(self, backbone, num_classes, options, ctx):
        super().__init__(backbone, num_classes, options, ctx)
        self.head = make_head("linear", backbone.out_shapes[-1], num_classes)
        self.opt = ctx.make_optimizer(self.parameters())

    def train_step(self, x, y):
        draw = self.ctx.per_seed_rows(lambda g, t: torch.rand(len(t), generator=g, device=t.device), y)
        SEEN.append((x.clone(), y.clone(), draw))
        loss = self.ctx.per_seed(F.cross_entropy, self.head(self.backbone(x)), y)
        step(self.opt, loss)
        return {"loss": loss.detach()}

    def evaluate(self, x):
        return {"head": self.head(self.backbone(x))}, []


def _seen(run) -> list[tuple[torch.Tensor, ...]]:
    SEEN.clear()
    run()
    return list(SEEN)


@pytest.mark.parametrize("augment", [{}, {"crop_padding": 1, "flip": True}], ids=["plain", "augmented"])
def test_each_seed_gets_its_own_batches_augmentation_and_draws(augment):
    runs = configs("test.recorder", backbone_options={"widths": [16]}, seeds=[0, 1], **augment)
    alone = [_seen(lambda c=c: fit(c, "cpu")) for c in runs]
    fit_seeds(runs, "cpu")  # verifies the first step (and remembers it): the steps seen below are training's alone
    together = _seen(lambda: fit_seeds(runs, "cpu"))
    assert len(together) == len(alone[0]) == len(alone[1]) > 2
    for i, step_seen in enumerate(together):
        for s, blocks in enumerate(zip(*(t.chunk(2) for t in step_seen))):
            for got, want in zip(blocks, alone[s][i]):
                assert torch.equal(got, want), (i, s)
    assert not torch.equal(alone[0][0][2], alone[1][0][2])  # the seeds' method streams differ
    if augment:  # the augmentation is in play: the same seed's batches without it differ
        plain = _seen(lambda: fit(configs("test.recorder", backbone_options={"widths": [16]}, seeds=[0])[0], "cpu"))
        assert torch.equal(plain[0][1], alone[0][0][1]) and not torch.equal(plain[0][0], alone[0][0][0])


# ---------------------------------------------------------------- what is not batched
class Tangled(nn.Module):
    """A layer that holds a tensor of its own and a sub-layer: the stacking cannot split it."""

    def __init__(self, n):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(n))
        self.inner = nn.Linear(n, n)

    def forward(self, h):
        return self.inner(h) * self.scale


@method_card(
    name="test.unstackable",
    summary="test-only: a layer the seed stacking cannot express",
    options={
        "layer": Option(
            str,
            "tangled",
            "tangled (a tensor and a sub-layer in one module) or reflect (a reflect-padded convolution on the input)",
            choices=("tangled", "reflect"),
        )
    },
    rules=("head",),
    capabilities=frozenset({"any-backbone"}),
)
class Unstackable(Method):
    seed_batching = True  # its losses come from ctx.per_seed

    def __init__(self, backbone, num_classes, options, ctx):
        super().__init__(backbone, num_classes, options, ctx)
        c = backbone.in_shape[0]
        self.extra = (
            Tangled(num_classes)
            if options["layer"] == "tangled"
            else nn.Conv2d(c, c, 3, padding=1, padding_mode="reflect")
        )
        self.head = make_head("linear", backbone.out_shapes[-1], num_classes)
        self.opt = ctx.make_optimizer(self.parameters())

    def _scores(self, x):
        if isinstance(self.extra, Tangled):
            return self.extra(self.head(self.backbone(x)))
        return self.head(self.backbone(self.extra(x)))

    def train_step(self, x, y):
        loss = self.ctx.per_seed(F.cross_entropy, self._scores(x), y)
        step(self.opt, loss)
        return {"loss": loss.detach()}

    def evaluate(self, x):
        return {"head": self._scores(x)}, []


@method_card(
    name="test.pooledloss",
    summary="test-only: one loss over the whole mini-batch, not ctx.per_seed",
    rules=("head",),
    capabilities=frozenset({"any-backbone"}),
)
class PooledLoss(Method):
    seed_batching = True  # its losses come from ctx.per_seed

    def __init__(self, backbone, num_classes, options, ctx):
        super().__init__(backbone, num_classes, options, ctx)
        self.head = make_head("linear", backbone.out_shapes[-1], num_classes)
        self.opt = ctx.make_optimizer(self.parameters())

    def train_step(self, x, y):
        loss = F.cross_entropy(self.head(self.backbone(x)), y)
        step(self.opt, loss)
        return {"loss": loss.detach()}

    def evaluate(self, x):
        return {"head": self.head(self.backbone(x))}, []


def test_a_loss_not_per_seed_is_unbatchable():
    runs = configs("test.pooledloss", backbone_options={"widths": [8]}, seeds=[0, 1], epochs=1)
    with pytest.raises(Unbatchable, match="not one value per seed"):
        fit_seeds(runs, "cpu")


@method_card(
    name="test.mixing",
    summary="test-only: centres its features over the whole mini-batch, so stacked seeds see each other's rows",
    rules=("head",),
    capabilities=frozenset({"any-backbone"}),
)
class Mixing(PooledLoss):
    def _scores(self, x):
        h = self.backbone(x)
        return self.head(h - h.mean(0, keepdim=True))  # every row of the batch: stacked, every seed's rows

    def train_step(self, x, y):
        loss = self.ctx.per_seed(F.cross_entropy, self._scores(x), y)
        step(self.opt, loss)
        return {"loss": loss.detach()}

    def evaluate(self, x):
        return {"head": self._scores(x)}, []


def test_a_first_step_that_differs_stacked_is_refused_before_training():
    """Exactness is verified on the machine that trains: the first step run both ways, compared bit for bit."""
    runs = configs("test.mixing", backbone_options={"widths": [8]}, seeds=[0, 1], epochs=1)
    with pytest.raises(Unbatchable, match="differs from seed 0's step alone in the logged value 'loss'"):
        fit_seeds(runs, "cpu")


def test_the_first_step_check_leaves_the_runs_untouched():
    """The check builds its own copies from the runs' streams and restores the global random state: runs after
    it (and the global stream) are what they are without it."""
    import ffbench.training.batched as batched

    runs = configs("sff", "cnn", {"channels": [4, 8], "pool": [1]}, seeds=[0, 1], epochs=1, crop_padding=1, flip=True)
    key = next(iter(batched._VERIFIED), None)
    torch.manual_seed(123)
    checked = fit_seeds(runs, "cpu")  # verifies first
    after_check = torch.rand(3)
    assert any(k not in (key,) for k in batched._VERIFIED)
    torch.manual_seed(123)
    remembered = fit_seeds(runs, "cpu")  # the verdict is remembered: no second check
    assert torch.equal(torch.rand(3), after_check)
    for a, b in zip(checked, remembered):
        assert_same(a, b, [0, 1])


def test_why_not_batch():
    two = configs("bp", seeds=[0, 1])
    assert why_not(two) is None
    assert why_not(two[:1]) == "one seed"
    assert why_not([two[0], configs("bp", seeds=[1], lr=0.01)[0]]) == "the runs differ in more than their seed"
    assert why_not([two[0], configs("bp", seeds=[1], epochs=3)[0]]) == "the runs differ in more than their seed"
    assert why_not([two[0], two[0]]) == "a seed appears twice"
    assert "adapt a pretrained source" in why_not(configs("bp", seeds=[0, 1], adapt="fine-tune"))
    with pytest.raises(Unbatchable, match="a seed appears twice"):
        fit_seeds([two[0], two[0]], "cpu")


@pytest.mark.parametrize(
    "layer, why",
    [("tangled", "Tangled holds its own tensors and sub-layers"), ("reflect", "Conv2d with padding .*'reflect'")],
)
def test_a_layer_the_stacking_cannot_express_is_unbatchable(layer, why):
    runs = configs("test.unstackable", "cnn", {"channels": [4], "pool": []}, {"layer": layer}, seeds=[0, 1], epochs=1)
    with pytest.raises(Unbatchable, match=why):
        fit_seeds(runs, "cpu")
    assert fit(runs[0], "cpu").status == "done"  # alone it trains


def test_auto_leaves_out_long_runs():
    def problem(mode, dataset, epochs):
        env = SimpleNamespace(suite=SimpleNamespace(batch_seeds=mode))
        return batch_problem(env, [RunConfig(method="bp", dataset=dataset, backbone="mlp", epochs=epochs)])

    assert problem("auto", "digits", 100) is None  # 143,700 training images
    assert "600,000 training images" in problem("auto", "mnist", 10)
    assert problem(True, "mnist", 10) is None
    assert problem(False, "digits", 1) == "the suite sets batch_seeds = false"


def suite(name, methods, epochs=1, head=None):
    """Three digits seeds of ``methods`` on a small MLP; ``head``: more [suite] keys."""
    return suite_toml(
        name, methods=methods, datasets=["digits"], seeds=[0, 1, 2], epochs=epochs, batch_size=None, suite=head
    )


def run_suite(write_suite, tmp_path, name, methods, epochs=1, head=None, where=None):
    """Run a suite into ``tmp_path / out-<where>`` (default: its name); (exit code, its stored rows)."""
    where = where or name
    path = write_suite(suite(name, methods, epochs, head), name=where)
    out = tmp_path / f"out-{where}"
    code = main(["run", str(path), "--out", str(out), "--no-progress", "--device", "cpu", "--no-tracking"])
    return code, Store(out / "results.db").rows(name) if code == 0 else None


def test_runner_batches_what_it_can_and_runs_the_rest_alone(write_suite, tmp_path, capsys):
    code, rows = run_suite(write_suite, tmp_path, "mixed", ["bp", "test.unstackable"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert len(rows) == 6 and {r["status"] for r in rows} == {"done"}
    assert err.count("seeds train one at a time") == 1, err
    assert "test.unstackable" in err and "Tangled holds its own tensors and sub-layers" in err
    for r in rows:
        batched = r["manifest"].get("batched")
        if r["factors"]["method"] == "bp":
            assert batched == {"seeds": [0, 1, 2]}
        else:
            assert batched is None


def test_an_unknown_batch_seeds_is_refused(write_suite, tmp_path, capsys):
    code, _ = run_suite(write_suite, tmp_path, "maybe", ["bp"], head={"batch_seeds": "maybe"})
    err = capsys.readouterr().err
    assert code == 2
    assert "[suite].batch_seeds" in err and "'maybe'" in err
    assert all(v in err for v in ('"auto"', "true", "false")), err
    assert not (tmp_path / "out-maybe").exists()


def test_runner_batches_by_default_with_the_results_of_one_at_a_time(write_suite, tmp_path, capsys):
    code, batched = run_suite(write_suite, tmp_path, "both", ["bp", "sff"], epochs=2, where="default")
    assert code == 0, capsys.readouterr().err
    code, alone = run_suite(
        write_suite, tmp_path, "both", ["bp", "sff"], epochs=2, head={"batch_seeds": False}, where="apart"
    )
    assert code == 0, capsys.readouterr().err
    assert "seeds train one at a time" not in capsys.readouterr().err  # false is a choice, not a fallback
    by_id = {r["run_id"]: r for r in alone}
    assert len(batched) == len(alone) == 6 and by_id.keys() == {r["run_id"] for r in batched}
    for b in batched:
        a = by_id[b["run_id"]]
        assert a["status"] == b["status"] == "done"
        assert b["manifest"]["batched"] == {"seeds": [0, 1, 2]} and "batched" not in a["manifest"]
        assert a["metrics"] == b["metrics"]
        for ra, rb in zip(a["curves"], b["curves"], strict=True):
            assert {k: v for k, v in ra.items() if k != "epoch_time_s"} == {
                k: v for k, v in rb.items() if k != "epoch_time_s"
            }, b["run_id"]


TUNED = """
[tuning]
trials = 3
seeds = [100, 101]
sampler = "TPESampler"
sampler_args = { seed = 0, n_startup_trials = 2 }
pruner = "ThresholdPruner"
pruner_args = { lower = 0.75, n_warmup_steps = 3 }  # steps 3+: the second tuning seed's epochs

[tuning.space."bp"]
lr = ["log", 1e-3, 3e-1]
"""


def test_a_trial_s_tuning_seeds_train_together_and_the_pruner_decides_as_one_at_a_time(write_suite, tmp_path):
    """A trial's tuning seeds are batched, and their epochs are told to the pruner seed after seed: every
    trial's parameters, value and outcome (pruned or not) are those of training the seeds in turn."""
    outs = {}
    for where, head in (("together", None), ("apart", {"batch_seeds": False})):
        text = suite("tuned", ["bp"], epochs=3, head=head) + TUNED
        out = tmp_path / f"out-{where}"
        assert (
            main(
                [
                    "run",
                    str(write_suite(text, name=where)),
                    "--out",
                    str(out),
                    "--no-progress",
                    "--device",
                    "cpu",
                    "--no-tracking",
                ]
            )
            == 0
        )
        outs[where] = {r["run_id"]: r for r in Store(out / "results.db").rows("tuned")}
    together, apart = outs["together"], outs["apart"]
    assert together.keys() == apart.keys()
    trials = [r for r in apart.values() if r["role"] == "tuning"]
    assert len(trials) == 3 and {r["status"] for r in trials} == {"done", "pruned"}  # the pruner acted
    for k, a in apart.items():
        b = together[k]
        assert (b["status"], b["params"], b["metrics"]) == (a["status"], a["params"], a["metrics"]), k
        if a["role"] == "tuning" and a["status"] == "done":
            assert b["manifest"]["batched"] == {"seeds": [100, 101]} and "batched" not in a["manifest"]


def test_the_runner_trains_seeds_alone_when_the_stacked_step_differs(write_suite, tmp_path, capsys):
    code, rows = run_suite(write_suite, tmp_path, "mixing", ["test.mixing"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("seeds train one at a time") == 1 and "differs from seed 0's step alone" in err, err
    assert len(rows) == 3 and {r["status"] for r in rows} == {"done"}
    assert all("batched" not in r["manifest"] for r in rows)


# ---------------------------------------------------------------- every kernel level of the CPU library
ONEDNN_LEVELS = ("SSE41", "AVX", "AVX2", "AVX512_CORE")  # a level above the processor's is capped by oneDNN
CONV_CASES = [c for c, (_, backbone, *_) in CASES.items() if backbone != "mlp"]


@pytest.mark.slow
@pytest.mark.parametrize("level", ONEDNN_LEVELS)
def test_batched_seeds_equal_their_runs_alone_at_each_onednn_level(level):
    """oneDNN (torch's CPU convolutions) picks its kernels by the processor's instruction set, and they sum in
    other orders; the level is fixed at process start, so each runs in its own process: bit for bit where the
    stacked step was verified, or the seeds run alone (the fallback, stated)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": level}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        __file__,
        "-k",
        " or ".join(f"test_batched_seeds_equal_their_runs_alone[{c}]" for c in CONV_CASES),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert f"{len(CONV_CASES)} passed" in out.stdout, out.stdout[-1000:]
