"""ASGE, Adaptive Spatial Goodness Encoding (Gong, Staszewski, Xu; arXiv 2509.12394), following docs/methods/notes/asge.md §5;
its VGG-like backbone is ``vgg.asge`` (``ffbench.training.backbones``).

A block is conv -> ReLU -> RMS pooling -> LayerNorm over channels. The goodness of block l is read from its
ReLU map Y_l (before pooling and LN): each channel map is cut into a P_l x P_l grid of patches and each patch
gives its mean square, so g_l has C_l * P_l^2 entries. Class scores a_l = W_l g_l + b_l come from a fixed
random projection, held as buffers and never trained; each block is trained with cross-entropy on a_l,
its input detached (no gradient crosses a block), step-and-free. Prediction: the last block's a_L, the sum
of the a_l, or a linear read-out trained on the concatenated (detached) goodness; all three are logged.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffbench.core.method import LocalMethod, method_card
from ffbench.core.options import Option


def _round(p: float) -> int:
    return int(math.floor(p + 0.5))


# P_l from (C_l, C_L, alpha); pluggable: add a rule here and to the `grid` option. docs/methods/notes/asge.md §5.2 readings.
GRID_RULES = {
    "sqrt": lambda c, c_last, alpha: _round((c_last / c) ** (alpha / 2)),  # (a): C_l * P_l^2 ~ C_L at alpha=1
    "linear": lambda c, c_last, alpha: _round((c_last / c) ** alpha),  # (b)
}
FITS = ("adaptive", "crop")
PREDICTIONS = ("last", "sum", "linear")


def patch_goodness(y: torch.Tensor, p: int, fit: str, reduce: str = "mean") -> torch.Tensor:
    """(B, C, H, W) -> (B, C * p * p): the mean square of each patch of a p x p grid over every channel map.

    When p does not divide H or W: 'adaptive' uses adaptive average pooling of y^2 (torch's bins,
    floor/ceil edges, neighbouring patches may share a row), so every position counts and the result is
    exact patches whenever p divides; 'crop' drops the bottom/right remainder, then exact patches."""
    if y.dim() == 2:
        y = y[:, :, None, None]
    sq = y * y
    if fit == "crop":
        sq = sq[:, :, : sq.shape[2] // p * p, : sq.shape[3] // p * p]
    g = F.adaptive_avg_pool2d(sq, p).flatten(1)  # exact patch means once cropped
    return g * (sq.shape[2] * sq.shape[3] / (p * p)) if reduce == "sum" else g


# ---------------------------------------------------------------- the method
_NOTES = (
    "Defaults and why ([INF] per docs/methods/notes/asge.md §5): grid='sqrt' is reading (a), P_l = round((C_L/C_l)^(alpha/2)) "
    "(keeps C_l*P_l^2 ~ C_L, 'decoupling classification complexity from channel dimensionality'); 'linear' is "
    "reading (b), P_l = round((C_L/C_l)^alpha); alpha=1 (reported best); both rounded half up and clipped to "
    "[1, H_l]; `patches` (a list, one per block) overrides the rule. fit='adaptive': maps P_l does not divide "
    "are read with adaptive average pooling of Y^2, so no position is dropped (each one still gets gradient) "
    "and it equals exact patches when P_l divides; 'crop' drops the bottom/right remainder. goodness='mean' "
    "(patch mean square; the digest says 'sum', kept as an option): the sum scales each layer's scores by its "
    "patch area, which unbalances the 'sum' rule (FMNIST, 3k images, 2 epochs: sum rule 42% with 'sum' vs 70% "
    "with 'mean', last block similar). The projection W_l, b_l uses nn.Linear's initialisation (times "
    "proj_scale, default 1) from the run's init stream and is a buffer, in no optimizer. Loss: softmax cross-entropy on a_l. Units are the "
    "backbone's (on vgg.asge one block = conv-ReLU-RMSpool-LN); on other backbones goodness is read from the "
    "unit output. predict='last' (the FF-style single read-out; all three are logged): 'sum' adds the a_l, "
    "'linear' is a linear layer on the concatenated detached goodness, trained with CE alongside."
)


# No readable code or paper body (docs/methods/notes/asge.md §5): the reference recipe takes what the digest states; the
# grid rule, fit, projection scale, optimizer, lr and budget are [INF] / [NOT FOUND] (ffbench's values).
_REFERENCE = {
    "goodness": ("sum", "§5.2: patch goodness = sum of squares inside the patch [SEC digest]"),
    "alpha": (1.0, "§5.2: alpha = 1 reported best [SEC digest]"),
    "predict": ("last", "§5.3: the three prediction strategies are [NOT FOUND]; last block [INF]"),
}


@method_card(
    name="asge",
    family="asge",
    recipes={"reference": _REFERENCE},
    summary="Adaptive Spatial Goodness Encoding: per-block patch-grid goodness of the ReLU maps, fixed random "
    "projection to class scores, layer-wise cross-entropy, detached between blocks",
    paper="Gong, Staszewski, Xu 2025, arXiv 2509.12394 (v2: three prediction strategies; code "
    "KAI-Laboratory/ASGE not readable; docs/methods/notes/asge.md §5)",
    options={
        "grid": Option(str, "sqrt", "patch-grid rule P_l", choices=tuple(GRID_RULES), source="[INF] §5.2"),
        "alpha": Option(float, 1.0, "grid exponent", gt=0, source="paper: best reported"),
        "patches": Option(list, [], "explicit P_l per block (overrides the rule)", item=Option(int, ge=1)),
        "fit": Option(str, "adaptive", "maps the grid does not divide", choices=FITS, source="[INF]"),
        "goodness": Option(
            str,
            "mean",
            "patch goodness: mean or sum of squares",
            choices=("mean", "sum"),
            source="[INF]; the digest says sum",
        ),
        "proj_scale": Option(float, 1.0, "scale of the fixed random projection", gt=0),
        "predict": Option(str, "last", "default inference rule", choices=PREDICTIONS),
    },
    rules=PREDICTIONS,
    rule_option="predict",
    capabilities=frozenset({"any-backbone", "unit-heads", "step-and-free", "fixed-projection"}),
    tuning_space={"lr": ("log", 1e-4, 1e-2), "weight_decay": ("log", 1e-6, 1e-3)},
    notes=_NOTES,
)
class ASGE(LocalMethod):
    adapt_modes = ("linear-probe", "last-k-units", "fine-tune")  # fixed projections: no head trains
    probe_rule = "linear"
    readouts_read_all = True

    def head_shapes(self):
        """The shape of each block's goodness vector: C_l * P_l^2, P_l from the grid rule (or `patches`)."""
        shapes, o = self._map_shapes(), self.options
        if o["patches"] and len(o["patches"]) != len(shapes):
            raise ValueError(f"asge: patches has {len(o['patches'])} entries for {len(shapes)} units")
        self.patches = []
        for k, (c, *hw) in enumerate(shapes):
            p = int(o["patches"][k]) if o["patches"] else GRID_RULES[o["grid"]](c, shapes[-1][0], o["alpha"])
            self.patches.append(max(1, min(p, *(hw or [1]))))
        return [(c * p * p,) for (c, *_), p in zip(shapes, self.patches)]

    def make_head(self, k, shape):
        return FixedProjection(shape[0], self.num_classes, self.options["proj_scale"])

    def __init__(self, backbone, num_classes, options, ctx):
        super().__init__(backbone, num_classes, options, ctx)
        self.readout = nn.Linear(sum(h.weight.shape[1] for h in self.heads), num_classes)
        self.readout_opt = ctx.make_optimizer(self.readout.parameters())

    @torch.no_grad()
    def _map_shapes(self):
        """The shape of each block's ReLU map (what goodness reads), from a pass on zeros in eval mode."""
        was, shapes = self.backbone.training, []
        self.backbone.eval()
        x = torch.zeros(2, *self.backbone.in_shape, device=next(self.backbone.parameters()).device)
        for k in range(len(self.backbone.units)):
            y, x = self._pair(k, x)
            shapes.append(tuple(y.shape[1:]))
        self.backbone.train(was)
        return shapes

    def _pair(self, k, x):
        y = self._relu_map(k, x)
        return y, self.pass_on(k, y)

    def _relu_map(self, k, x):
        unit = self.backbone.units[k]
        return unit.relu_map(x) if hasattr(unit, "relu_map") else unit(x)

    def unit_outputs(self, k, x):
        """(block k's patch goodness g_k, its ReLU map); the head projects g_k to class scores. The block's
        pooling and LayerNorm are the hand-off, so in training they run on the detached map without a graph:
        only conv, ReLU and goodness are saved for backward."""
        y = self._relu_map(k, x)
        return patch_goodness(y, self.patches[k], self.options["fit"], self.options["goodness"]), y

    def pass_on(self, k, y):
        unit = self.backbone.units[k]
        return unit.hand_on(y) if hasattr(unit, "hand_on") else y

    def unit_loss(self, k, scores, y, h):
        return F.cross_entropy(scores, y)

    def readouts(self, features):
        return {"readout": self.readout(torch.cat(features, 1))}

    def rules(self, scores, features):
        return {"last": scores[-1], "sum": torch.stack(scores).sum(0), "linear": self.readout(torch.cat(features, 1))}


class FixedProjection(nn.Module):
    """a = W g + b with W, b drawn once (nn.Linear's initialisation, times ``scale``) and held as buffers:
    in no optimizer, never trained."""

    def __init__(self, dim: int, num_classes: int, scale: float = 1.0):
        super().__init__()
        proj = nn.Linear(dim, num_classes)
        self.register_buffer("weight", proj.weight.detach() * scale)
        self.register_buffer("bias", proj.bias.detach().clone())

    def forward(self, g):
        return F.linear(g, self.weight, self.bias)
