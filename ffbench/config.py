"""The resolved configuration of one run, and the schema of its training fields.

No torch here: suites are parsed and validated before anything heavy is imported.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "cooldown")


@dataclass(frozen=True)
class Field:
    kind: type | tuple[type, ...]
    default: Any
    doc: str
    allowed: tuple | None = None
    check: Callable[[Any], bool] | None = None
    check_doc: str = ""


def _pos(v) -> bool:
    return v > 0


def _nonneg(v) -> bool:
    return v >= 0


# Training fields a suite may set in [train], per method ([methods."name"]) or per axis level.
TRAIN_FIELDS: dict[str, Field] = {
    "epochs": Field(int, 10, "training epochs", check=_pos, check_doc="a positive integer"),
    "batch_size": Field(int, 64, "training mini-batch size", check=_pos, check_doc="a positive integer"),
    "eval_batch_size": Field(int, 1000, "evaluation batch size", check=_pos, check_doc="a positive integer"),
    "optimizer": Field(str, "adam", "optimizer for every trainable part", allowed=OPTIMIZERS),
    "lr": Field(float, 1e-3, "learning rate", check=_pos, check_doc="a positive number"),
    "weight_decay": Field(float, 0.0, "weight decay", check=_nonneg, check_doc="a non-negative number"),
    "momentum": Field(float, 0.9, "SGD momentum (ignored by Adam)", check=lambda v: 0 <= v < 1,
                      check_doc="a number in [0, 1)"),
    "schedule": Field(str, "constant", "learning-rate schedule over epochs: constant, cosine to 0, or "
                      "cooldown (constant, then linear decay over the second half)", allowed=SCHEDULES),
    "val_size": Field((int, float), 0.1, "validation split carved from the training set: a fraction (<1) "
                      "or a count", check=_pos, check_doc="a fraction in (0, 1) or a positive count"),
    "train_subset": Field((int, type(None)), None, "class-balanced training subset size (after the split)",
                          check=lambda v: v is None or v > 0, check_doc="a positive integer"),
    "classes": Field((int, type(None)), None, "keep this many classes (drawn per seed)",
                     check=lambda v: v is None or v >= 2, check_doc="an integer >= 2"),
    "crop_padding": Field(int, 0, "random-crop augmentation padding in pixels (0: off)", check=_nonneg,
                          check_doc="a non-negative integer"),
    "flip": Field(bool, False, "random horizontal flips"),
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


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_hash(*parts: Any, length: int = 12) -> str:
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()[:length]


def type_ok(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        return False  # TOML true is not a number
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, kinds)
