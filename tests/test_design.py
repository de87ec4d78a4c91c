"""Design: axes, cell enumeration and constraint filtering, content-hash cell IDs, suite validation."""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from suites import suite_toml

from ffbench.core.registry import AXES
from ffbench.plan import design as design_mod
from ffbench.plan.design import expand
from ffbench.plan.suite import SuiteError, load

ABLATION_AXES = """
[axes]
granularity = ["layer", "block", "stage"]
head_kernel = [1, 3]
bn = ["inside", "none"]
"""


def write(
    tmp_path: Path,
    extra: str = ABLATION_AXES,
    *,
    name="t",
    version=1,
    epochs=1,
    design_extra="",
    methods=("bp", "bp.deepsup", "sff"),
    backbones=("mlp", "cnn", "resnet18"),
    file="suite.toml",
) -> Path:
    """Two synthetic seeds of ``methods`` on ``backbones``; ``design_extra``: more [design] keys, as TOML."""
    p = tmp_path / file
    p.write_text(
        suite_toml(
            name,
            version=version,
            methods=methods,
            backbones=backbones,
            seeds=[0, 1],
            design=tomllib.loads(design_extra),
            epochs=epochs,
            widths=[16] if "mlp" in backbones else None,
            extra="\n" + extra,
        )
    )
    return p


def test_builtin_axes_registered():
    for name in (
        "granularity",
        "head_kernel",
        "bn",
        "classes",
        "train_size",
        "goodness",
        "negatives",
        "inference",
        "ln",
    ):
        assert name in AXES, name
    assert AXES.get("bn").card.options["levels"].choices == ("inside", "outside", "none")


def test_full_factorial_with_constraints(tmp_path):
    suite = load(str(write(tmp_path)))
    d = expand(suite)
    # per method: mlp 1 granularity x 2 kernels (bn does not apply: merged) = 2; cnn (layer, block) x 2 x 2 = 8
    # (stage = block there); resnet18 (block, stage) x 2 x inside = 4
    assert len(d.cells) == 3 * 14
    assert len(d.dropped) == 3 * 20 and len(d.merged) == 3 * 2
    assert len(d.cells) + len(d.dropped) + len(d.merged) == 3 * 3 * 12  # every combination is accounted for
    reasons = dict(d.dropped_summary())
    assert reasons["resnet18 does not offer granularity='layer' (allowed: block, stage)"] == 12
    assert any("a stage is a block" in r for r in reasons)
    assert any("mlp does not offer granularity='block'" in r for r in reasons)
    assert all("card has no option bn" in r for r, _ in d.merged_summary())
    mlp = [c for c in d.cells if c.factors["backbone"] == "mlp"]
    assert all(c.factors["bn"] is None for c in mlp)  # the axis does not apply: level recorded as None
    cnn_sff = [c for c in d.cells if c.factors["backbone"] == "cnn" and c.factors["method"] == "sff"]
    assert {(c.factors["granularity"], c.factors["head_kernel"], c.factors["bn"]) for c in cnn_sff} == {
        (g, k, b) for g in ("layer", "block") for k in (1, 3) for b in ("inside", "none")
    }
    for c in cnn_sff:  # the levels reach the resolved configuration
        assert c.config.backbone_options["granularity"] == c.factors["granularity"]
        assert c.config.backbone_options["bn"] == c.factors["bn"]
        assert c.config.method_options["kernel"] == c.factors["head_kernel"]
    assert len({c.cell_id for c in d.cells}) == len(d.cells)
    assert len(d.runs) == 2 * len(d.cells)


def test_declared_subset_exclude_and_one_at_a_time(tmp_path):
    only = (
        'only = [{granularity = "block"}, {method = "bp", head_kernel = 3}]\nexclude = [{bn = "none", head_kernel = 3}]'
    )
    d = expand(load(str(write(tmp_path, design_extra=only, backbones=["cnn"]))))
    assert {(c.factors["method"], c.factors["granularity"]) for c in d.cells} >= {("bp", "layer"), ("sff", "block")}
    assert all(
        c.factors["granularity"] == "block" or (c.factors["method"], c.factors["head_kernel"]) == ("bp", 3)
        for c in d.cells
    )
    assert not any(c.factors["bn"] == "none" and c.factors["head_kernel"] == 3 for c in d.cells)
    assert any(r == "excluded by [design].exclude[0]" for _, r in d.dropped)

    oat = expand(
        load(
            str(
                write(
                    tmp_path,
                    design_extra='plan = "one-at-a-time"',
                    methods=["sff"],
                    backbones=["cnn"],
                    file="oat.toml",
                )
            )
        )
    )
    # base (layer, 1, inside) + block (stage dropped on cnn) + kernel 3 + bn none
    assert len(oat.cells) == 4
    base = {"granularity": "layer", "head_kernel": 1, "bn": "inside"}
    for c in oat.cells:
        assert sum(c.factors[k] != v for k, v in base.items()) <= 1


def test_class_count_and_train_size_axes(tmp_path):
    extra = '[axes]\nclasses = [2, 5, 10, 12]\ntrain_size = [100, "full"]'
    d = expand(load(str(write(tmp_path, extra, methods=["bp"], backbones=["mlp"]))))
    assert len(d.cells) == 3 * 2
    assert [r for _, r in d.dropped] == ["synthetic has 10 classes; classes=12 is more than that"] * 2
    cfg = {(c.factors["classes"], c.factors["train_size"]): c.config for c in d.cells}
    assert cfg[(5, 100)].classes == 5 and cfg[(5, 100)].train_subset == 100
    assert cfg[(2, "full")].train_subset is None


def test_generic_method_option_axis_skips_methods_without_the_option(tmp_path):
    extra = '[axes.sffloss]\nmethod_option = "loss"\nlevels = ["ce", "margin"]\n[axes.inference]\nlevels = ["average", "last"]'
    d = expand(load(str(write(tmp_path, extra, methods=["bp", "sff"], backbones=["mlp"]))))
    sff = [c for c in d.cells if c.factors["method"] == "sff"]
    bp = [c for c in d.cells if c.factors["method"] == "bp"]
    assert len(sff) == 4 and {c.config.method_options["loss"] for c in sff} == {"ce", "margin"}
    assert {c.config.method_options["rule"] for c in sff} == {"average", "last"}
    assert len(bp) == 1 and bp[0].factors["sffloss"] is None and bp[0].factors["inference"] is None


IDS_SCRIPT = """
import json, sys
from ffbench.plan.design import expand
from ffbench.plan.suite import load
print(json.dumps([c.cell_id for c in expand(load(sys.argv[1])).cells]))
"""


def test_cell_ids_stable_across_processes(tmp_path):
    path = write(tmp_path, ABLATION_AXES + TUNING)
    here = [c.cell_id for c in expand(load(str(path))).cells]
    out = subprocess.run(
        [sys.executable, "-c", IDS_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"},
    )
    assert json.loads(out.stdout) == here


TUNING = """
[tuning]
trials = 3
seeds = [100]
sampler = "TPESampler"
sampler_args = { seed = 0, n_startup_trials = 2 }
pruner = "MedianPruner"
"""


def _ids(path) -> set[str]:
    return {c.cell_id for c in expand(load(str(path))).cells}


def _by_factors(path) -> dict[str, str]:
    return {json.dumps(c.factors, sort_keys=True): c.cell_id for c in expand(load(str(path))).cells}


ALL = None
AT = ABLATION_AXES + TUNING


@pytest.mark.parametrize(
    "base, change, affected",
    [
        (ABLATION_AXES, dict(epochs=2), ALL),
        (ABLATION_AXES, dict(version=2), ALL),
        (ABLATION_AXES, dict(name="other"), ALL),
        (
            ABLATION_AXES,
            dict(extra=ABLATION_AXES.replace('bn = ["inside", "none"]', 'bn = ["inside", "outside"]')),
            "bn",
        ),
        (ABLATION_AXES, dict(extra=AT), ALL),  # tuning on
        (AT, dict(extra=AT.replace("trials = 3", "trials = 4")), ALL),
        (AT, dict(extra=AT.replace("seed = 0", "seed = 1")), ALL),
        (AT, dict(extra=AT.replace("seeds = [100]", "seeds = [101]")), ALL),
        (AT, dict(extra=AT.replace("MedianPruner", "NopPruner")), ALL),
        (AT, dict(extra=AT + '[tuning.space."bp"]\nlr = ["log", 1e-3, 1e-1]\n'), "bp"),
        (
            ABLATION_AXES,
            dict(extra=ABLATION_AXES.replace("[axes]", "[backbones.cnn]\nchannels = [8, 8, 8, 8]\n[axes]")),
            "cnn",
        ),
    ],
)
def test_cell_ids_change_with_any_setting(tmp_path, base, change, affected):
    """Every cell the change touches gets a new ID; the others keep theirs."""
    a = _by_factors(write(tmp_path, base, file="a.toml"))
    b = _by_factors(write(tmp_path, **{"extra": base, **change}, file="b.toml"))
    assert a and b
    for key, cid in b.items():
        f = json.loads(key)
        touched = (
            affected is ALL
            or affected in (f["method"], f["backbone"])
            or (affected == "bn" and f.get("bn") == "outside")
        )
        if touched:
            assert cid not in a.values(), (key, change)
        else:
            assert a.get(key) == cid, (key, change)


def test_cell_ids_change_with_ffbench_version_not_with_eval_seeds(tmp_path, monkeypatch):
    path = write(tmp_path)
    a = _ids(path)
    more = path.read_text().replace("seeds = [0, 1]", "seeds = [0, 1, 2]")
    (tmp_path / "more.toml").write_text(more)
    assert _ids(tmp_path / "more.toml") == a  # evaluation seeds make runs, not cells
    monkeypatch.setattr(design_mod, "__version__", "999.0")
    assert not (_ids(path) & a)


@pytest.mark.parametrize(
    "extra, where, allowed",
    [
        ('[axes]\ngranularity = ["layer", "blok"]', "[axes].granularity", "allowed: layer, block, stage"),
        ('[axes]\nbn = ["inside", 3]', "[axes].bn", "expected str"),
        ("[axes]\nhead_kernel = [1, 2]", "[axes].head_kernel", "an odd integer >= 1"),
        ("[axes]\nclasses = [1]", "[axes].classes", "an integer >= 2"),
        ("[axes]\ntrain_size = [0]", "[axes].train_size", '"full"'),
        ('[axes]\ngranularity = ["layer", "layer"]', "[axes].granularity", "given twice"),
        ("[axes]\nkernel_size = [1, 3]", "[axes].kernel_size", "registered: adapt, bn, classes"),
        ('[axes]\ninference = ["average", "vote-all"]', "[axes].inference", "allowed: 'average', 'last'"),
        ('[axes.x]\nmethod_option = "nosuch"\nlevels = [1]', "[axes].x.method_option", "has the option 'nosuch'"),
        ('[axes.x]\ntrain_field = "nosuch"\nlevels = [1]', "[axes].x.train_field", "allowed: epochs, batch_size"),
        ('[axes.x]\ntrain_field = "epochs"\nlevels = [0]', "[axes].x", "an integer in [1, 100000]"),
        ('[axes]\ngoodness = ["sum"]', "[axes].goodness", "applies to none of the suite's methods"),
    ],
)
def test_bad_axis_levels_name_file_field_and_allowed_values(tmp_path, extra, where, allowed):
    path = write(tmp_path, extra, methods=["bp", "sff"], backbones=["cnn"])
    with pytest.raises(SuiteError) as err:
        load(str(path))
    msg = str(err.value)
    assert str(path) in msg and where in msg and allowed in msg, msg


@pytest.mark.parametrize(
    "design_extra, where, allowed",
    [
        ('plan = "half"', "[design].plan", "allowed: full, one-at-a-time"),
        ('exclude = [{bn = "outside"}]', "[design].exclude[0].bn", "allowed: 'inside', 'none'"),
        ('only = [{color = "red"}]', "[design].only[0].color", "allowed: method, dataset, backbone, granularity"),
    ],
)
def test_bad_design_subsets_rejected(tmp_path, design_extra, where, allowed):
    path = write(tmp_path, design_extra=design_extra)
    with pytest.raises(SuiteError) as err:
        load(str(path))
    assert where in str(err.value) and allowed in str(err.value), str(err.value)


def test_cli_dry_run_lists_axes_dropped_tuning_and_budget(tmp_path, capsys):
    from ffbench.cli import main

    assert main(["run", str(write(tmp_path, ABLATION_AXES + TUNING)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "axis granularity (backbone granularity): layer, block, stage" in out
    assert "dropped 12 combinations: resnet18 does not offer granularity='layer'" in out
    assert "42 cells x 2 evaluation seeds [0, 1] = 84 evaluation runs" in out
    assert "tuning: 3 trials per method per cell (126 in all)" in out
    assert "budget: 84 evaluation epochs + at most 126 tuning epochs" in out


def test_shipped_suites_load(capsys):
    from ffbench.cli import main

    for name in ("sff-ablation", "class-count", "small-data", "paper-cifar", "smoke", "quick"):
        assert main(["run", name, "--dry-run", "--no-estimate"]) == 0, name
    assert "budget:" in capsys.readouterr().out


def test_a_design_that_leaves_no_cell_is_an_error_naming_the_reasons(tmp_path):
    # every combination dropped: ff.hinton needs a flat backbone, cnn is not; an empty suite is a mistake
    path = tmp_path / "none.toml"
    path.write_text(suite_toml("none", methods=["ff.hinton"], backbones=["cnn"], widths=None))
    match = r"none\.toml: \[design\] leaves no cell to run: every combination was dropped \(ff\.hinton needs"
    with pytest.raises(SuiteError, match=match):
        expand(load(str(path)))
