"""Channel-wise competitive forward-forward, ``cwc`` and ``cwc.nocfse`` (Papachristodoulou et al., AAAI 2024),
following docs/methods/notes/cwc.md §3.

Each conv unit (conv -> ReLU -> [max-pool] -> BN, from the ``cnn`` backbones) is a standalone classifier: its
channels split into K class groups, the class goodness G[b, k] is the mean square of group k, and the CwC loss
is CE(G, y) (PvN and CWG as alternatives). No negatives, no label in the input. Each unit has its own
optimizer (Adam 0.01), steps on its own loss and hands a detached output on (step-and-free). ILT trains unit l
only in its epoch window; frozen units run without gradients and, by default, with BatchNorm in eval mode.

``cwc`` needs the ``cnn.cfse`` backbone (odd layers grouped with groups = K: CFSE); ``cwc.nocfse`` is the
FF-CNN ablation on the plain ``cnn`` backbone. Each checks that it got the backbone it names.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffbench.core.heads import GroupedGoodnessHead
from ffbench.core.method import LocalMethod, method_card
from ffbench.core.options import Option
from ffbench.core.registry import ByDataset

# ILT windows [start, end) per conv layer 1-4, from CwComp src/Models.py (docs/methods/notes/cwc.md §3.3)
ILT_TABLES = {
    "mnist": {"acc": [(0, 2), (0, 3), (0, 4), (0, 5)], "fast": [(0, 3), (1, 4), (2, 5), (3, 6)]},
    "fashion-mnist": {"acc": [(0, 10), (0, 15), (0, 19), (0, 23)], "fast": [(0, 7), (1, 10), (2, 13), (3, 16)]},
    "cifar10": {"acc": [(0, 11), (0, 16), (0, 21), (0, 25)], "fast": [(0, 11), (2, 18), (4, 26), (6, 32)]},
    # the class-group model (6 layers): layers 1-2, 3-4, 5-6 in turn; the reference has no Fast schedule here
    "cifar100": {"acc": [(0, 30), (0, 30), (30, 60), (30, 60), (60, 85), (60, 85)]},
}
# the Sf head trains from this epoch on (the start of the table's next, unused entry): 0 for Acc
ILT_HEAD_START = {
    "mnist": {"acc": 0, "fast": 5},
    "fashion-mnist": {"acc": 0, "fast": 5},
    "cifar10": {"acc": 0, "fast": 10},
    "cifar100": {"acc": 85},
}
ILT_FULL = {"cifar100": 100}  # epochs of the full schedule where the Sf head trains after the last window
# CwComp's CIFAR-100 class-group model (docs/methods/notes/cwc.md §3.1, §3.3)
CLASS_GROUP_MODEL = {
    "channels": [60, 120, 240, 400, 800, 1600],
    "pool": [1, 3, 5],
    "class_groups": [20, 20, 20, 20, 100, 100],
}
LOSSES = ("cwc", "pvn", "cwg")


def ilt_windows(ilt: str, table: str, scaling: str, n_units: int, epochs: int) -> tuple[list[tuple[int, int]], int]:
    """Training windows [start, end) per unit, and the epoch the Sf head starts training.

    ``none``: every unit and the head train every epoch. Otherwise the reference table for ``table`` (n layers,
    full schedule of T epochs) is used; for another unit count, unit l takes the windows linearly
    interpolated at position (n-1)l/(L-1) of the table. ``exact`` keeps the table's epochs (cut at the budget, as
    the reference does with its 20-epoch default); ``proportional`` scales every start and end by epochs/T
    and rounds half up, each window at least one epoch long (equal to the table when epochs == T). The head
    start is scaled the same way and always falls inside the budget.
    """
    if ilt == "none":
        return [(0, epochs)] * n_units, 0
    if ilt not in ILT_TABLES[table]:
        raise ValueError(
            f"cwc: the {table} table has no {ilt!r} schedule; allowed: {', '.join(ILT_TABLES[table])}, none"
        )
    ref = ILT_TABLES[table][ilt]
    last = len(ref) - 1
    factor = epochs / ILT_FULL.get(table, max(e for _, e in ref)) if scaling == "proportional" else 1.0
    out = []
    for u in range(n_units):
        p = last * u / (n_units - 1) if n_units > 1 else float(last)
        i = min(int(p), last - 1)
        s, e = (factor * (ref[i][j] + (p - i) * (ref[i + 1][j] - ref[i][j])) for j in (0, 1))
        s = min(math.floor(s + 0.5), epochs - 1)
        e = min(max(math.floor(e + 0.5), s + 1), epochs)
        out.append((s, e))
    return out, min(math.floor(factor * ILT_HEAD_START[table][ilt] + 0.5), epochs - 1)


def pvn_loss(g: torch.Tensor, y: torch.Tensor, theta: float = 2.0) -> torch.Tensor:
    """Positive-vs-negative: mean over the 2B terms softplus(theta - g_pos), softplus(g_neg - theta), where
    g_neg is the mean goodness of the wrong classes."""
    g_pos = g.gather(1, y[:, None]).squeeze(1)
    g_neg = (g.sum(1) - g_pos) / (g.shape[1] - 1)
    return 0.5 * (F.softplus(theta - g_pos).mean() + F.softplus(g_neg - theta).mean())


def cwc_loss(g: torch.Tensor, y: torch.Tensor, kind: str = "cwc") -> torch.Tensor:
    """``cwc``: CE with the class goodness as logits; ``pvn``; ``cwg`` = 0.28 CE + 0.72 PvN."""
    if kind == "cwc":
        return F.cross_entropy(g, y)
    if kind == "pvn":
        return pvn_loss(g, y)
    if kind == "cwg":
        return 0.28 * F.cross_entropy(g, y) + 0.72 * pvn_loss(g, y)
    raise ValueError(f"unknown CwC loss {kind!r}; allowed: {', '.join(LOSSES)}")


_RECIPE = {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "batch_size": 128, "schedule": "constant"}
_OPTIONS = {
    "loss": Option(str, "cwc", "unit loss: CE on class goodness, PvN, or CWG = 0.28 CE + 0.72 PvN", choices=LOSSES),
    "ilt": Option(str, "acc", "interleaved layer training schedule", choices=("acc", "fast", "none")),
    "ilt_table": Option(str, "fashion-mnist", "the reference ILT table", choices=tuple(ILT_TABLES)),
    "ilt_scaling": Option(
        str,
        "proportional",
        "stretch the table to the epoch budget, or keep its epochs",
        choices=("proportional", "exact"),
    ),
    "head_lr": Option(float, 0.01, "SGD learning rate of the Sf head", gt=0),
    "sf_double_softmax": Option(bool, False, "the reference's softmax before CE in the Sf head (a defect)"),
    "frozen_bn": Option(
        str,
        "eval",
        "BatchNorm of frozen units: eval (fixed statistics) or train (reference)",
        choices=("eval", "train"),
    ),
}
_IMAGENET = [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]
_TABLE_OF = ByDataset({d: d for d in ILT_TABLES})
_FOUR_LAYERS = [d for d in ILT_TABLES if d != "cifar100"]  # the reference's default model on these
# the reference code (CwComp @254960a), per dataset where it differs: docs/methods/notes/cwc.md §3.1-§3.6
_REFERENCE = {
    "optimizer": ("adam", "§3.3: own Adam per layer [CODE Layer_cnn.py]"),
    "lr": (0.01, "§3.3: Adam lr 0.01 [CODE Layer_cnn.py]"),
    "weight_decay": (0.0, "§3.3: no weight decay [CODE]"),
    "batch_size": (128, "§3.3: batch 128 [CODE configure.py]"),
    "schedule": ("constant", "§3.3: no learning-rate schedule [CODE]"),
    "ilt": ("acc", "§3.3: ILT Acc is the default [CODE Models.py]"),
    "ilt_table": (_TABLE_OF, "§3.3: the run's dataset's table [CODE Models.py]"),
    "ilt_scaling": ("exact", "§3.3: the table's epochs, cut at the budget [CODE Models.py]"),
    "head_lr": (0.01, "§3.3: Sf head SGD lr 0.01 [CODE Layer_fc.py]"),
    "sf_double_softmax": (True, "§3.6.2: softmax before CrossEntropyLoss in Softmax_CF [CODE Layer_fc.py]"),
    "frozen_bn": ("train", "§3.6.6: ff_infer runs BN in train mode in frozen epochs [CODE Layer_cnn.py]"),
    "dataset.normalize": (
        ByDataset(
            {
                "mnist": [[0.1307], [0.3081]],
                "fashion-mnist": [[0.5], [0.5]],
                "cifar10": _IMAGENET,
                "cifar100": _IMAGENET,
            }
        ),
        "§3.3: Datasets.py per dataset; CIFAR-100 gets ImageNet's as shipped [CODE Datasets.py]",
    ),
    "backbone.channels": (
        ByDataset({**{d: [20, 80, 240, 480] for d in _FOUR_LAYERS}, "cifar100": CLASS_GROUP_MODEL["channels"]}),
        "§3.1: the four-layer CFSE CNN; CIFAR-100 forced to 6 layers [CODE configure.py]",
    ),
    "backbone.pool": (
        ByDataset({**{d: [1, 3] for d in _FOUR_LAYERS}, "cifar100": CLASS_GROUP_MODEL["pool"]}),
        "§3.1: max-pool on odd layers [CODE]",
    ),
    "backbone.class_groups": (
        ByDataset({**{d: None for d in _FOUR_LAYERS}, "cifar100": CLASS_GROUP_MODEL["class_groups"]}),
        "§3.3: 20 groups (target y // 5) on layers 1-4, 100 on 5-6 [CODE Models.py]",
    ),
}
_REFERENCE_NOCFSE = {k: v for k, v in _REFERENCE.items() if not k.startswith("backbone.")}
_REFERENCE_NOCFSE["ilt_table"] = (
    ByDataset({d: d for d in ILT_TABLES if d != "cifar100"}),
    "§3.3: the run's dataset's table; CIFAR-100's is the class-group model's",
)

_NOTES = (
    "ILT windows: ilt_table picks the reference table (mnist, fashion-mnist, cifar10; 4 layers), "
    "ilt_scaling=proportional scales it to the epoch budget (exact when epochs equals the table's length), "
    "exact keeps the table's epochs; other unit counts interpolate the table. The Sf head (linear on the "
    "flattened last unit, SGD head_lr, no momentum) trains from the table's head start (Acc 0; Fast 5, or 10 for "
    "cifar10), scaled likewise. Reference "
    "defects as switches, correct by default: sf_double_softmax=false, frozen_bn=eval. Predictors: avg "
    "(last unit's class goodness, default) and sf."
)


@method_card(
    name="cwc",
    family="cwc",
    summary="CwC-FF with CFSE (needs backbone cnn.cfse): channel-wise class goodness per conv layer, CwC loss, "
    "one Adam per layer with stop-gradient, ILT windows; Avg and Sf predictors",
    paper="Papachristodoulou et al., AAAI 2024, arXiv 2312.12668 (docs/methods/notes/cwc.md §3)",
    code="andreaspapac/CwComp @254960a src/Layer_cnn.py, src/Models.py",
    defaults=_RECIPE,
    options=_OPTIONS,
    rules=("avg", "sf"),
    recipes={"reference": _REFERENCE},
    capabilities=frozenset({"conv", "cfse", "unit-scores", "backbones:cnn.cfse"}),
    tuning_space={"lr": ("log", 1e-3, 3e-2)},
    notes="Backbone: cnn.cfse. " + _NOTES,
)
class CwC(LocalMethod):
    cfse = True
    backbone_name = "cnn.cfse"
    adapt_modes = ("linear-probe", "last-k-units", "fine-tune")  # grouped goodness: no head has parameters
    probe_rule = "sf"

    @classmethod
    def skip(cls, config):
        from ffbench.plan.axes import dataset_classes

        if config.backbone != cls.backbone_name:
            return f"{cls.card.name} runs on the {cls.backbone_name} backbone only"
        k = config.classes or dataset_classes(config.dataset)
        channels = config.backbone_options.get("channels", [])
        given = config.backbone_options.get("class_groups")
        groups = given or [k] * len(channels)
        bad = [c for c, g in zip(channels, groups) if g and c % g]
        if bad:
            what = f"class groups {groups}" if given else f"class count {k}"
            return f"{cls.card.name}: channels {bad} are not divisible by the {what}"
        if k and any(k % g for g in groups if g):
            return f"{cls.card.name}: class_groups {groups} must divide the class count {k}"
        return None

    def __init__(self, backbone, num_classes, options, ctx):
        self.frozen_bn = options["frozen_bn"]
        self.class_groups = getattr(backbone, "class_groups", None) or [num_classes] * len(backbone.units)
        super().__init__(backbone, num_classes, options, ctx)
        self.windows, self.head_start = ilt_windows(
            options["ilt"], options["ilt_table"], options["ilt_scaling"], len(backbone.units), ctx.epochs
        )
        self.head = nn.Linear(math.prod(backbone.out_shapes[-1]), num_classes)
        self.readout_opt = ctx.make_optimizer(
            self.head.parameters(), optimizer="sgd", lr=options["head_lr"], momentum=0.0, weight_decay=0.0
        )
        self.start_epoch(0)

    def adapt(self, mode, k):
        if mode == "linear-probe":  # the Sf head is the probe: it trains from the first epoch
            self.head_start = 0
        super().adapt(mode, k)

    def make_head(self, k, shape):
        return GroupedGoodnessHead(self.num_classes, self.class_groups[k])

    def unit_loss(self, k, scores, y, h):
        return cwc_loss(*self.heads[k].group_view(scores, y), self.options["loss"])

    def start_epoch(self, epoch):
        super().start_epoch(epoch)
        self.head_active = epoch >= self.head_start

    def units_to_run(self):
        return len(self.active) if self.head_active else super().units_to_run()  # the Sf head reads the last

    def readouts(self, features):
        if not self.head_active:
            return {}
        logits = self.head(features[-1].flatten(1))
        if self.options["sf_double_softmax"]:  # the reference's defect (§3.6.2), kept as a switch
            logits = logits.softmax(1)
        return {"head": logits}

    def rules(self, scores, features):
        return {"avg": scores[-1], "sf": self.head(features[-1].flatten(1))}


@method_card(
    name="cwc.nocfse",
    family="cwc",
    summary="CwC-FF without CFSE, the FF-CNN ablation (needs backbone cnn: ordinary convolutions only)",
    paper="Papachristodoulou et al., AAAI 2024, arXiv 2312.12668 (docs/methods/notes/cwc.md §3.1, --CFSE False)",
    code="andreaspapac/CwComp @254960a src/Models.py",
    defaults=_RECIPE,
    options=_OPTIONS,
    rules=("avg", "sf"),
    recipes={"reference": _REFERENCE_NOCFSE},
    capabilities=frozenset({"conv", "unit-scores", "backbones:cnn"}),
    tuning_space={"lr": ("log", 1e-3, 3e-2)},
    notes="Backbone: cnn. " + _NOTES,
)
class CwCNoCFSE(CwC):
    cfse = False
    backbone_name = "cnn"
