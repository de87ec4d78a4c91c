"""Backpropagation baselines: ``bp`` (one head at the end) and ``bp.deepsup`` (a head on every unit,
losses summed, gradients end to end), following docs/methods/notes/bp.md §1.

Heads: ``linear`` (GAP, or with ``pool = "flatten"`` flatten, then a linear layer), ``goodness`` (SFF's aux
conv), or ``match:<method>``: the heads of a local method (cwc, asge, sff, monoforward), borrowed from an
instance of that method built on the same backbone, with its unit outputs, unit losses, hand-off (in the graph:
gradients cross it) and, for ``bp.deepsup``, its read-outs (CwC's flatten -> linear Sf head, ASGE's linear read-out)
trained on the detached features as the method trains them. This is the architecture-matched baseline: the
same forward pass and heads as the local method, trained end to end.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffbench.core.heads import HEADS, POOLS, make_head
from ffbench.core.method import LocalMethod, Method, method_card
from ffbench.core.options import Option, odd
from ffbench.core.registry import ByDataset

MATCHED = ("cwc", "asge", "sff", "monoforward", "deeperforward")
_TUNING = {"lr": ("log", 1e-4, 1e-2), "weight_decay": ("log", 1e-6, 1e-3)}
_OPTIONS = {
    "head": Option(
        str,
        "linear",
        "linear (GAP or flatten + linear), goodness (SFF's aux conv), or the heads, "
        "hand-off and read-outs of a local method (match:cwc, match:asge, match:sff, match:monoforward, match:deeperforward)",
        choices=HEADS + tuple(f"match:{m}" for m in MATCHED),
    ),
    "kernel": Option(
        int,
        1,
        "kernel of the goodness head's conv (and of match:sff's)",
        ge=1,
        check=odd,
        check_doc="an odd integer >= 1",
    ),
    "pool": Option(
        (str, type(None)),
        None,
        "linear head on conv maps: avg (global average pooling, when unset) or flatten (CwComp's BP baseline)",
        choices=POOLS,
    ),
}
# CwComp src/Backprop.py (docs/methods/notes/bp.md §1.2): the CNN baseline as shipped
_REFERENCE = {
    "optimizer": ("adam", "§1.2 CwComp Backprop.py: Adam"),
    "lr": (1e-3, "§1.2 CwComp Backprop.py: lr 1e-3"),
    "batch_size": (128, "§1.2 CwComp Backprop.py: batch 128"),
    "schedule": ("constant", "§1.2 CwComp Backprop.py: no schedule"),
    "pool": ("flatten", "§1.2 CwComp Backprop.py: flatten -> linear"),
    "dataset.normalize": (
        ByDataset(
            {
                "mnist": [[0.5], [0.5]],
                "fashion-mnist": [[0.5], [0.5]],
                "cifar10": [[0.5] * 3, [0.5] * 3],
                "cifar100": [[0.5] * 3, [0.5] * 3],
            }
        ),
        "§1.2 CwComp Backprop.py: Normalize(0.5, 0.5), no augmentation",
    ),
}


def _matched_name(head: str, backbone: nn.Module) -> str | None:
    if not head.startswith("match:"):
        return None
    name = head.split(":", 1)[1]
    if name == "cwc":  # CwC with CFSE on a class-grouped CNN, the FF-CNN ablation on a plain one
        grouped = any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in backbone.modules())
        return "cwc" if grouped else "cwc.nocfse"
    return name


def matched_method(head: str, backbone, num_classes: int, kernel: int, ctx) -> Method | None:
    """The local method whose heads ``head`` borrows, built on ``backbone`` with its default options (every
    unit trained every epoch); None for the plain heads."""
    from ffbench.core.registry import METHODS

    name = _matched_name(head, backbone)
    if name is None:
        return None
    card = METHODS.get(name).card
    options = {k: v for k, v in card.defaults.items() if k in card.options}
    if name.startswith("cwc"):
        options["ilt"] = "none"  # BP trains every unit every epoch
    if name == "sff":
        options["kernel"] = kernel
    return METHODS.get(name).obj(backbone, num_classes, options, ctx)


def _skip(config) -> str | None:
    from ffbench.core.registry import METHODS

    head = {**BP.card.defaults, **config.method_options}["head"]
    if head == "match:deeperforward":  # its backbones, channels and unit range
        why = METHODS.get("deeperforward").obj.skip(config)
        return f"{config.method} head match:deeperforward: {why}" if why else None
    if head != "match:cwc":
        return None
    if config.backbone not in ("cnn", "cnn.cfse"):
        return f"{config.method} head match:cwc needs CwC's backbone (cnn.cfse, or cnn for the FF-CNN ablation)"
    why = METHODS.get("cwc" if config.backbone == "cnn.cfse" else "cwc.nocfse").obj.skip(config)
    return f"{config.method} head match:cwc: {why}" if why else None


@method_card(
    name="bp",
    family="bp",
    summary="End-to-end backpropagation, cross-entropy on one head after the last unit",
    paper="Rumelhart et al. 1986; baseline setup per docs/methods/notes/bp.md §1",
    code="andreaspapac/CwComp src/Backprop.py (CNN baseline)",
    options=_OPTIONS,
    rules=("head",),
    capabilities=frozenset({"any-backbone"}),
    tuning_space=_TUNING,
    recipes={"reference": _REFERENCE},
)
class BP(LocalMethod):
    """Every unit's loss (a head on the last unit only, unless ``deep``) summed and back-propagated end to
    end; with ``match:<method>`` the heads, unit outputs, losses, hand-offs and read-outs are that method's."""

    update = "end-to-end"
    deep = False  # a head on every unit (bp.deepsup)
    adapt_modes, fixed_in, adapt = Method.adapt_modes, Method.fixed_in, Method.adapt  # every head trains

    @classmethod
    def skip(cls, config):
        return _skip(config)

    def __init__(self, backbone, num_classes, options, ctx):
        local = matched_method(options["head"], backbone, num_classes, options["kernel"], ctx)
        object.__setattr__(self, "_matched", local)  # the heads are built from it before nn.Module can hold it
        super().__init__(backbone, num_classes, options, ctx)
        self.local = self.__dict__.pop("_matched")
        if self.local is not None and self.deep:
            self.readout_opt = getattr(self.local, "readout_opt", None)  # the read-outs keep the method's optimizer
        self.make_joint_optimizer()

    def make_head(self, k, shape):
        if not self.deep and k + 1 < len(self.backbone.units):
            return None
        local = self.__dict__.get("_matched")
        if local is not None:
            return local.heads[k]
        o = self.options
        return make_head(o["head"], shape, self.num_classes, o["kernel"], o["pool"])

    def unit_outputs(self, k, x):
        return self.local.unit_outputs(k, x) if self.local is not None else super().unit_outputs(k, x)

    def pass_on(self, k, h):
        return self.local.pass_on(k, h) if self.local is not None else h

    def unit_loss(self, k, scores, y, h):
        return self.local.unit_loss(k, scores, y, h) if self.local is not None else F.cross_entropy(scores, y)

    def readouts(self, features):
        return self.local.readouts(features) if self.local is not None and self.deep else {}

    def rules(self, scores, features):
        return {"head": scores[-1]}

    def evaluate(self, x):
        rules, units = super().evaluate(x)
        return rules, units if self.deep else []  # one head: no per-unit accuracy, whatever the depth


@method_card(
    name="bp.deepsup",
    family="bp",
    summary="Backpropagation with deep supervision: the local methods' heads on every unit, losses summed, "
    "gradients end to end (the architecture-matched baseline for block-local methods)",
    paper="Lee et al. 2015 (deeply-supervised nets); DTG-FF audit 2026 (BP-DeepSup)",
    options=_OPTIONS,
    rules=("last", "average"),
    capabilities=frozenset({"any-backbone", "unit-heads"}),
    tuning_space=_TUNING,
    recipes={"reference": _REFERENCE},
    notes="With head match:<method> the method's own rules are logged too, as <method>.<rule> (e.g. cwc.sf). Recipe "
    "reference: CwComp's BP baseline's (no deep-supervision code exists; the DTG-FF audit trains it with the "
    'recipe of the method it is compared with, so set that method\'s values in [methods."bp.deepsup"]).',
)
class BPDeepSup(BP):
    probe_rule = "last"
    deep = True

    def rules(self, scores, features):
        rules = {"last": scores[-1], "average": torch.stack([s.softmax(1) for s in scores]).mean(0)}
        if self.local is not None:
            name = self.local.card.name.split(".")[0]
            rules.update({f"{name}.{r}": v for r, v in self.local.rules(scores, features).items()})
        return rules
