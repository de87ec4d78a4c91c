"""Backpropagation baselines: ``bp`` (one head at the end) and ``bp.deepsup`` (a head on every unit,
losses summed, gradients end to end), following methods.md §1."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffbench.method import HEADS, Method, make_head, method_card

_TUNING = {"lr": ("log", 1e-4, 1e-2), "weight_decay": ("log", 1e-6, 1e-3)}


@method_card(
    name="bp", family="bp", summary="End-to-end backpropagation, cross-entropy on one head after the last unit",
    paper="Rumelhart et al. 1986; baseline setup per methods.md §1",
    code="andreaspapac/CwComp src/Backprop.py (CNN baseline)",
    defaults={"head": "linear", "kernel": 1},
    options={"head": HEADS, "kernel": int},
    capabilities=frozenset({"any-backbone"}), tuning_space=_TUNING)
class BP(Method):
    def __init__(self, backbone, num_classes, options, ctx):
        super().__init__(backbone, num_classes, options, ctx)
        self.head = make_head(options["head"], backbone.out_shapes[-1], num_classes, options["kernel"])
        self.opt = ctx.make_optimizer(self.parameters())

    def train_step(self, x, y):
        loss = F.cross_entropy(self.head(self.backbone(x)), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}

    def predict(self, x):
        return {"head": self.head(self.backbone(x))}


@method_card(
    name="bp.deepsup", family="bp",
    summary="Backpropagation with deep supervision: the local methods' heads on every unit, losses summed, "
            "gradients end to end (the architecture-matched baseline for block-local methods)",
    paper="Lee et al. 2015 (deeply-supervised nets); DTG-FF audit 2026 (BP-DeepSup)",
    defaults={"head": "linear", "kernel": 1},
    options={"head": HEADS, "kernel": int},
    capabilities=frozenset({"any-backbone", "unit-heads"}), tuning_space=_TUNING)
class BPDeepSup(Method):
    def __init__(self, backbone, num_classes, options, ctx):
        super().__init__(backbone, num_classes, options, ctx)
        self.heads = nn.ModuleList(make_head(options["head"], s, num_classes, options["kernel"])
                                   for s in backbone.out_shapes)
        self.opt = ctx.make_optimizer(self.parameters())

    def _all_scores(self, x):
        scores = []
        for unit, head in zip(self.backbone.units, self.heads):
            x = unit(x)
            scores.append(head(x))
        return scores

    def train_step(self, x, y):
        loss = sum(F.cross_entropy(s, y) for s in self._all_scores(x))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}

    def evaluate(self, x):
        scores = self._all_scores(x)
        probs = torch.stack([s.softmax(1) for s in scores]).mean(0)
        return {"last": scores[-1], "average": probs}, scores

    def predict(self, x):
        return self.evaluate(x)[0]

    def unit_scores(self, x):
        return self.evaluate(x)[1]
