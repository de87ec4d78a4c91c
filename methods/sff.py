"""SFF, Scalable Forward-Forward (Krutsylo 2025, arXiv 2501.03176), following methods.md §4.

Each unit of the backbone (a layer, a residual block or a stage, as the backbone's ``granularity`` option
partitions it) gets an auxiliary k x k convolution with one output channel per class; the class goodness
is the mean over positions of each class channel squared, and the unit's loss is a log-sum-exp over the
goodness vector. Backprop runs inside a unit and never across: the unit's output is layer-normalised and
detached before the next unit. Training is step-and-free: unit k's forward, loss, backward and optimizer
step finish before unit k+1's forward, so at most one unit's graph is alive. Inference averages the units'
goodness vectors (or takes the last unit's); both are logged as rules.

``sff`` uses the units the backbone gives (block for resnet18 / mobilenetv3; the hybrid of the paper),
``sff.layer`` is the pure layer-wise variant and needs a backbone partitioned into layers.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffbench.method import GoodnessHead, Method, method_card, step, variant

LOSSES = ("ce", "margin")          # softmax CE on goodness [INF, default] | log(1 + sum_{k!=y} e^{g_k-g_y+m}) [INF]
LN_FORMS = ("sample", "channel")   # per-sample over (C,H,W) [INF, default] | over C at each position
HEAD_INPUTS = ("raw", "ln")        # the aux conv reads the un-normalised output [INF, default] | LN(h)
RULES = ("average", "last")        # inference: mean of the units' goodness vectors (default) | last unit's
_TUNING = {"lr": ("log", 1e-4, 1e-2), "weight_decay": ("log", 1e-6, 1e-3)}

_NOTES = (
    "All [INF] choices of methods.md §4.2 are options, defaults first. loss='ce' (softmax cross-entropy on "
    "the goodness vector: the plain reading of 'log-sum-exp over class goodness'); 'margin' adds `margin` to "
    "every wrong-class goodness, i.e. log(1+sum_{k!=y} exp(g_k-g_y+m)), equal to 'ce' at m=0. "
    "ln='sample' (F.layer_norm over (C,H,W) per sample, no affine; 'channel' normalises over C per position). "
    "head_input='raw' (the aux conv reads the un-normalised unit output, the most FF-consistent reading; "
    "'ln' reads LN(h), and the LN is then inside the unit's graph). kernel=1 (the paper's 1x1, 'or slightly "
    "larger': 3, 5 allowed; 'same' padding). rule='average' (the author's summary: every block votes, the "
    "averaged argmax wins); 'last' is logged as well. One optimizer per unit (unit + its head). BN placement "
    "is the backbone's `bn` option (inside the unit by default; the paper warns that outside hurts). On "
    "`cnn` the backbone default is granularity='layer', so `sff` there equals `sff.layer` unless the suite "
    "sets granularity='block'. units='backbone' takes the backbone's partition; 'layer' (the sff.layer "
    "variant) refuses any other partition with an error that lists the backbones offering layer units.")


def layer_norm(h: torch.Tensor, form: str) -> torch.Tensor:
    """LayerNorm without affine: over all non-batch dims ('sample') or over channels per position ('channel')."""
    if form == "channel" and h.dim() == 4:
        return F.layer_norm(h.permute(0, 2, 3, 1), h.shape[1:2]).permute(0, 3, 1, 2)
    return F.layer_norm(h, h.shape[1:])


def goodness_loss(g: torch.Tensor, y: torch.Tensor, kind: str, margin: float) -> torch.Tensor:
    """Log-sum-exp loss on the class goodness ``g`` (B, K)."""
    if kind == "margin":
        g = g + margin * (1 - F.one_hot(y, g.shape[1]).to(g.dtype))
    return F.cross_entropy(g, y)


def _layer_backbones() -> str:
    from ffbench.registry import BACKBONES
    names = [c.name for c in BACKBONES.list() if "layer" in tuple(c.options.get("granularity", ()))]
    return ", ".join(names) or "none"


def check_options(card, options: dict) -> None:
    for key, allowed in card.options.items():
        if isinstance(allowed, tuple) and options.get(key) not in allowed:
            raise ValueError(f"{card.name}: option {key}={options.get(key)!r}; allowed: {', '.join(map(str, allowed))}")


@method_card(
    name="sff", family="sff",
    summary="Scalable Forward-Forward, hybrid: per-unit aux conv (K channels) goodness, log-sum-exp loss, "
            "backprop inside a unit (block), LN + detach between units, step-and-free",
    paper="Krutsylo 2025, 'Scalable Forward-Forward', arXiv 2501.03176 (no public code; methods.md §4)",
    defaults={"kernel": 1, "loss": "ce", "margin": 1.0, "ln": "sample", "head_input": "raw",
              "rule": "average", "units": "backbone"},
    options={"kernel": int, "loss": LOSSES, "margin": float, "ln": LN_FORMS, "head_input": HEAD_INPUTS,
             "rule": RULES, "units": ("backbone", "layer")},
    capabilities=frozenset({"any-backbone", "unit-heads", "step-and-free"}),
    tuning_space=_TUNING, notes=_NOTES)
class SFF(Method):
    def __init__(self, backbone, num_classes, options, ctx):
        super().__init__(backbone, num_classes, options, ctx)
        check_options(self.card, options)
        if options["kernel"] < 1 or options["kernel"] % 2 == 0:
            raise ValueError(f"{self.card.name}: kernel={options['kernel']}; use an odd size >= 1 (1, 3, 5, ...)")
        if options["units"] == "layer" and backbone.granularity != "layer":
            raise ValueError(
                f"{self.card.name} trains every layer on its own and needs a backbone partitioned into layers, "
                f"but this one is partitioned by {backbone.granularity!r} (units: {', '.join(backbone.unit_names)}). "
                f"Backbones that offer layer units: {_layer_backbones()} (set backbone option granularity='layer'); "
                f"resnet18 and mobilenetv3 cannot be cut inside a residual block. Use 'sff' for block units.")
        self.heads = nn.ModuleList(GoodnessHead(s, num_classes, options["kernel"]) for s in backbone.out_shapes)
        self.opts = [ctx.make_optimizer(list(u.parameters()) + list(h.parameters()))
                     for u, h in zip(backbone.units, self.heads)]

    def _unit(self, k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit k on its (detached) input: (class goodness, hand-off to the next unit)."""
        h = self.backbone.units[k](x)
        if self.options["head_input"] == "ln":
            z = layer_norm(h, self.options["ln"])
            return self.heads[k](z), z.detach()
        return self.heads[k](h), layer_norm(h.detach(), self.options["ln"])

    def train_step(self, x, y):
        stats, total = {}, 0.0
        for k, opt in enumerate(self.opts):
            g, x = self._unit(k, x)
            loss = goodness_loss(g, y, self.options["loss"], self.options["margin"])
            step(opt, loss)  # backward + update now: unit k's graph is freed before unit k+1 runs
            stats[f"loss.unit{k + 1}"] = loss.detach()
            total = total + stats[f"loss.unit{k + 1}"]
        return {"loss": total, **stats}

    def evaluate(self, x):
        scores = []
        for k in range(len(self.heads)):
            g, x = self._unit(k, x)
            scores.append(g)
        rules = {"average": torch.stack(scores).mean(0), "last": scores[-1]}
        first = self.options["rule"]
        return {first: rules[first], **{r: v for r, v in rules.items() if r != first}}, scores

    def predict(self, x):
        return self.evaluate(x)[0]

    def unit_scores(self, x):
        return self.evaluate(x)[1]


def unit_saved_bytes(method: SFF, x: torch.Tensor, y: torch.Tensor) -> list[int]:
    """Saved-for-backward bytes of each unit's step on its own (unit + aux head + loss), measured with the
    harness's meter. Step-and-free should peak at their max; one backward over all units keeps their sum.
    No update is made and the BatchNorm running statistics are restored."""
    from ffbench.train import SavedTensorMeter

    sizes, params = [], list(method.parameters())
    buffers = [b.clone() for b in method.buffers()]
    for k in range(len(method.heads)):
        meter = SavedTensorMeter(params)
        with meter.hooks():
            g, x_next = method._unit(k, x)
            loss = goodness_loss(g, y, method.options["loss"], method.options["margin"])
        sizes.append(meter.peak)
        del g, loss
        x = x_next
    with torch.no_grad():
        for b, saved in zip(method.buffers(), buffers):
            b.copy_(saved)
    return sizes


variant(SFF, name="sff.layer", family="sff",
        summary="Scalable Forward-Forward, pure layer-wise: every layer is a unit with its own aux conv and "
                "loss; needs a backbone with layer granularity (e.g. cnn, mlp), rejects resnet18 / "
                "mobilenetv3",
        paper=SFF.card.paper, defaults={**SFF.card.defaults, "units": "layer"}, options=SFF.card.options,
        capabilities=SFF.card.capabilities, tuning_space=_TUNING, notes=_NOTES)
