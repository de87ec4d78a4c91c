"""The plugin API: ``ffbench.api`` holds what plugins import; a plugin written against it (a local method and
a whole-network method, as a third party writes them) installs by entry point and runs; a 0.1 plugin is told
how to port."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import ffbench.api as api

ROOT = Path(__file__).resolve().parent.parent

# What a third party writes from the porting notes: options as Option, imports from ffbench.api, the local
# method's unit loss reduced over the rows it is given, and a whole-network method with its own step.
PLUGIN = """
import torch
import torch.nn.functional as F

from ffbench.api import LinearHead, LocalMethod, Method, Option, method_card


@method_card(name="tp.local", family="tp", summary="a linear head per unit, cross-entropy, step-and-free",
             options={"scale": Option(float, 1.0, "logit scale", gt=0)}, rules=("last", "sum"),
             capabilities=frozenset({"any-backbone", "unit-heads", "step-and-free"}))
class TPLocal(LocalMethod):
    def make_head(self, k, shape):
        return LinearHead(shape, self.num_classes)

    def unit_loss(self, k, scores, y, h):
        return {"loss": F.cross_entropy(self.options["scale"] * scores, y), "act": h.pow(2).mean()}

    def rules(self, scores, features):
        return {"last": scores[-1], "sum": torch.stack(scores).sum(0)}


@method_card(name="tp.whole", family="tp", summary="the whole network trained by its own step",
             options={"noise": Option(float, 0.0, "input noise", ge=0)}, rules=("head",),
             capabilities=frozenset({"any-backbone"}))
class TPWhole(Method):
    def __init__(self, backbone, num_classes, options, ctx):
        super().__init__(backbone, num_classes, options, ctx)
        self.head = LinearHead(backbone.out_shapes[-1], num_classes)
        self.opt = ctx.make_optimizer(self.parameters())

    def train_step(self, x, y):
        noise = self.ctx.draw(lambda g, rows: torch.randn(rows.shape, generator=g, device=rows.device), x)
        loss = F.cross_entropy(self.head(self.backbone(x + self.options["noise"] * noise)), y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}

    def evaluate(self, x):
        return {"head": self.head(self.backbone(x))}, []
"""

SUITE = """
[suite]
name = "api"
version = 1
control = "tp.whole"

[design]
methods = ["tp.local", "tp.whole"]
datasets = ["digits"]
backbones = ["mlp"]
seeds = [0, 1]

[train]
epochs = 2
batch_size = 64

[backbones.mlp]
widths = [32, 32]
"""


def install(folder: Path, name: str, source: str) -> dict[str, str]:
    """``source`` as module ``name``, registered by an entry point as a pip-installed plugin is; the
    environment that finds it."""
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[ffbench.methods]\n{name} = {name}\n")
    path = os.pathsep.join([str(folder), str(ROOT)])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def test_every_public_name_resolves():
    assert api.PLUGIN_API == "0.2" and api.__version__
    missing = [n for n in api.__all__ if not hasattr(api, n)]
    assert not missing
    assert {"LocalMethod", "Method", "Option", "method_card", "Context", "Backbone", "report_kind"} <= set(api.__all__)


def test_a_plugin_written_against_the_api_installs_and_runs(tmp_path):
    env = install(tmp_path / "plugins", "tpplug", PLUGIN)
    suite = tmp_path / "api.toml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "ffbench",
        "run",
        str(suite),
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
        "--no-tracking",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ran 4 of 4" in done.stdout and "Traceback" not in done.stderr
    con = sqlite3.connect(out / "results.db")
    runs = {}
    for method, status, manifest, curves in con.execute(
        "select json_extract(factors, '$.method'), status, manifest, curves from runs"
    ):
        runs.setdefault(method, []).append((status, json.loads(manifest), json.loads(curves)))
    assert {m: [s for s, _, _ in r] for m, r in runs.items()} == {"tp.local": ["done"] * 2, "tp.whole": ["done"] * 2}
    # the local method's seeds train together (its losses are the loop's, per seed); the whole-network
    # method's one at a time, as it does not declare seed_batching
    assert all(m.get("batched") for _, m, _ in runs["tp.local"])
    assert not any(m.get("batched") for _, m, _ in runs["tp.whole"])
    assert "does not declare seed_batching" in done.stderr + done.stdout
    logged = runs["tp.local"][0][2][0]
    assert {"train_loss", "train_loss.unit1", "train_loss.unit2", "train_act.unit1", "test_acc.sum"} <= set(logged)


@pytest.mark.parametrize(
    "hook, port",
    [
        ("def train_readouts(self, features, y):\n        return {}", "readouts(features)"),
        ("joint_step = True", 'update = "joint"'),
        ("def unit_losses(self, k, scores, y):\n        return scores.sum()", "unit_loss only"),
    ],
)
def test_a_01_local_method_is_told_how_to_port(hook, port):
    source = f"""
from ffbench.api import LocalMethod


class Old(LocalMethod):
    {hook}

    def unit_loss(self, k, scores, y):
        return scores.sum()

    def rules(self, scores, features):
        return {{}}
"""
    with pytest.raises(TypeError, match=r"0\.1 method contract.*" + port.replace("(", r"\(").replace(")", r"\)")):
        exec(compile(source, "old_plugin.py", "exec"), {})


def test_a_01_option_is_told_how_to_port():
    with pytest.raises(TypeError, match=r"option 'kernel' must be declared as an Option \(from ffbench.api import"):
        api.method_card(
            name="old.opts",
            family="old",
            summary="x",
            options={"kernel": 3},
            rules=("a",),
            capabilities=frozenset({"any-backbone"}),
        )(type("Old", (api.Method,), {}))


def test_a_local_method_with_an_unknown_update_or_no_readout_optimizer_is_told():
    with pytest.raises(TypeError, match="update = 'jointly'; allowed: local, joint, end-to-end"):
        type(
            "Bad",
            (api.LocalMethod,),
            {"update": "jointly", "unit_loss": lambda self, k, s, y, h: s.sum(), "rules": lambda self, s, f: {}},
        )

    class NoOptimizer(api.LocalMethod):
        def make_head(self, k, shape):
            return api.LinearHead(shape, self.num_classes)

        def unit_loss(self, k, scores, y, h):
            return torch.nn.functional.cross_entropy(scores, y)

        def readouts(self, features):
            return {"probe": features[-1] @ torch.ones(features[-1].shape[1], self.num_classes)}

        def rules(self, scores, features):
            return {"last": scores[-1]}

    from ffbench.training.backbones import build

    ctx = api.Context(device=torch.device("cpu"), generator=torch.Generator())
    method = NoOptimizer(build("mlp", (1, 8, 8), 10, {"widths": [8]}), 10, {}, ctx)
    with pytest.raises(TypeError, match="read-outs but no self.readout_opt"):
        method.train_step(torch.randn(4, 1, 8, 8), torch.arange(4))
