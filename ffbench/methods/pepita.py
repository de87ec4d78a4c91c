"""PEPITA, error-driven input modulation (Dellaferrera & Kreiman, ICML 2022, arXiv 2201.11665), following
docs/methods/notes/pepita.md §16.

Two forward passes per batch and no backward pass. Pass 1 runs the clean input x through the MLP (hidden
layers ReLU, dropout masks m_l, a bias-free output layer, softmax) and gives the error e = softmax - onehot(y).
Pass 2 runs the modulated input x + F e, F a fixed random (d_in x K) matrix, with the same masks. Each hidden
layer's update is the difference of its two activities times its modulated input, ΔW_l = ((h_l - h~_l) ⊙ m_l)
h~_{l-1}^T, the output layer's the modulated error times its modulated input, ΔW_L = e~ h~_{L-1}^T; all are
divided by the batch size and applied together. A whole-network method: no unit can update without the output
error and both passes. The updates are written as the parameters' ``.grad`` and stepped by the run's
optimizer (SGD with momentum in the recipes), so the harness's learning-rate schedule applies.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffbench.core.method import Method, method_card
from ffbench.core.options import Option
from ffbench.core.registry import ByDataset

_OPTIONS = {
    "feedback_scale": Option(
        float, 0.05, "F = U(-sqrt(6/d_in), sqrt(6/d_in)) x this", gt=0, source="code: F x 0.05 (--Bstd 0.05)"
    ),
    "feedback_dist": Option(
        str,
        "uniform",
        "F's entries: zero-mean uniform, or their absolute values (all positive)",
        choices=("uniform", "positive"),
        source="code: uniform; positive [INF] (§16.5)",
    ),
    "error": Option(
        str,
        "e",
        "what F projects: the error, or its sign (F then x 0.1)",
        choices=("e", "sign"),
        source="code: learn_type ERIN / ERINsign",
    ),
    "keep": Option(
        float,
        0.9,
        "dropout keep probability of the hidden layers (both passes share the masks)",
        gt=0,
        le=1,
        source="code: --dropout 0.9, inverted dropout",
    ),
    "decay_at": Option(
        list,
        [0.6, 0.9],
        "fractions of the epochs after which the update is multiplied by `decay` (again at each)",
        item=Option(float, gt=0, le=1),
        source="code: eta x 0.1 at epochs 60 and 90 of 100",
    ),
    "decay": Option(float, 0.1, "the update's factor at each of decay_at", gt=0, le=1, source="code: eta x 0.1"),
    "bias": Option(
        str,
        "none",
        "the backbone's biases: zero and fixed (the paper's bias-free net), or trained by the same rule",
        choices=("none", "trained"),
        source="code: bias-free; trained [INF]",
    ),
    "init": Option(
        str,
        "he-uniform",
        "weights: He uniform U(±sqrt(6/fan_in)), or torch's",
        choices=("he-uniform", "torch"),
        source="code: --w_init he_uniform",
    ),
}
_REFERENCE = {
    "optimizer": ("sgd", "§16.1 functions.py: momentum update v = 0.9 v + eta dW / B, W -= v"),
    "momentum": (0.9, "§16.1 functions.py: gamma 0.9"),
    "lr": (
        ByDataset({"mnist": 0.1, "cifar10": 0.01}),
        "§16.2 README command: eta 0.1 (MNIST); notebook: 0.01 (CIFAR-10)",
    ),
    "batch_size": (64, "§16.2 README command: batch 64"),
    "epochs": (100, "§16.2 README command: 100 epochs"),
    "decay_at": ([0.6, 0.9], "§16.2 main.py: eta x 0.1 at epochs 60 and 90 (decay forced on)"),
    "keep": (0.9, "§16.2 README command: --dropout 0.9 (keep probability)"),
    "feedback_scale": (0.05, "§16.1 functions.py: F He-uniform x 0.05"),
    "init": ("he-uniform", "§16.2 README command: --w_init he_uniform"),
    "backbone.widths": ([1024], "§16.1 README command: one hidden layer of 1024, ReLU, softmax output"),
    "dataset.normalize": ("none", "§16.6: raw [0, 1] pixels, flattened"),
}


@method_card(
    name="pepita",
    family="pepita",
    recipes={"reference": _REFERENCE},
    summary="PEPITA: two forward passes, the second on the input plus the output error projected by a fixed "
    "random F (same dropout masks); each hidden layer updated by the difference of its two activities times its "
    "modulated input, the output layer by the modulated error; no backward pass",
    paper="Dellaferrera & Kreiman, 'Error-driven Input Modulation: Solving the Credit Assignment Problem without "
    "a Backward Pass', ICML 2022, arXiv 2201.11665 (docs/methods/notes/pepita.md §16)",
    code="GiorgiaD/PEPITA (no licence: facts only)",
    defaults={"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "batch_size": 64},
    options=_OPTIONS,
    rules=("output",),
    capabilities=frozenset({"flat", "fixed-projection"}),
    tuning_space={"lr": ("log", 1e-3, 0.3), "feedback_scale": ("log", 0.005, 0.5)},
    notes="Backbone: mlp (each unit one Linear and its ReLU), plus PEPITA's own bias-free output layer. "
    "Hidden differences are masked again (the code multiplies h - h~ by the inverted-dropout mask). "
    "The decay scales the update before the momentum (v = 0.9 v + eta d dW / B, the code's form), so it is "
    "refused with adam/adamw, which normalise it away. On standardised inputs (the ffbench recipe) F e is "
    "about 3x smaller relative to the input than on raw [0, 1] pixels (§16.6): feedback_scale rescales "
    "it. The code validates on the test set; ffbench carves its "
    "validation split from the training set. Not implemented: weight mirroring (arXiv 2302.05440, abstract "
    "only) and the conv model (Net1conv1fcXL).",
)
class PEPITA(Method):
    probe_rule = "output"
    seed_batching = False  # the updates are set by hand over the whole batch, not reduced per seed

    @classmethod
    def skip(cls, config):
        o = {**{k: v for k, v in cls.card.defaults.items() if k in cls.card.options}, **config.method_options}
        if o["decay_at"] and config.optimizer != "sgd":
            return (
                f"pepita: decay_at scales the update, which {config.optimizer} normalises away; "
                "set optimizer = 'sgd' or decay_at = []"
            )
        return None

    def __init__(self, backbone, num_classes, options, ctx):
        super().__init__(backbone, num_classes, options, ctx)
        o = options
        self.linears = [[m for m in u.modules() if isinstance(m, nn.Linear)] for u in backbone.units]
        if any(len(lin) != 1 for lin in self.linears) or len(backbone.out_shapes[-1]) != 1:
            raise ValueError("pepita needs fully connected units, each one nn.Linear and its activation (mlp)")
        self.linears = [lin[0] for lin in self.linears]
        self.out = nn.Linear(backbone.out_shapes[-1][0], num_classes, bias=False)
        with torch.no_grad():
            for lin in [*self.linears, self.out]:
                if o["init"] == "he-uniform":
                    nn.init.kaiming_uniform_(lin.weight, nonlinearity="relu")  # bound sqrt(6 / fan_in)
                if lin.bias is not None and o["bias"] == "none":
                    lin.bias.zero_().requires_grad_(False)
            d_in = math.prod(backbone.in_shape)
            fb = torch.empty(d_in, num_classes).uniform_(-1, 1) * math.sqrt(6 / d_in) * o["feedback_scale"]
            fb = fb.abs() if o["feedback_dist"] == "positive" else fb
        self.register_buffer("feedback", fb * (0.1 if o["error"] == "sign" else 1.0))
        self.opt = ctx.make_optimizer(self.parameters())
        self.factor = 1.0

    def start_epoch(self, epoch):
        self.factor = self.options["decay"] ** sum(
            epoch >= round(f * self.ctx.epochs) for f in self.options["decay_at"]
        )

    def passes(self, x, masks=None):
        """Every layer's input and the output's logits: [x, h_1, ..., h_{L-1}], logits (masks: dropout)."""
        hs = [x.flatten(1)]
        for k, unit in enumerate(self.backbone.units):
            hs.append(unit(hs[-1]) if masks is None else unit(hs[-1]) * masks[k])
        return hs, self.out(hs[-1])

    def masks(self, x):
        """Inverted-dropout masks of the hidden layers, one draw for both passes (the run's stream)."""
        widths = [s[0] for s in self.backbone.out_shapes]
        keep = self.options["keep"]
        draw = lambda g, t: (torch.rand(len(t), sum(widths), generator=g, device=t.device) < keep).to(t.dtype) / keep
        return (self.ctx.draw(draw, x) if keep < 1 else x.new_ones(len(x), sum(widths))).split(widths, 1)

    @torch.no_grad()
    def train_step(self, x, y):
        x, target = x.flatten(1), F.one_hot(y, self.num_classes).to(x.dtype)
        masks = self.masks(x)
        hs, logits = self.passes(x, masks)
        e = logits.softmax(1) - target
        hs_mod, logits_mod = self.passes(
            x + (e.sign() if self.options["error"] == "sign" else e) @ self.feedback.T, masks
        )
        scale = self.factor / len(x)
        deltas = [(a - b) * m for a, b, m in zip(hs[1:], hs_mod[1:], masks)] + [logits_mod.softmax(1) - target]
        for lin, d, inp in zip([*self.linears, self.out], deltas, hs_mod):
            lin.weight.grad = d.T @ inp * scale if lin.weight.requires_grad else None
            if lin.bias is not None and lin.bias.requires_grad:
                lin.bias.grad = d.sum(0) * scale
        self.opt.step()
        return {"loss": F.cross_entropy(logits, y), "loss.modulated": F.cross_entropy(logits_mod, y)}

    @torch.no_grad()
    def evaluate(self, x):
        return {"output": self.passes(x)[1]}, []
