"""Channel-wise competitive forward-forward, ``cwc`` and ``cwc.nocfse`` (Papachristodoulou et al., AAAI 2024),
following methods.md §3.

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

from ffbench.method import Method, grouped_goodness, method_card, step

# ILT windows [start, end) per conv layer 1-4, from CwComp src/Models.py (methods.md §3.3)
ILT_TABLES = {
    "mnist": {"acc": [(0, 2), (0, 3), (0, 4), (0, 5)], "fast": [(0, 3), (1, 4), (2, 5), (3, 6)]},
    "fashion-mnist": {"acc": [(0, 10), (0, 15), (0, 19), (0, 23)], "fast": [(0, 7), (1, 10), (2, 13), (3, 16)]},
    "cifar10": {"acc": [(0, 11), (0, 16), (0, 21), (0, 25)], "fast": [(0, 11), (2, 18), (4, 26), (6, 32)]},
}
# the Sf head trains from this epoch on (the start of the table's next, unused entry): 0 for Acc
ILT_HEAD_START = {"mnist": {"acc": 0, "fast": 5}, "fashion-mnist": {"acc": 0, "fast": 5},
                  "cifar10": {"acc": 0, "fast": 10}}
LOSSES = ("cwc", "pvn", "cwg")


def ilt_windows(ilt: str, table: str, scaling: str, n_units: int, epochs: int) -> tuple[list[tuple[int, int]], int]:
    """Training windows [start, end) per unit, and the epoch the Sf head starts training.

    ``none``: every unit and the head train every epoch. Otherwise the reference table for ``table`` (4 layers,
    full schedule of T epochs) is used; for another unit count, unit l takes the windows linearly
    interpolated at position 3l/(L-1) of the table. ``exact`` keeps the table's epochs (cut at the budget, as
    the reference does with its 20-epoch default); ``proportional`` scales every start and end by epochs/T
    and rounds half up, each window at least one epoch long (equal to the table when epochs == T). The head
    start is scaled the same way and always falls inside the budget.
    """
    if ilt == "none":
        return [(0, epochs)] * n_units, 0
    ref = ILT_TABLES[table][ilt]
    factor = epochs / ref[-1][1] if scaling == "proportional" else 1.0
    out = []
    for u in range(n_units):
        p = 3 * u / (n_units - 1) if n_units > 1 else 3.0
        i = min(int(p), 2)
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


_DEFAULTS = {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "batch_size": 128, "schedule": "constant",
             "loss": "cwc", "ilt": "acc", "ilt_table": "fashion-mnist", "ilt_scaling": "proportional",
             "head_lr": 0.01, "sf_double_softmax": False, "frozen_bn": "eval"}
_OPTIONS = {"loss": LOSSES, "ilt": ("acc", "fast", "none"), "ilt_table": tuple(ILT_TABLES),
            "ilt_scaling": ("proportional", "exact"), "head_lr": float, "sf_double_softmax": bool,
            "frozen_bn": ("eval", "train")}
_NOTES = ("ILT windows: ilt_table picks the reference table (mnist, fashion-mnist, cifar10; 4 layers), "
          "ilt_scaling=proportional scales it to the epoch budget (exact when epochs equals the table's length), "
          "exact keeps the table's epochs; other unit counts interpolate the table. The Sf head (linear on the "
          "flattened last unit, SGD head_lr, no momentum) trains from the table's head start (Acc 0; Fast 5, or 10 for "
          "cifar10), scaled likewise. Reference "
          "defects as switches, correct by default: sf_double_softmax=false, frozen_bn=eval. Predictors: avg "
          "(last unit's class goodness, default) and sf.")


@method_card(
    name="cwc", family="cwc",
    summary="CwC-FF with CFSE (needs backbone cnn.cfse): channel-wise class goodness per conv layer, CwC loss, "
            "one Adam per layer with stop-gradient, ILT windows; Avg and Sf predictors",
    paper="Papachristodoulou et al., AAAI 2024, arXiv 2312.12668 (methods.md §3)",
    code="andreaspapac/CwComp @254960a src/Layer_cnn.py, src/Models.py",
    defaults=dict(_DEFAULTS), options=dict(_OPTIONS),
    capabilities=frozenset({"conv", "cfse", "unit-scores", "backbones:cnn.cfse"}),
    tuning_space={"lr": ("log", 1e-3, 3e-2)}, notes="Backbone: cnn.cfse. " + _NOTES)
class CwC(Method):
    cfse = True
    backbone_name = "cnn.cfse"

    @classmethod
    def incompatible(cls, config) -> str | None:
        """Why a suite cell cannot run (the design drops it with this reason), or None."""
        from ffbench.axes import dataset_classes

        name = "cwc" if cls.cfse else "cwc.nocfse"
        if config.backbone != cls.backbone_name:
            return f"{name} runs on the {cls.backbone_name} backbone only"
        k = config.classes or dataset_classes(config.dataset)
        bad = [c for c in config.backbone_options.get("channels", []) if k and c % k]
        return f"{name}: channels {bad} are not divisible by the class count {k}" if bad else None

    def __init__(self, backbone, num_classes, options, ctx):
        super().__init__(backbone, num_classes, options, ctx)
        name, k = self.card.name, num_classes
        convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
        if not backbone.is_conv or not convs or len(backbone.out_shapes[0]) != 3:
            raise ValueError(f"{name} trains conv layers; allowed backbones: cnn.cfse (cwc), cnn (cwc.nocfse)")
        want = [k if (self.cfse and i % 2) else 1 for i in range(len(convs))]
        if [c.groups for c in convs] != want:
            raise ValueError(
                f"{name} needs the {'cnn.cfse' if self.cfse else 'cnn'} backbone (conv groups {want}); got groups "
                f"{[c.groups for c in convs]}. Use cwc with cnn.cfse (CFSE) and cwc.nocfse with cnn (FF-CNN)")
        for u, shape in enumerate(backbone.out_shapes):
            if shape[0] % k:
                raise ValueError(f"{name}: unit {u + 1} has {shape[0]} channels, not divisible by the class count "
                                 f"{k}; choose channels that are multiples of {k}")
        n = len(backbone.units)
        self.windows, self.head_start = ilt_windows(options["ilt"], options["ilt_table"], options["ilt_scaling"],
                                                    n, ctx.epochs)
        self.opts = [ctx.make_optimizer(u.parameters()) for u in backbone.units]
        self.head = nn.Linear(math.prod(backbone.out_shapes[-1]), k)
        self.head_opt = ctx.make_optimizer(self.head.parameters(), optimizer="sgd", lr=options["head_lr"],
                                           momentum=0.0, weight_decay=0.0)
        self.start_epoch(0)

    def start_epoch(self, epoch):
        self.active = [s <= epoch < e for s, e in self.windows]
        self.head_active = epoch >= self.head_start
        self.train(self.training)

    def train(self, mode=True):
        """Frozen units keep BatchNorm in eval mode (running statistics fixed) unless frozen_bn='train'."""
        super().train(mode)
        if mode and self.options["frozen_bn"] == "eval" and hasattr(self, "active"):
            for unit, on in zip(self.backbone.units, self.active):
                if not on:
                    unit.eval()
        return self

    def train_step(self, x, y):
        stats, total = {}, torch.zeros((), device=x.device)
        active = [i for i, a in enumerate(self.active) if a]
        last = len(self.active) - 1 if self.head_active else max(active, default=-1)  # units this step needs
        h = x
        for i, unit in enumerate(self.backbone.units[:last + 1]):
            if self.active[i]:
                out = unit(h)
                loss = cwc_loss(grouped_goodness(out, self.num_classes), y, self.options["loss"])
                step(self.opts[i], loss)  # this unit's graph is freed before the next unit's forward
                stats[f"loss.unit{i + 1}"] = loss.detach()
                total = total + stats[f"loss.unit{i + 1}"]
                h = out.detach()
            else:
                with torch.no_grad():
                    h = unit(h)
        if self.head_active:
            logits = self.head(h.flatten(1))
            if self.options["sf_double_softmax"]:  # the reference's defect (§3.6.2), kept as a switch
                logits = logits.softmax(1)
            loss = F.cross_entropy(logits, y)
            step(self.head_opt, loss)
            stats["loss.head"] = loss.detach()
            total = total + stats["loss.head"]
        stats["loss"] = total
        return stats

    @torch.no_grad()
    def evaluate(self, x):
        scores, h = [], x
        for unit in self.backbone.units:
            h = unit(h)
            scores.append(grouped_goodness(h, self.num_classes))
        return {"avg": scores[-1], "sf": self.head(h.flatten(1))}, scores

    def predict(self, x):
        return self.evaluate(x)[0]

    def unit_scores(self, x):
        return self.evaluate(x)[1]


@method_card(
    name="cwc.nocfse", family="cwc",
    summary="CwC-FF without CFSE, the FF-CNN ablation (needs backbone cnn: ordinary convolutions only)",
    paper="Papachristodoulou et al., AAAI 2024, arXiv 2312.12668 (methods.md §3.1, --CFSE False)",
    code="andreaspapac/CwComp @254960a src/Models.py",
    defaults=dict(_DEFAULTS), options=dict(_OPTIONS), capabilities=frozenset({"conv", "unit-scores", "backbones:cnn"}),
    tuning_space={"lr": ("log", 1e-3, 3e-2)}, notes="Backbone: cnn. " + _NOTES)
class CwCNoCFSE(CwC):
    cfse = False
    backbone_name = "cnn"
