"""The resolved configuration of one run, and the schema of its training fields.

No torch here: suites are parsed and validated before anything heavy is imported.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ffbench.options import Option

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "cooldown", "cooldown-loewex")


# Training fields a suite may set in [train], per method ([methods."name"]) or per axis level.
TRAIN_FIELDS: dict[str, Option] = {
    "epochs": Option(int, 10, "training epochs", ge=1, le=100_000),
    "batch_size": Option(int, 64, "training mini-batch size", ge=1),
    "eval_batch_size": Option(int, 1000, "evaluation batch size", ge=1),
    "optimizer": Option(str, "adam", "optimizer for every trainable part", choices=OPTIMIZERS),
    "lr": Option(float, 1e-3, "learning rate", gt=0),
    "weight_decay": Option(float, 0.0, "weight decay", ge=0),
    "momentum": Option(float, 0.9, "SGD momentum (ignored by Adam)", ge=0, lt=1),
    "schedule": Option(str, "constant", "learning-rate schedule over epochs: constant, cosine to 0, or "
                       "cooldown (constant, then linear decay over the second half; cooldown-loewex: loeweX's formula, "
                       "lr * 2 (1 + E - e) / E for 0-based epochs e > E // 2)", choices=SCHEDULES),
    "val_size": Option((int, float), 0.1, "validation split carved from the training set: a fraction (<1) "
                       "or a count", gt=0, check=lambda v: isinstance(v, int) or v < 1,
                       check_doc="a fraction in (0, 1) or a positive count"),
    "train_subset": Option((int, type(None)), None, "class-balanced training subset size (after the split)",
                           ge=1, check_doc="a positive integer"),
    "classes": Option((int, type(None)), None, "keep this many classes (drawn per seed)", ge=2,
                      check_doc="an integer >= 2"),
    "crop_padding": Option(int, 0, "random-crop augmentation padding in pixels (0: off)", ge=0),
    "flip": Option(bool, False, "random horizontal flips"),
}


@dataclass(frozen=True)
class RunConfig:
    method: str
    dataset: str
    backbone: str
    seed: int = 0
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 1000
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "constant"
    val_size: float | int = 0.1
    train_subset: int | None = None
    classes: int | None = None
    crop_padding: int = 0
    flip: bool = False
    method_options: dict[str, Any] = field(default_factory=dict)
    backbone_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        return cls(**d)

    def without_seed(self) -> dict[str, Any]:
        d = self.to_dict()
        d.pop("seed")
        return d


# What a dataset card's ``defaults`` may state about its size, so a suite is checked without loading data.
DATASET_SIZES = ("num_classes", "n_train", "n_test")


class SplitError(ValueError):
    """A split a dataset cannot give; ``field`` is the training field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def split_sizes(val_size: float | int, train_subset: int | None, classes: int | None, *, n_train: int,
                num_classes: int, dataset: str = "the dataset") -> tuple[int, int]:
    """(validation count, training count) of a run's split of ``n_train`` training images in ``num_classes``
    classes; ``SplitError`` naming the field and what is allowed when the split is impossible.

    The one rule for the planner (with a dataset card's sizes) and ``data.prepare`` (with the loaded data):
    classes at most the dataset's; val_size a fraction of the training images giving at least one, or a
    count below their number; train_subset at most what the validation split leaves. With ``classes``,
    ``n_train`` counts the kept classes' images (the planner assumes balanced classes; the loaded data is exact).
    """
    if classes is not None and not 2 <= classes <= num_classes:
        raise SplitError("classes", f"classes = {classes}: {dataset} has {num_classes} classes; allowed: "
                                    f"2..{num_classes}")
    n_val = int(round(val_size * n_train)) if isinstance(val_size, float) else int(val_size)
    if not 0 < n_val < n_train:
        raise SplitError("val_size", f"val_size = {val_size!r} gives {n_val} validation images of the {n_train} "
                                     f"training images of {dataset}; allowed: a fraction in (0, 1) giving at least "
                                     f"one image, or a count in 1..{n_train - 1}")
    left = n_train - n_val
    if train_subset is not None and train_subset > left:
        raise SplitError("train_subset", f"train_subset = {train_subset} exceeds the {left} training images of "
                                         f"{dataset} left after the validation split ({n_val}); allowed: 1..{left}")
    return n_val, left


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_hash(*parts: Any, length: int = 12) -> str:
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()[:length]
