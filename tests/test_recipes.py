"""Recipes: each method's `reference` recipe equals the method notes (docs/methods/notes/), resolves per dataset, and meets the
suite's values with a warning; CwC's ILT windows per dataset and budget; the CIFAR-100 class-group model;
the harness options the recipes set (normalisation, last-N validation split, loeweX's cool-down)."""

import numpy as np
import pytest
import torch
from suites import suite_toml

from ffbench.core.config import TRAIN_FIELDS
from ffbench.core.registry import BACKBONES, METHODS
from ffbench.core.seeds import Streams
from ffbench.data import data as data_mod
from ffbench.plan.design import expand, resolve_with_warnings
from ffbench.plan.suite import load
from ffbench.training.train import lr_factor

IMAGENET = [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]


def suite(write_suite, methods, datasets, backbones, train=None, extra=""):
    """One seed, 20 epochs; ``train``: more [train] fields."""
    text = suite_toml(
        "recipes",
        methods=methods,
        datasets=datasets,
        backbones=backbones,
        epochs=20,
        batch_size=None,
        train=train,
        widths=None,
        extra="\n" + extra,
    )
    return load(write_suite(text))


def reference(m):
    return f'[methods."{m}"]\nrecipe = "reference"\n'


# (method, dataset, backbone) -> the settings the method notes give for the reference code (section in the comment)
SPEC = {
    ("ff.hinton", "mnist", "mlp"): {  # §2.3 loeweX
        "optimizer": "sgd",
        "lr": 1e-3,
        "momentum": 0.9,
        "weight_decay": 3e-4,
        "batch_size": 100,
        "schedule": "cooldown-loewex",
        "val_size": 10000,
        "opt.head_lr": 1e-2,
        "opt.head_weight_decay": 3e-3,
        "opt.init": "loewex",
        "opt.rule": "softmax",
        "opt.pixels": "as-given",
        "opt.negatives": "uniform",
        "opt.vote": "skip-first",
        "opt.peer_weight": 0.03,
        "opt.peer_momentum": 0.9,
        "opt.scale": "sum-rms",
        "opt.training": "simultaneous",
        "data.normalize": "none",
        "data.val_split": "last",
    },
    ("cwc", "mnist", "cnn.cfse"): {  # §3.3, §3.6
        "optimizer": "adam",
        "lr": 0.01,
        "weight_decay": 0.0,
        "batch_size": 128,
        "schedule": "constant",
        "opt.ilt": "acc",
        "opt.ilt_table": "mnist",
        "opt.ilt_scaling": "exact",
        "opt.head_lr": 0.01,
        "opt.sf_double_softmax": True,
        "opt.frozen_bn": "train",
        "data.normalize": [[0.1307], [0.3081]],
        "bb.channels": [20, 80, 240, 480],
        "bb.pool": [1, 3],
    },
    ("cwc", "fashion-mnist", "cnn.cfse"): {"opt.ilt_table": "fashion-mnist", "data.normalize": [[0.5], [0.5]]},
    ("cwc", "cifar10", "cnn.cfse"): {"opt.ilt_table": "cifar10", "data.normalize": IMAGENET},
    ("cwc", "cifar100", "cnn.cfse"): {  # §3.1 class-group model; ImageNet statistics as shipped (§3.3)
        "opt.ilt_table": "cifar100",
        "data.normalize": IMAGENET,
        "bb.channels": [60, 120, 240, 400, 800, 1600],
        "bb.pool": [1, 3, 5],
        "bb.class_groups": [20, 20, 20, 20, 100, 100],
    },
    ("cwc.nocfse", "fashion-mnist", "cnn"): {"opt.ilt_table": "fashion-mnist", "opt.sf_double_softmax": True},
    ("asge", "mnist", "vgg.asge"): {"opt.goodness": "sum", "opt.alpha": 1.0},  # §5.2 digest
    ("sff", "mnist", "cnn"): {"opt.kernel": 1, "opt.loss": "ce", "opt.ln": "sample", "opt.rule": "average"},
    ("pepita", "mnist", "mlp"): {  # docs/methods/notes/pepita.md §16.1-§16.2, the README command
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "batch_size": 64,
        "epochs": 100,
        "opt.decay_at": [0.6, 0.9],
        "opt.keep": 0.9,
        "opt.feedback_scale": 0.05,
        "opt.init": "he-uniform",
        "data.normalize": "none",
        "bb.widths": [1024],
    },
    ("pepita", "cifar10", "mlp"): {"lr": 0.01, "bb.widths": [1024]},  # §16.2 notebook
    ("trifecta", "mnist", "cnn.trifecta"): {  # docs/methods/notes/trifecta.md §11.1-§11.2, tdooms/trifecta main.py
        "optimizer": "adam",
        "lr": 1e-3,
        "weight_decay": 0.0,
        "batch_size": 512,
        "schedule": "constant",
        "crop_padding": 4,
        "opt.olu": True,
        "opt.loss": "symba",
        "opt.alpha": 4.0,
        "opt.embedding": "learned",
        "opt.rule": "last",
        "data.normalize": [[0.1307], [0.3081]],
        "bb.channels": [128, 128, 256, 256, 256, 512],
        "bb.pool": [0, 2, 5],
        "bb.norm": "bn",
        "bb.label_channels": 1,
    },
    ("trifecta", "fashion-mnist", "cnn.trifecta"): {"data.normalize": [[0.2860], [0.3530]]},
    ("trifecta.local", "mnist", "cnn.trifecta"): {"opt.olu": False, "opt.loss": "symba"},
    ("bp", "cifar10", "cnn"): {  # §1.2 CwComp Backprop.py
        "optimizer": "adam",
        "lr": 1e-3,
        "batch_size": 128,
        "opt.pool": "flatten",
        "data.normalize": [[0.5] * 3] * 2,
    },
}


@pytest.mark.parametrize("key", list(SPEC), ids=lambda k: "-".join(k))
def test_reference_recipe_equals_the_spec(write_suite, key):
    method, dataset, backbone = key
    s = suite(write_suite, [method], [dataset], [backbone], extra=reference(method))
    config, _ = resolve_with_warnings(s, method, dataset, backbone)
    got = {"opt": config.method_options, "data": config.dataset_options, "bb": config.backbone_options}
    for k, want in SPEC[key].items():
        where, _, name = k.rpartition(".")
        value = got[where][name] if where else getattr(config, name)
        assert value == want, f"{key} {k}: {value!r} != {want!r}"
    assert config.method_options["recipe"] == "reference"


def test_every_recipe_setting_is_allowed_and_sourced():
    for card in METHODS.list():
        for name, settings in card.recipes.items():
            for k, (value, source) in settings.items():
                assert source, f"{card.name} recipe {name} {k}: no source"
                kind, _, opt = k.partition(".")
                values = value.values.values() if hasattr(value, "values") else [value]
                for v in values:
                    if v is None and name == "ffbench":  # the harness's or the suite's own handling
                        continue
                    if kind == "backbone":
                        assert any(opt in b.options and not b.options[opt].problem(v) for b in BACKBONES.list())
                    elif kind == "dataset":
                        assert opt in ("normalize", "val_split")
                    else:
                        spec = TRAIN_FIELDS.get(k) or card.options[k]
                        assert spec.problem(v) is None, f"{card.name} {k}={v!r}"
        text = card.describe()
        if card.recipes:
            assert "recipe reference:" in text and "recipe ffbench (default):" in text


def test_default_recipe_leaves_the_configuration_alone(write_suite):
    """No recipe key: the configuration is the card's defaults under the suite's values, as before recipes."""
    s = suite(write_suite, ["ff.hinton", "cwc"], ["digits"], ["mlp", "cnn.cfse"], train={"batch_size": 64})
    d = expand(s)
    for cell in d.cells:
        assert "recipe" not in cell.config.method_options and cell.config.dataset_options == {}
        assert cell.config.batch_size == 64  # [train] still wins under ffbench ...
    assert any(
        "ff.hinton: [train] batch_size = 64 differs from recipe 'ffbench' value 100; applied" in w for w in d.warnings
    )  # ... and says so


def test_a_train_value_never_replaces_a_reference_recipe_silently(write_suite):
    s = suite(
        write_suite,
        ["cwc"],
        ["mnist"],
        ["cnn.cfse"],
        train={"batch_size": 64, "optimizer": "sgd"},
        extra=reference("cwc"),
    )
    d = expand(s)
    assert d.cells[0].config.batch_size == 128 and d.cells[0].config.optimizer == "adam"
    assert (
        "cwc: [train] batch_size = 64 differs from recipe 'reference' value 128; ignored "
        '(set it in [methods."cwc"] to choose)'
    ) in d.warnings
    assert any("[train] optimizer = 'sgd'" in w and "ignored" in w for w in d.warnings)
    # the method's own section chooses, without a warning
    s = suite(
        write_suite,
        ["cwc"],
        ["mnist"],
        ["cnn.cfse"],
        train={"batch_size": 64},
        extra=reference("cwc") + "batch_size = 64\n",
    )
    d = expand(s)
    assert d.cells[0].config.batch_size == 64 and not any("batch_size" in w for w in d.warnings)


def test_a_dataset_without_reference_values_is_reported(write_suite):
    s = suite(write_suite, ["cwc"], ["digits"], ["cnn.cfse"], extra=reference("cwc"))
    d = expand(s)
    assert any("no value for ilt_table, dataset.normalize" in w and "'digits'" in w for w in d.warnings)
    assert d.cells[0].config.method_options["ilt_table"] == "fashion-mnist"  # the ffbench value


def test_cwc_ilt_windows_per_dataset_and_budget(write_suite):
    from ffbench.methods import cwc

    want = {  # docs/methods/notes/cwc.md §3.3, cut at the budget as the reference cuts them at its 20-epoch default
        ("mnist", 20): [(0, 2), (0, 3), (0, 4), (0, 5)],
        ("fashion-mnist", 20): [(0, 10), (0, 15), (0, 19), (0, 20)],
        ("fashion-mnist", 23): [(0, 10), (0, 15), (0, 19), (0, 23)],
        ("cifar10", 25): [(0, 11), (0, 16), (0, 21), (0, 25)],
        ("cifar100", 100): [(0, 30), (0, 30), (30, 60), (30, 60), (60, 85), (60, 85)],
        ("cifar100", 70): [(0, 30), (0, 30), (30, 60), (30, 60), (60, 70), (60, 70)],
    }
    for (dataset, epochs), windows in want.items():
        s = suite(write_suite, ["cwc"], [dataset], ["cnn.cfse"], extra=reference("cwc") + f"epochs = {epochs}\n")
        o = s and resolve_with_warnings(s, "cwc", dataset, "cnn.cfse")[0].method_options
        n = len(windows)
        got, head = cwc.ilt_windows(o["ilt"], o["ilt_table"], o["ilt_scaling"], n, epochs)
        assert got == windows, dataset
        assert head == (min(85, epochs - 1) if dataset == "cifar100" else 0)
    with pytest.raises(ValueError, match="no 'fast' schedule"):
        cwc.ilt_windows("fast", "cifar100", "exact", 6, 100)


def test_cifar100_class_group_model_shapes_and_targets():
    from ffbench.core.method import Context
    from ffbench.methods import cwc
    from ffbench.training import backbones

    b = backbones.build("cnn.cfse", (3, 32, 32), 100, cwc.CLASS_GROUP_MODEL)
    assert [s[0] for s in b.out_shapes] == [60, 120, 240, 400, 800, 1600]
    assert [s[1] for s in b.out_shapes] == [32, 16, 16, 8, 8, 4]  # pool after layers 2, 4, 6: flatten 25600
    convs = [m for m in b.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.groups for c in convs] == [1, 20, 1, 20, 1, 100]
    card = cwc.CwC.card
    options = {
        **{k: v for k, v in card.defaults.items() if k in card.options},
        "ilt_table": "cifar100",
        "ilt_scaling": "exact",
    }
    m = cwc.CwC(b, 100, options, Context(torch.device("cpu"), torch.Generator(), epochs=100))
    assert m.class_groups == [20, 20, 20, 20, 100, 100] and m.head.in_features == 25600
    h = torch.randn(3, 60, 4, 4)
    y = torch.tensor([0, 7, 99])
    scores = m.heads[0](h)
    assert scores.shape == (3, 100)
    groups, target = m.heads[0].group_view(scores, y)
    assert groups.shape == (3, 20) and target.tolist() == [0, 1, 19]  # y // 5: consecutive fine labels
    assert torch.allclose(groups, h.reshape(3, 20, -1).pow(2).mean(2))
    assert torch.equal(scores[:, 5:10], groups[:, 1:2].expand(3, 5))  # a group's score on each of its classes
    loss = m.unit_loss(0, scores, y, h)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(groups, target))
    assert m.heads[5].ratio == 1 and m.windows[4] == (60, 85) and m.head_start == 85


def test_loewex_cooldown_formula():
    """lr * 2 (1 + E - e) / E for 0-based e > E // 2 (docs/methods/notes/ff.md §2.3), one epoch later than `cooldown`."""
    got = [lr_factor("cooldown-loewex", e, 100) for e in (0, 50, 51, 52, 99)]
    assert got == [1.0, 1.0, 1.0, pytest.approx(0.98), pytest.approx(0.04)]
    assert lr_factor("cooldown", 51, 100) == pytest.approx(0.98)


def test_last_n_validation_and_unit_range_pixels():
    raw = data_mod.load_raw("digits")
    d = data_mod.prepare("digits", Streams(0), torch.device("cpu"), val_size=100, val_split="last", normalize="none")
    assert torch.equal(d.val.y, torch.as_tensor(raw.train_y[-100:]))
    assert torch.allclose(d.val.x, torch.as_tensor(raw.train_x[-100:], dtype=torch.float32) / raw.scale)
    assert len(d.train) == len(raw.train_y) - 100 and 0 <= d.train.x.min() and d.train.x.max() <= 1
    d2 = data_mod.prepare("digits", Streams(0), torch.device("cpu"), val_size=100, normalize=[[0.5], [0.25]])
    assert torch.allclose(d2.test.x, (torch.as_tensor(raw.test_x, dtype=torch.float32) / raw.scale - 0.5) / 0.25)
    with pytest.raises(ValueError, match="val_split"):
        data_mod.prepare("digits", Streams(0), torch.device("cpu"), val_split="first")
    assert not np.array_equal(
        data_mod.prepare("digits", Streams(0), torch.device("cpu"), val_size=100).val.y.numpy(), raw.train_y[-100:]
    )  # the default stays the seeded stratified split
