"""Ablation axes: typed factors that a suite crosses with methods, datasets and backbones.

An axis is a plugin in the ``AXES`` registry (entry point group ``ffbench.axes``), like methods and
backbones. It declares

* a name and a level type (``int``, ``str``, ...), and the allowed levels (or a range check);
* what it changes: a training field of the run (``classes``, ``train_subset``), a method option
  (``kernel``, ``goodness``, ...) or a backbone option (``granularity``, ``bn``); for options, several
  candidate names may be given and the first one a card has is used (``inference`` is ``rule`` on sff,
  ``predict`` on asge, ``vote`` on ff.hinton);
* which methods and backbones it applies to: fnmatch patterns, and for options only the cards that have
  the option. Where an axis does not apply, the cell keeps the card's value and the axis level is recorded
  as ``None`` (the combinations collapse into one cell; the dry run says so);
* which levels are incompatible with a method, dataset or backbone (a level the card does not allow, or a
  rule of the axis's own, e.g. "on cnn a stage is a block"): such combinations are dropped, with the reason.

Suites use registered axes by name, or declare generic ones on the spot (``method_option = "loss"``,
``backbone_option = "widths"``, ``train_field = "epochs"``); see ``suite.py`` for the syntax.
No torch here: everything is decided from the cards before anything trains.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ffbench.core.config import ADAPT_MODES, TRAIN_FIELDS
from ffbench.core.options import Option, odd
from ffbench.core.registry import AXES, BACKBONES, DATASETS, METHODS, Card

TARGETS = ("train", "method", "backbone")

# Class counts of the built-in datasets, for the class-count axis (a dataset card may declare its own
# ``num_classes`` in its defaults; unknown datasets are checked when the data are loaded).
KNOWN_CLASSES = {"mnist": 10, "fashion-mnist": 10, "cifar10": 10, "cifar100": 100, "digits": 10, "synthetic": 10}


@dataclass(frozen=True)
class Axis:
    name: str
    summary: str
    target: str  # train | method | backbone
    keys: tuple[str, ...]  # the field (train) or candidate option names (method / backbone)
    level: Option = Option(str)  # the level's type and allowed values or range
    methods: tuple[str, ...] = ("*",)  # fnmatch patterns of the methods it applies to
    backbones: tuple[str, ...] = ("*",)
    to_value: Callable[[Any], Any] | None = None  # level -> configuration value (e.g. "full" -> None)
    # (level, method, dataset, backbone, resolved RunConfig) -> reason it cannot run, or None
    rule: Callable[[Any, str, str, str, Any], str | None] | None = None
    notes: str = ""
    generic: bool = False  # declared in a suite file, not registered

    # ------------------------------------------------------------ what it applies to
    def option_of(self, method: str, backbone: str) -> str | None:
        """The option / field this axis sets for (method, backbone), or None where it does not apply."""
        if not any(fnmatch.fnmatchcase(method, p) for p in self.methods):
            return None
        if not any(fnmatch.fnmatchcase(backbone, p) for p in self.backbones):
            return None
        if self.target == "train":
            return self.keys[0]
        card = METHODS.get(method).card if self.target == "method" else BACKBONES.get(backbone).card
        return next((k for k in self.keys if k in card.options), None)

    def not_applicable(self, method: str, backbone: str) -> str | None:
        """Why the axis leaves (method, backbone) alone, or None if it applies."""
        if self.option_of(method, backbone) is not None:
            return None
        if not any(fnmatch.fnmatchcase(method, p) for p in self.methods):
            return f"axis {self.name} applies to methods {', '.join(self.methods)} only"
        if not any(fnmatch.fnmatchcase(backbone, p) for p in self.backbones):
            return f"axis {self.name} applies to backbones {', '.join(self.backbones)} only"
        owner = method if self.target == "method" else backbone
        return f"{owner}'s card has no option {' / '.join(self.keys)} (axis {self.name} does not apply)"

    def allowed_by(self, method: str, backbone: str) -> Option | None:
        """The Option (training field or card option) this axis sets on (method, backbone)."""
        key = self.option_of(method, backbone)
        if key is None:
            return None
        if self.target == "train":
            return TRAIN_FIELDS[key]
        card = METHODS.get(method).card if self.target == "method" else BACKBONES.get(backbone).card
        return card.options[key]

    # ------------------------------------------------------------ levels
    def level_problem(self, level: Any) -> str | None:
        """Why ``level`` is not a valid level of this axis at all (independent of methods), or None."""
        return self.level.problem(level)

    def value(self, level: Any) -> Any:
        return self.to_value(level) if self.to_value else level

    def overrides(self, level: Any, method: str, backbone: str) -> dict[str, Any]:
        """How ``level`` changes the run's configuration (keys as ``design.resolve`` takes them)."""
        key = self.option_of(method, backbone)
        if key is None:
            return {}
        return {f"backbone.{key}" if self.target == "backbone" else key: self.value(level)}

    def incompatible(self, level: Any, method: str, dataset: str, backbone: str, config: Any = None) -> str | None:
        """Why (level, method, dataset, backbone) cannot run, or None. ``config``: the resolved RunConfig."""
        key = self.option_of(method, backbone)
        if key is None:
            return None
        allowed = self.allowed_by(method, backbone)
        value = self.value(level)
        owner = method if self.target == "method" else backbone
        if self.target != "train":
            if allowed.choices is not None and value not in allowed.choices:
                return f"{owner} does not offer {key}={value!r} (allowed: {', '.join(map(str, allowed.choices))})"
            why = allowed.problem(value)
            if why:
                return f"{owner} option {key}: {why}"
        if self.rule is not None:
            return self.rule(level, method, dataset, backbone, config)
        return None

    def card(self) -> Card:
        where = {"train": "training field", "method": "method option", "backbone": "backbone option"}[self.target]
        applies = []
        if self.methods != ("*",):
            applies.append(f"methods {', '.join(self.methods)}")
        if self.backbones != ("*",):
            applies.append(f"backbones {', '.join(self.backbones)}")
        if self.target == "train":
            notes = (
                f"sets the training field {self.keys[0]}; applies to {'; '.join(applies) or 'every run'}. {self.notes}"
            )
        else:
            first = " (the first one the card has)" if len(self.keys) > 1 else ""
            notes = (
                f"sets the {where} {' / '.join(self.keys)}{first}; applies to "
                f"{'; '.join(applies) + ', ' if applies else ''}every {self.target} whose card has it, "
                f"levels checked against the card. {self.notes}"
            )
        return Card(
            name=self.name,
            summary=self.summary,
            family=f"axis:{self.target}",
            options={"levels": self.level},
            notes=notes.strip(),
        )


def register(axis: Axis) -> Axis:
    AXES.add(axis.card(), axis)
    return axis


def get(name: str) -> Axis:
    return AXES.get(name).obj


def generic(name: str, target: str, key: str) -> Axis:
    """An axis declared in a suite file: ``method_option``, ``backbone_option`` or ``train_field``."""
    if target == "train":
        return Axis(
            name=name,
            summary=f"training field {key}",
            target="train",
            keys=(key,),
            level=TRAIN_FIELDS[key],
            generic=True,
        )
    return Axis(
        name=name,
        summary=f"{target} option {key}",
        target=target,
        keys=(key,),
        level=Option((str, int, float, bool, list)),
        generic=True,
    )


# ---------------------------------------------------------------- the built-in axes
def dataset_classes(dataset: str) -> int | None:
    card = DATASETS.get(dataset).card
    return card.defaults.get("num_classes") or KNOWN_CLASSES.get(dataset)


def _stage_is_block(level, method, dataset, backbone, config) -> str | None:
    if level == "stage" and BACKBONES.get(backbone).card.family == "cnn":
        return (
            f"on {backbone} a stage is a block (both end at each pooling layer): the same partition as "
            f"granularity=block"
        )
    return None


def _class_rule(level, method, dataset, backbone, config) -> str | None:
    k = dataset_classes(dataset)
    if k is not None and level > k:
        return f"{dataset} has {k} classes; classes={level} is more than that"
    if "cfse" in BACKBONES.get(backbone).card.capabilities and config is not None:
        channels = list(config.backbone_options.get("channels") or [])
        for i in range(1, len(channels), 2):  # CFSE: odd layers are grouped convolutions, groups = classes
            if channels[i - 1] % level or channels[i] % level:
                return (
                    f"{backbone}: layer {i + 1} is grouped by the class count, and {level} does not divide its "
                    f"channels {channels[i - 1]} -> {channels[i]}"
                )
    return None


register(
    Axis(
        name="granularity",
        target="backbone",
        keys=("granularity",),
        level=Option(str, choices=("layer", "block", "stage")),
        summary="Block granularity: what a unit is (a layer, a block, or a stage of one resolution)",
        rule=_stage_is_block,
        notes="Backbones offer different levels (mlp: layer; cnn: layer, block, stage; resnet18 / mobilenetv3: "
        "block, stage); other levels are dropped as incompatible. On the simple CNNs stage equals block, so "
        "stage is dropped there.",
    )
)

register(
    Axis(
        name="head_kernel",
        target="method",
        keys=("kernel",),
        level=Option(int, ge=1, check=odd, check_doc="an odd integer >= 1"),
        summary="Kernel size of the auxiliary (goodness / classifier) head convolution",
        notes="sff: the aux conv; bp / bp.deepsup: the goodness head (with head='goodness').",
    )
)

register(
    Axis(
        name="bn",
        target="backbone",
        keys=("bn",),
        level=Option(str, choices=("inside", "outside", "none")),
        summary="BatchNorm placement: inside the unit, outside it (normalising the unit's detached input), or none",
        notes="The torchvision backbones offer only 'inside'; other levels are dropped for them.",
    )
)

register(
    Axis(
        name="classes",
        target="train",
        keys=("classes",),
        level=Option(int, ge=2, check_doc="an integer >= 2 (at most the dataset's class count)"),
        rule=_class_rule,
        summary="Class count: keep K classes, the subset drawn per seed from the run's `classes` stream",
        notes="The kept classes change with the seed (common random numbers across methods); with K equal to "
        "the dataset's count every class is kept.",
    )
)


def _full_to_none(level):
    return None if level == "full" else level


register(
    Axis(
        name="train_size",
        target="train",
        keys=("train_subset",),
        level=Option(
            (int, str),
            check=lambda v: v == "full" if isinstance(v, str) else v > 0,
            check_doc='a positive integer, or "full" for the whole training split',
        ),
        to_value=_full_to_none,
        summary="Training-set size: a class-balanced subset of the training split (after the validation split)",
        notes="The subset is drawn from the run's `subset` stream; a size larger than the training split is an "
        "error naming the level before anything trains.",
    )
)


def _scratch_to_none(level):
    return None if level == "scratch" else level


register(
    Axis(
        name="adapt",
        target="train",
        keys=("adapt",),
        level=Option(str, choices=("scratch",) + ADAPT_MODES),
        to_value=_scratch_to_none,
        summary="Transfer: train from scratch, or adapt from the suite's [transfer] source (linear-probe, "
        "local-heads-only, last-k-units, fine-tune)",
        notes="A mode a method does not offer drops that cell with the reason (local-heads-only needs heads with "
        "parameters: sff). Scratch runs are the baseline of the transfer report's gain over scratch, paired by "
        "seed; the source is pretrained once per (method, backbone, source task, seed) and shared by every cell.",
    )
)

register(
    Axis(
        name="goodness",
        target="method",
        keys=("goodness",),
        summary="Goodness function of FF-style methods (e.g. sum or mean of squares)",
        notes="Levels are validated against each method card's allowed values.",
    )
)

register(
    Axis(
        name="negatives",
        target="method",
        keys=("negatives", "negative"),
        summary="Negative-data strategy of methods that use negatives (uniform wrong label, permutation, hard)",
    )
)

register(
    Axis(
        name="inference",
        target="method",
        keys=("rule", "predict", "vote", "inference"),
        summary="Inference rule (sff: rule; asge: predict; ff.hinton: vote)",
        notes="Every rule is logged anyway; this axis changes which one is the reported default.",
    )
)

register(
    Axis(
        name="ln",
        target="method",
        keys=("ln", "norm"),
        summary="Normalisation between units (sff: ln sample / channel; ff.hinton: norm rms / l2)",
    )
)

register(
    Axis(
        name="ln_placement",
        target="method",
        keys=("head_input", "ln_placement"),
        summary="LN placement relative to the head: the head reads the raw unit output or the normalised one",
    )
)


@dataclass
class AxisUse:
    """An axis as a suite uses it: the axis and the declared levels, in order."""

    axis: Axis
    levels: list[Any] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.axis.name
