import pytest

from ffbench.cli import main
from ffbench.plan.suite import SuiteError, load

GOOD = """
[suite]
name = "t"
version = 1
[design]
methods = ["bp"]
datasets = ["synthetic"]
backbones = ["mlp"]
seeds = [0]
"""


def write(tmp_path, extra="", base=GOOD):
    p = tmp_path / "s.toml"
    p.write_text(base + extra)
    return str(p)


def test_good_suite_loads(tmp_path):
    s = load(write(tmp_path, '[train]\nepochs = 2\n[backbones.mlp]\nwidths = [8]\n[methods.bp]\nhead = "goodness"\n'))
    assert s.name == "t" and s.train == {"epochs": 2} and s.method_settings == {"bp": {"head": "goodness"}}


@pytest.mark.parametrize(
    "extra, base_edit, where, allowed",
    [
        ("", ('methods = ["bp"]', 'methods = ["nope"]'), "[design].methods", "bp, bp.deepsup"),
        ("", ('datasets = ["synthetic"]', 'datasets = ["imagenet"]'), "[design].datasets", "digits"),
        ("[train]\nepoch = 3\n", None, "[train].epoch", "allowed: epochs, batch_size"),
        ('[train]\nepochs = "ten"\n', None, "[train].epochs", "expected int"),
        ("[train]\nepochs = 0\n", None, "[train].epochs", "an integer in [1, 100000]"),
        ('[train]\noptimizer = "lamb"\n', None, "[train].optimizer", "allowed: sgd, adam, adamw"),
        ('[methods.bp]\nhead = "mlp"\n', None, '[methods."bp"].head', "allowed: linear, goodness"),
        ('[methods."bp.depsup"]\nlr = 0.1\n', None, "bp.depsup", "not in [design].methods"),
        ('[backbones.mlp]\ngranularity = "stage"\n', None, '[backbones."mlp"].granularity', "allowed: layer"),
        ("[backbones.mlp]\ndepth = 3\n", None, '[backbones."mlp"].depth', "allowed: widths, granularity"),
        ("", ("version = 1", 'version = "one"'), "[suite].version", "expected int"),
        ("[extra]\nx = 1\n", None, "file.extra", "allowed: suite, design"),
        ("", ('name = "t"', 'name = "a/b"'), "[suite].name", "letters, digits, '.', '-' and '_'"),
        (
            "",
            ("version = 1", 'version = 1\ncontrol = "sff"'),
            "[suite].control",
            "not one of [design].methods; allowed: bp",
        ),
        ("[train]\nval_size = 1.5\n", None, "[train].val_size", "a fraction in (0, 1) or a positive count"),
        ("[datasets.synthetic]\nroot = 5\n", None, '[datasets."synthetic"].root', "reads no files"),
    ],
)
def test_bad_input_names_file_field_and_allowed_values(tmp_path, extra, base_edit, where, allowed):
    base = GOOD.replace(*base_edit) if base_edit else GOOD
    path = write(tmp_path, extra, base)
    with pytest.raises(SuiteError) as err:
        load(path)
    msg = str(err.value)
    assert msg.startswith(path) and where in msg and allowed in msg, msg


def test_cli_reports_bad_suite_before_training(tmp_path, capsys):
    path = write(tmp_path, "[train]\nbatch_size = -1\n")
    assert main(["run", path, "--out", str(tmp_path / "out")]) == 2
    assert "[train].batch_size" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unknown_suite_name_lists_named_suites():
    with pytest.raises(SuiteError, match="quick"):
        load("no-such-suite")


def test_split_sizes_against_the_data(tmp_path):
    from ffbench.core.config import SplitError, split_sizes

    assert split_sizes(0.1, None, None, n_train=600, num_classes=10) == (60, 540)
    assert split_sizes(100, 500, 2, n_train=600, num_classes=10) == (100, 500)
    for args, field in (
        ((0.1, None, 11), "classes"),
        ((600, None, None), "val_size"),
        ((0.1, 541, None), "train_subset"),
    ):
        with pytest.raises(SplitError) as err:
            split_sizes(*args, n_train=600, num_classes=10)
        assert err.value.field == field


def test_a_synthetic_suite_within_the_data_passes_planning(tmp_path, capsys):
    path = write(tmp_path, "[train]\nval_size = 100\ntrain_subset = 500\nclasses = 10\n")
    assert main(["run", path, "--dry-run"]) == 0, capsys.readouterr().err
