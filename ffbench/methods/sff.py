"""SFF, Scalable Forward-Forward (Krutsylo 2025, arXiv 2501.03176), following docs/methods/notes/sff.md §4.

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
import torch.nn.functional as F

from ffbench.core.heads import GoodnessHead
from ffbench.core.method import LocalMethod, method_card, variant
from ffbench.core.options import Option, odd

_TUNING = {"lr": ("log", 1e-4, 1e-2), "weight_decay": ("log", 1e-6, 1e-3)}
_OPTIONS = {
    "kernel": Option(
        int,
        1,
        "aux conv kernel size ('same' padding)",
        ge=1,
        check=odd,
        check_doc="an odd integer >= 1 (1, 3, 5, ...)",
        source="paper: 1x1 'or slightly larger'",
    ),
    "loss": Option(str, "ce", "unit loss on the goodness vector", choices=("ce", "margin"), source="[INF]"),
    "margin": Option(float, 1.0, "margin added to wrong-class goodness (loss='margin')", ge=0),
    "ln": Option(
        str,
        "sample",
        "hand-off LayerNorm: per sample over (C,H,W), or over C per position",
        choices=("sample", "channel"),
        source="[INF]",
    ),
    "head_input": Option(
        str, "raw", "the aux conv reads the raw unit output or LN(h)", choices=("raw", "ln"), source="[INF]"
    ),
    "rule": Option(str, "average", "default inference rule", choices=("average", "last"), source="[INF]"),
    "units": Option(
        str, "backbone", "the backbone's partition, or layers only (sff.layer)", choices=("backbone", "layer")
    ),
}
_NOTES = (
    "All [INF] choices of docs/methods/notes/sff.md §4.2 are options, defaults first. loss='ce' (softmax cross-entropy on "
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
    "variant) refuses any other partition with an error that lists the backbones offering layer units."
)


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


def _not_layers(method: str, backbone: str, granularity: str) -> str | None:
    """Why a layer-wise method cannot take ``backbone``'s partition, or None."""
    if granularity == "layer":
        return None
    from ffbench.core.registry import BACKBONES

    names = [c.name for c in BACKBONES.list() if "layer" in (c.options["granularity"].choices or ())]
    return (
        f"{method} trains every layer on its own and needs a backbone partitioned into layers, but "
        f"{backbone} is partitioned by {granularity!r}. Backbones that offer layer units: "
        f"{', '.join(names) or 'none'} (set backbone option granularity='layer'); resnet18 and mobilenetv3 "
        f"cannot be cut inside a residual block. Use 'sff' for block units."
    )


# No public code and no readable paper body (docs/methods/notes/sff.md §4): the reference recipe is what the author states,
# and the [INF] readings of §4.2 where nothing is stated; optimizer, lr and budget are [NOT FOUND] (ffbench's).
_REFERENCE = {
    "kernel": (1, "§4.1: aux conv 1x1 'or slightly larger' [ABS-author]"),
    "loss": ("ce", "§4.1/§4.2: log-sum-exp over class goodness, read as CE [INF]"),
    "ln": ("sample", "§4.2: LN per sample over (C, H, W) [INF]"),
    "head_input": ("raw", "§4.2: goodness from the un-normalised unit output, LN on the hand-off [INF]"),
    "rule": ("average", "§4.1: every block votes, the averaged argmax wins [ABS-author]"),
}


@method_card(
    name="sff",
    family="sff",
    recipes={"reference": _REFERENCE},
    summary="Scalable Forward-Forward, hybrid: per-unit aux conv (K channels) goodness, log-sum-exp loss, "
    "backprop inside a unit (block), LN + detach between units, step-and-free",
    paper="Krutsylo 2025, 'Scalable Forward-Forward', arXiv 2501.03176 (no public code; docs/methods/notes/sff.md §4)",
    options=_OPTIONS,
    rules=("average", "last"),
    rule_option="rule",
    capabilities=frozenset({"any-backbone", "unit-heads", "step-and-free"}),
    tuning_space=_TUNING,
    notes=_NOTES,
)
class SFF(LocalMethod):
    probe_rule = "last"

    @classmethod
    def skip(cls, config):
        units = {**cls.card.defaults, **config.method_options}["units"]
        granularity = config.backbone_options.get("granularity", "layer")
        return _not_layers(cls.card.name, config.backbone, granularity) if units == "layer" else None

    def __init__(self, backbone, num_classes, options, ctx):
        why = options["units"] == "layer" and _not_layers(self.card.name, "this backbone", backbone.granularity)
        if why:
            raise ValueError(why)
        super().__init__(backbone, num_classes, options, ctx)

    def make_head(self, k, shape):
        return GoodnessHead(shape, self.num_classes, self.options["kernel"])

    def unit_outputs(self, k, x):
        h = self.backbone.units[k](x)
        if self.options["head_input"] == "ln":  # the LN is then inside the unit's graph
            h = layer_norm(h, self.options["ln"])
        return h, h

    def pass_on(self, k, h):
        return h if self.options["head_input"] == "ln" else layer_norm(h, self.options["ln"])

    def unit_loss(self, k, scores, y, h):
        return goodness_loss(scores, y, self.options["loss"], self.options["margin"])

    def rules(self, scores, features):
        return {"average": torch.stack(scores).mean(0), "last": scores[-1]}


variant(
    SFF,
    name="sff.layer",
    family="sff",
    summary="Scalable Forward-Forward, pure layer-wise: every layer is a unit with its own aux conv and "
    "loss; needs a backbone with layer granularity (e.g. cnn, mlp), rejects resnet18 / "
    "mobilenetv3",
    defaults={"units": "layer"},
)
