"""The resolved configuration of one run, and the schema of its training fields.

No torch here: suites are parsed and validated before anything heavy is imported.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ffbench.core.options import Option

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "cooldown", "cooldown-loewex")
ADAPT_MODES = ("linear-probe", "local-heads-only", "last-k-units", "fine-tune")


# Training fields a suite may set in [train], per method ([methods."name"]) or per axis level.
TRAIN_FIELDS: dict[str, Option] = {
    "epochs": Option(int, 10, "training epochs", ge=1, le=100_000),
    "batch_size": Option(int, 64, "training mini-batch size", ge=1),
    "eval_batch_size": Option(int, 1000, "evaluation batch size", ge=1),
    "optimizer": Option(str, "adam", "optimizer for every trainable part", choices=OPTIMIZERS),
    "lr": Option(float, 1e-3, "learning rate", gt=0, le=10),
    "weight_decay": Option(float, 0.0, "weight decay", ge=0, le=1),
    "momentum": Option(float, 0.9, "SGD momentum (ignored by Adam)", ge=0, lt=1),
    "schedule": Option(
        str,
        "constant",
        "learning-rate schedule over epochs: constant, cosine to 0, or "
        "cooldown (constant, then linear decay over the second half; cooldown-loewex: loeweX's formula, "
        "lr * 2 (1 + E - e) / E for 0-based epochs e > E // 2)",
        choices=SCHEDULES,
    ),
    "val_size": Option(
        (int, float),
        0.1,
        "validation split carved from the training set: a fraction (<1) or a count",
        gt=0,
        check=lambda v: isinstance(v, int) or v < 1,
        check_doc="a fraction in (0, 1) or a positive count",
    ),
    "train_subset": Option(
        (int, type(None)),
        None,
        "class-balanced training subset size (after the split)",
        ge=1,
        check_doc="a positive integer",
    ),
    "classes": Option(
        (int, type(None)), None, "keep this many classes (drawn per seed)", ge=2, check_doc="an integer >= 2"
    ),
    "crop_padding": Option(
        int, 0, "random-crop augmentation padding in pixels (0: off; at most the image's side)", ge=0, le=1024
    ),
    "flip": Option(bool, False, "random horizontal flips"),
    "keep_classes": Option(
        (list, type(None)),
        None,
        "keep exactly these classes (original labels), relabelled "
        "0..k-1 in this order: a class split such as [5, 6, 7, 8, 9]",
        item=Option(int, ge=0),
        check=lambda v: v is None or (len(v) >= 2 and len(set(v)) == len(v)),
        check_doc="a list of at least 2 distinct class labels",
    ),
    "adapt": Option(
        (str, type(None)),
        None,
        "how a run starts from its suite's [transfer] source: linear-probe "
        "(the backbone fixed, the method's final read-out trains), local-heads-only (the backbone fixed, "
        "every unit's head trains), last-k-units (the first units fixed), fine-tune (everything trains); "
        "unset: from scratch",
        choices=ADAPT_MODES,
    ),
    "adapt_units": Option(int, 1, "units that train under adapt = last-k-units (the last k)", ge=1),
    "eval_every": Option(
        int,
        1,
        "evaluate on validation and test every this many epochs (and after the last); "
        "the best epoch is chosen among the evaluated ones",
        ge=1,
    ),
}

# Fields added after the first release: left out of a run's identity while at their default, so the cells of
# existing stores keep their IDs (and are not trained again).
LATER_FIELDS = {k: TRAIN_FIELDS[k].default for k in ("eval_every", "keep_classes", "adapt", "adapt_units")}
LATER_FIELDS["source"] = None


def _train_field(name: str) -> Any:
    """A ``RunConfig`` training field whose default is the schema's: ``TRAIN_FIELDS`` is the one definition of
    the training fields (names, defaults, bounds, help); ``RunConfig`` adds only their Python types."""
    return field(default=TRAIN_FIELDS[name].default)


@dataclass(frozen=True)
class RunConfig:
    """One run: its method, dataset, backbone and seed, the training fields of ``TRAIN_FIELDS`` (defaults from
    there), the transfer source, and the card options."""

    method: str
    dataset: str
    backbone: str
    seed: int = 0
    epochs: int = _train_field("epochs")
    batch_size: int = _train_field("batch_size")
    eval_batch_size: int = _train_field("eval_batch_size")
    optimizer: str = _train_field("optimizer")
    lr: float = _train_field("lr")
    weight_decay: float = _train_field("weight_decay")
    momentum: float = _train_field("momentum")
    schedule: str = _train_field("schedule")
    val_size: float | int = _train_field("val_size")
    train_subset: int | None = _train_field("train_subset")
    classes: int | None = _train_field("classes")
    crop_padding: int = _train_field("crop_padding")
    flip: bool = _train_field("flip")
    eval_every: int = _train_field("eval_every")
    keep_classes: list[int] | None = _train_field("keep_classes")
    adapt: str | None = _train_field("adapt")
    adapt_units: int = _train_field("adapt_units")
    # the source task a run adapts from (a RunConfig dict without seed, or {"weights": "imagenet"}): set by the
    # design from the suite's [transfer], never by hand
    source: dict[str, Any] | None = None
    method_options: dict[str, Any] = field(default_factory=dict)
    backbone_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return cls(**d)

    def without_seed(self) -> dict[str, Any]:
        """The run's identity apart from its seed (fields of ``LATER_FIELDS`` at their default left out)."""
        d = self.to_dict()
        d.pop("seed")
        for k, default in LATER_FIELDS.items():
            if d.get(k) == default:
                d.pop(k)
        return d


# What a dataset card's ``defaults`` may state about its size, so a suite is checked without loading data
# (``image_size``, the side of its square images, is optional: crop_padding is checked against it where known).
DATASET_SIZES = ("num_classes", "n_train", "n_test")
IMAGE_SIZE = "image_size"

# The columns of a run besides its factors and metrics: bookkeeping (the store's table) and the compute record
# (``train.describe`` and the timings); the reports tell factors from them by these lists.
BOOKKEEPING = (
    "run_id",
    "suite",
    "suite_version",
    "cell_id",
    "role",
    "seed",
    "trial",
    "status",
    "error",
    "attempts",
    "mlflow_run_id",
    "curves",
    "worker",
    "heartbeat",
    "started",
    "finished",
    "optuna_trial",
    "params",
    "manifest",
    "task",
    "group",
)
COMPUTE = (
    "device",
    "n_params",
    "n_train",
    "n_val",
    "n_test",
    "num_classes",
    "units",
    "train_time_s",
    "epoch_time_s",
    "images_per_s",
    "saved_bytes_per_step",
    "peak_mem_bytes",
    "batched_seeds",
)
# The end-of-run results table (table.md); results.csv holds the runs' columns.
TABLE_COLUMNS = (
    "dataset",
    "backbone",
    "method",
    "n",
    "failed",
    "test_acc_mean",
    "test_acc_sd",
    "test_acc_ci_low",
    "test_acc_ci_high",
    "delta_vs_control",
    "delta_ci_low_vs_control",
    "delta_ci_high_vs_control",
    "verdict",
    "one_seed",
    "executed",
    "epoch_time_s",
    "saved_MB_per_step",
    "no_backward",
    "peak_MB_per_step",
)
# An axis named like one of these columns (or an MLflow tag or param prefix, or a metric) would overwrite it in
# the run table, results.csv, the export and the MLflow tags: the suite checker refuses such names.
RESERVED_NAMES = tuple(
    dict.fromkeys((*BOOKKEEPING, *COMPUTE, *TABLE_COLUMNS[3:], "k", "best_epoch", "trainable_params"))
)
RESERVED_PREFIXES = ("val_acc", "test_acc", "param.", "cfg.", "ffbench.", "manifest.", "tuning.", "tuned.", "mlflow.")


class SplitError(ValueError):
    """A split a dataset cannot give; ``field`` is the training field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def split_sizes(
    val_size: float | int,
    train_subset: int | None,
    classes: int | None,
    *,
    n_train: int,
    num_classes: int,
    dataset: str = "the dataset",
) -> tuple[int, int]:
    """(validation count, training count) of a run's split of ``n_train`` training images in ``num_classes``
    classes; ``SplitError`` naming the field and what is allowed when the split is impossible.

    The one rule for the planner (with a dataset card's sizes) and ``data.prepare`` (with the loaded data):
    classes at most the dataset's; val_size a fraction of the training images giving at least one, or a
    count below their number; train_subset at most what the validation split leaves. With ``classes``,
    ``n_train`` counts the kept classes' images (the planner assumes balanced classes; the loaded data is exact).
    """
    if classes is not None and not 2 <= classes <= num_classes:
        raise SplitError(
            "classes", f"classes = {classes}: {dataset} has {num_classes} classes; allowed: 2..{num_classes}"
        )
    n_val = int(round(val_size * n_train)) if isinstance(val_size, float) else int(val_size)
    k = classes if classes is not None else num_classes
    if not 0 < n_val <= n_train - k:
        raise SplitError(
            "val_size",
            f"val_size = {val_size!r} gives {n_val} validation images of the {n_train} "
            f"training images of {dataset}, leaving {n_train - n_val} to train {k} classes; "
            f"allowed: a fraction in (0, 1) giving at least one image, or a count in "
            f"1..{n_train - k} (at least one training image per class left)",
        )
    left = n_train - n_val
    if train_subset is not None and train_subset < k:
        raise SplitError(
            "train_subset",
            f"train_subset = {train_subset} is fewer than the {k} classes of {dataset} "
            f"(a class-balanced subset needs at least one image per class); allowed: "
            f"{k}..{left}",
        )
    if train_subset is not None and train_subset > left:
        raise SplitError(
            "train_subset",
            f"train_subset = {train_subset} exceeds the {left} training images of "
            f"{dataset} left after the validation split ({n_val}); allowed: {k}..{left}",
        )
    return n_val, left


def class_problem(keep_classes: list[int] | None, num_classes: int, dataset: str = "the dataset") -> str | None:
    """Why ``keep_classes`` cannot be kept from ``dataset``'s ``num_classes`` classes, or None: the one rule for
    the planner (a suite's target and source) and ``data.prepare``."""
    bad = [c for c in keep_classes or [] if not 0 <= c < num_classes]
    return f"{dataset} has classes 0..{num_classes - 1}; {bad} are not among them" if bad else None


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_hash(*parts: Any, length: int = 12) -> str:
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()[:length]
