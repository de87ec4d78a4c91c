"""From a suite to cells and runs.

A cell is one combination of factor levels (method x dataset x backbone, and later axis levels) with
its fully resolved configuration; its ID hashes that configuration with the suite version and the
ffbench version, so changing any setting gives a new cell and results of different versions never mix.
A run is a cell with one seed and a role (evaluation, or tuning).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

from ffbench import __version__
from ffbench.config import TRAIN_FIELDS, RunConfig, content_hash
from ffbench.registry import BACKBONES, METHODS
from ffbench.suite import Suite

EVALUATION, TUNING = "evaluation", "tuning"


@dataclass(frozen=True)
class Cell:
    cell_id: str
    factors: dict[str, Any]  # method, dataset, backbone (+ axis levels)
    config: RunConfig  # seed 0 placeholder; runs set their own


@dataclass(frozen=True)
class Run:
    run_id: str
    cell: Cell
    seed: int
    role: str = EVALUATION
    trial: int | None = None

    @property
    def config(self) -> RunConfig:
        return replace(self.cell.config, seed=self.seed)

    def store_row(self, suite: Suite) -> dict[str, Any]:
        return {"run_id": self.run_id, "suite": suite.name, "suite_version": suite.version,
                "cell_id": self.cell.cell_id, "role": self.role, "seed": self.seed, "trial": self.trial,
                "factors": self.cell.factors, "config": self.config.to_dict()}


@dataclass
class Design:
    cells: list[Cell]
    runs: list[Run]
    dropped: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (factors, reason)


def incompatibility(method: str, backbone: str) -> str | None:
    """Why ``method`` cannot run on ``backbone`` (from the cards' capabilities), or None."""
    mcaps, bcaps = METHODS.get(method).card.capabilities, BACKBONES.get(backbone).card.capabilities
    if "needs-conv" in mcaps and "conv" not in bcaps:
        return f"{method} needs a convolutional backbone"
    if "needs-flat" in mcaps and "flat" not in bcaps:
        return f"{method} needs a fully connected (flat) backbone"
    only = [c.split(":", 1)[1] for c in mcaps if c.startswith("backbones:")]
    if only and backbone not in only[0].split("|"):
        return f"{method} runs only on backbones {only[0].replace('|', ', ')}"
    return None


def resolve(suite: Suite, method: str, dataset: str, backbone: str,
            overrides: dict[str, Any] | None = None) -> RunConfig:
    """ffbench defaults < method card < [train] < [datasets.X] < [methods.X] < overrides (axis levels)."""
    card = METHODS.get(method).card
    settings: dict[str, Any] = {}
    options: dict[str, Any] = {}
    layers = [card.defaults, suite.train, suite.dataset_settings.get(dataset, {}),
              suite.method_settings.get(method, {}), overrides or {}]
    for layer in layers:
        for k, v in layer.items():
            if k in TRAIN_FIELDS:
                settings[k] = v
            elif k == "root" or k.startswith("backbone."):
                continue
            else:
                options[k] = v
    bb_card = BACKBONES.get(backbone).card
    bb_options = {**bb_card.defaults, **suite.backbone_options.get(backbone, {})}
    for k, v in (overrides or {}).items():
        if k.startswith("backbone."):
            bb_options[k.split(".", 1)[1]] = v
    dataset_options = {k: v for k, v in suite.dataset_settings.get(dataset, {}).items() if k == "root"}
    return RunConfig(method=method, dataset=dataset, backbone=backbone, seed=0, **settings,
                     method_options=options, backbone_options=bb_options, dataset_options=dataset_options)


def cell_id(suite: Suite, config: RunConfig) -> str:
    return content_hash(config.without_seed(), suite.name, suite.version, __version__)


def expand(suite: Suite) -> Design:
    cells, dropped = [], []
    for method, dataset, backbone in itertools.product(suite.methods, suite.datasets, suite.backbones):
        factors = {"method": method, "dataset": dataset, "backbone": backbone}
        reason = incompatibility(method, backbone)
        if reason:
            dropped.append((factors, reason))
            continue
        config = resolve(suite, method, dataset, backbone)
        cells.append(Cell(cell_id(suite, config), factors, config))
    runs = [Run(f"{c.cell_id}-s{seed}", c, seed) for c in cells for seed in suite.seeds]
    return Design(cells, runs, dropped)
