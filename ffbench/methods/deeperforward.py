"""DeeperForward (Sun, Zhang, He, Wen, Shen, Xie, ICLR 2025), following
docs/methods/notes/deeperforward.md §12.

Each unit is a CW-Conv layer ``y = Dropout(ReLU(Conv(x)))`` of the ``resnet.df`` or ``tinycnn.df`` backbone whose
channels split into K consecutive class groups. The class score is the *mean* of each group's activity (not
squared) and the unit's loss is CE on those K scores. The unit hands on ``GroupNorm_K(y)`` (per sample and class
group, no affine): zero-mean groups carry none of the goodness the unit was trained on, which decouples the
next unit's objective. The residual wiring (add at unit 2, concatenate at unit 4 of each stage, all shortcut
tensors detached) lives in the backbone: a unit's output is its activity followed by the skip channels it
carries, and only the activity is normalised here. One AdamW per unit, step-and-free; the input is
layer-normalised per sample. Inference sums the class scores of the units start..end.

Not built: Signal Integrating & Pruning (SIP), which re-chooses (start, end) after each epoch on the validation
split; a method never sees validation labels, so the range is the options ``start``/``end`` (the paper's
pre-SIP range by default) and the per-unit accuracies are logged for choosing it. Nor the threaded pipeline.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffbench.core.method import LocalMethod, method_card
from ffbench.core.options import Option
from ffbench.core.registry import ByDataset

BACKBONES = ("resnet.df", "tinycnn.df")


class GroupScore(nn.Module):
    """Class scores of a unit's activity (B, C, H, W): the mean (or mean square) of each of K channel groups."""

    def __init__(self, num_classes: int, square: bool):
        super().__init__()
        self.k, self.square = num_classes, square

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        g = y.reshape(len(y), self.k, -1)
        return (g.pow(2) if self.square else g).mean(2)


_OPTIONS = {
    "goodness": Option(
        str,
        "mean",
        "class score: group mean (paper) or mean square (ablation)",
        choices=("mean", "square"),
        source="§12.1 [CODE cwconv.py; PAPER Fig. 2c]; square: §12.5 ablation [INF]",
    ),
    "post_norm": Option(
        str,
        "groupnorm",
        "hand-off: GroupNorm over each class group, LayerNorm over the unit, or none",
        choices=("groupnorm", "layernorm", "none"),
        source="§12.1 [CODE; PAPER Fig. 2c]; layernorm, none: §12.5 ablations [INF]",
    ),
    "input_norm": Option(
        str,
        "layernorm",
        "input LayerNorm over (C, H, W) per sample",
        choices=("layernorm", "none"),
        source="§12.1 [CODE]",
    ),
    "resize": Option(
        (int, type(None)),
        None,
        "resize the input to this side (bilinear) first; unset: as loaded",
        ge=1,
        source="§12.1: MNIST/F-MNIST resized to 32x32 [CODE]",
    ),
    "start": Option(int, 1, "first unit (0-based) the range rule sums", ge=0, source="§12.3: s = 1 before SIP [CODE]"),
    "end": Option(int, -1, "last unit (0-based) the range rule sums; -1: the last", ge=-1, source="§12.3 [CODE]"),
    "rule": Option(str, "range", "default inference rule", choices=("range", "all", "last"), source="[INF]"),
}
_REFERENCE = {
    "optimizer": ("adamw", "§12.2: AdamW per unit [CODE main.py]"),
    "lr": (0.08, "§12.2: lr 0.08 [CODE main.py]"),
    "weight_decay": (5e-4, "§12.2: 5e-4 for ResNet (main.py; test.py 1e-4) [CODE]"),
    "schedule": ("cosine", "§12.2: cosine per epoch, T_max = epochs, to 0.008 [CODE]; ffbench's ends at 0"),
    "batch_size": (128, "§12.2: batch 128 [CODE]"),
    "epochs": (150, "§12.2: test.py rebuilds with 150 epochs [CODE; INF]"),
    "val_size": (
        ByDataset({"mnist": 10000, "fashion-mnist": 10000, "cifar10": 5000}),
        "§12.2: 50k/10k, 45k/5k [CODE]",
    ),
    "resize": (ByDataset({"mnist": 32, "fashion-mnist": 32, "cifar10": None}), "§12.1: 32x32 [CODE]"),
    "backbone.dropout": (0.2, "§12.2: dropout 0.2 [CODE main.py]"),
}


@method_card(
    name="deeperforward",
    family="deeperforward",
    summary="DeeperForward: per-unit CE on the class-group means of a CW-Conv layer's activity, GroupNorm_K "
    "hand-off, detached residual skips (resnet.df) or plain stacks (tinycnn.df); sum of units start..end",
    paper="Sun et al., 'DeeperForward: Enhanced Forward-Forward Training for Deeper and Better Performance', "
    "ICLR 2025, OpenReview kOYnXVQCtA (docs/methods/notes/deeperforward.md §12)",
    code="tobysunsun/deeperforward, read in the unlicensed copy BasitHussain5/project_1 @b31a58b (facts only)",
    defaults={"optimizer": "adamw", "lr": 0.08, "weight_decay": 5e-4, "batch_size": 128, "schedule": "cosine"},
    options=_OPTIONS,
    rules=("range", "all", "last"),
    rule_option="rule",
    recipes={"reference": _REFERENCE},
    capabilities=frozenset({"conv", "unit-scores", "step-and-free", "backbones:resnet.df|tinycnn.df"}),
    tuning_space={"lr": ("log", 1e-3, 1e-1)},
    notes="SIP (the validation-chosen range) is not built: set start/end; the range rule sums units start..end.",
)
class DeeperForward(LocalMethod):
    seed_batching = False  # dropout draws its masks from the global stream, so stacked seeds would draw otherwise
    adapt_modes = ("linear-probe", "last-k-units", "fine-tune")  # the class scores have no parameters

    @classmethod
    def skip(cls, config):
        from ffbench.plan.axes import dataset_classes

        if config.backbone not in BACKBONES:
            return f"deeperforward runs on the {' or '.join(BACKBONES)} backbones only, not {config.backbone}"
        opts, bopts = {**cls.card.defaults, **config.method_options}, config.backbone_options
        n = 4 if config.backbone == "tinycnn.df" else 1 + 4 * len(bopts.get("planes", [0] * 4))
        end = n - 1 if opts["end"] == -1 else opts["end"]
        if not opts["start"] <= end < n:
            return f"deeperforward: start={opts['start']}, end={opts['end']} is no range of the {n} units (0..{n - 1})"
        k = config.classes or dataset_classes(config.dataset)
        bad = [c for c in bopts.get("planes", bopts.get("channels", [])) if k and c % k]
        return f"deeperforward: channels {bad} are not divisible by the class count {k}" if bad else None

    def make_head(self, k, shape):
        return GroupScore(self.num_classes, self.options["goodness"] == "square")

    def unit_outputs(self, k, x):
        if k == 0:
            if self.options["resize"]:
                x = F.interpolate(x, size=self.options["resize"], mode="bilinear", align_corners=False)
            if self.options["input_norm"] == "layernorm":
                x = F.layer_norm(x, x.shape[1:])
        return self.backbone.units[k].forward_pair(x)

    def pass_on(self, k, h):
        y, carried = self.backbone.units[k].split(h)
        if self.options["post_norm"] == "groupnorm":
            y = F.group_norm(y, self.num_classes)
        elif self.options["post_norm"] == "layernorm":
            y = F.layer_norm(y, y.shape[1:])
        return torch.cat([y, carried], 1)

    def unit_loss(self, k, scores, y, h):
        return F.cross_entropy(scores, y)

    def rules(self, scores, features):
        end = self.options["end"] % len(scores)
        return {
            "range": torch.stack(scores[self.options["start"] : end + 1]).sum(0),
            "all": torch.stack(scores).sum(0),
            "last": scores[-1],
        }
