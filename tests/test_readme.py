"""The README's method examples are real code: they register, train and learn."""

import re
from pathlib import Path

from ffbench.core.config import RunConfig
from ffbench.training.train import fit

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_method_example_runs_and_learns():
    code = re.search(r"```python\n(# mypkg/myff.py\n.*?)```", README.read_text(), re.S).group(1)
    namespace = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    r = fit(
        RunConfig(
            method="myff.greedy",
            dataset="digits",
            backbone="cnn",
            epochs=4,
            backbone_options={"channels": [16, 32, 32, 32]},
        ),
        "cpu",
    )
    assert r.status == "done" and r.metrics["test_acc"] > 0.8, r.metrics
    assert r.metrics["test_acc.last"] > 0.5 and r.metrics["test_acc.unit1"] > 0.15  # chance: 0.1
    assert r.curves[0]["train_loss.unit2"] > 0


def test_readme_non_local_example_runs_and_learns():
    code = re.search(r"```python\n(# mypkg/negff.py\n.*?)```", README.read_text(), re.S).group(1)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_negff"})
    r = fit(
        RunConfig(
            method="negff.e2e",
            dataset="digits",
            backbone="mlp",
            epochs=4,
            lr=3e-3,
            backbone_options={"widths": [128, 128]},
        ),
        "cpu",
    )
    assert r.status == "done" and r.metrics["test_acc"] > 0.6, r.metrics  # chance: 0.1
    assert set(r.metrics) >= {"test_acc.goodness", "val_acc.goodness"}
