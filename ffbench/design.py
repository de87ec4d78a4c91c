"""From a suite to cells and runs.

A cell is one combination of factor levels (method x dataset x backbone x the levels of the suite's axes)
with its fully resolved configuration. Its ID hashes that configuration (and, for a tuned cell, the
method's tuning specification: space, sampler, budget, tuning seeds) with the suite name, the suite
version and the ffbench version, so changing any setting gives a new cell and results of different
versions never mix. A run is a cell with one seed and a role: evaluation (``<cell>-s<seed>``), or a tuning
trial slot (``<cell>-t<k>``).

Enumeration: the full factorial of the axes' levels (or one axis at a time from the first levels, with
``plan = "one-at-a-time"``), filtered by ``[design].only`` / ``exclude``. Then, per combination:
  * an axis that does not apply to the method or backbone (its card lacks the option) leaves it alone:
    its level is recorded as None and the combinations that differ only there merge into one cell;
  * a combination that cannot run is dropped with its reason: the method's capabilities and the
    backbone's (e.g. ff.hinton needs a flat backbone), a level the card does not allow (resnet18 has no
    layer granularity), an axis rule (on cnn a stage is a block), or the method's own ``incompatible``
    hook (a classmethod ``incompatible(config) -> reason | None`` on the method class, if it has one);
  * two combinations with the same resolved configuration give one cell (the first), the other is dropped.
"""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from ffbench import __version__
from ffbench.config import TRAIN_FIELDS, RunConfig, canonical_json, content_hash
from ffbench.registry import BACKBONES, METHODS
from ffbench.suite import Suite

EVALUATION, TUNING = "evaluation", "tuning"


@dataclass(frozen=True)
class Cell:
    cell_id: str
    factors: dict[str, Any]  # method, dataset, backbone (+ axis levels; None where an axis does not apply)
    config: RunConfig  # seed 0 placeholder; runs set their own
    tuning: dict[str, Any] | None = None  # TuningSpec.for_method(method), or None when the suite does not tune

    @property
    def label(self) -> str:
        return "/".join(f"{v}" if k in ("method", "dataset", "backbone") else f"{k}={v}"
                        for k, v in self.factors.items() if v is not None)


@dataclass(frozen=True)
class Run:
    run_id: str
    cell: Cell
    seed: int
    role: str = EVALUATION
    trial: int | None = None

    @property
    def config(self) -> RunConfig:
        """For a tuned cell's evaluation run this is the untuned configuration: the tuned one is in the
        store row once tuning has finished."""
        return replace(self.cell.config, seed=self.seed)

    def store_row(self, suite: Suite) -> dict[str, Any]:
        return {"run_id": self.run_id, "suite": suite.name, "suite_version": suite.version,
                "cell_id": self.cell.cell_id, "role": self.role, "seed": self.seed, "trial": self.trial,
                "factors": self.cell.factors, "config": self.config.to_dict()}


@dataclass
class Design:
    cells: list[Cell]
    runs: list[Run]  # evaluation runs
    dropped: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (factors, reason)
    trials: list[Run] = field(default_factory=list)  # tuning slots (role tuning, trial 0..n-1)
    merged: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (factors, why it merged)
    axes: list[str] = field(default_factory=list)

    def initial_runs(self) -> list[Run]:
        """What the store gets when the suite starts: the tuning slots of tuned cells, and the evaluation
        runs of untuned ones (a tuned cell's evaluation runs come when its tuning is complete)."""
        return self.trials + [r for r in self.runs if r.cell.tuning is None]

    def dropped_summary(self) -> list[tuple[str, int]]:
        return Counter(reason for _, reason in self.dropped).most_common()

    def merged_summary(self) -> list[tuple[str, int]]:
        return Counter(reason for _, reason in self.merged).most_common()

    def budget(self) -> dict[str, int]:
        """Training epochs: tuning (an upper bound: pruning stops trials early) and evaluation."""
        tuning = sum(c.tuning["trials"] * len(c.tuning["seeds"]) * _epochs(c, "tuning") for c in self.cells
                     if c.tuning)
        evaluation = sum(_epochs(r.cell, "evaluation") for r in self.runs)
        return {"tuning_trials": len(self.trials), "tuning_epochs": tuning, "evaluation_runs": len(self.runs),
                "evaluation_epochs": evaluation, "total_epochs": tuning + evaluation}


def _epochs(cell: Cell, _role: str) -> int:
    space = (cell.tuning or {}).get("space", {})
    if "epochs" in space:  # a tuned epoch budget: count its upper end
        spec = space["epochs"]
        return int(max(spec[1:]) if spec[0] == "choice" else spec[2])
    return cell.config.epochs


def eval_run_id(cell: Cell, seed: int) -> str:
    return f"{cell.cell_id}-s{seed}"


def trial_run_id(cell: Cell, slot: int) -> str:
    return f"{cell.cell_id}-t{slot}"


def _backbone_caps() -> set[str]:
    return {c for card in BACKBONES.list() for c in card.capabilities}


def incompatibility(method: str, backbone: str) -> str | None:
    """Why ``method`` cannot run on ``backbone`` (from the cards' capabilities), or None.

    A method card's ``needs-X`` capability, ``backbones:a|b``, and, unless the method says
    ``any-backbone``, every capability that names a backbone capability (conv, flat, cfse, ...) must be
    offered by the backbone."""
    mcaps, bcaps = METHODS.get(method).card.capabilities, BACKBONES.get(backbone).card.capabilities
    if "needs-conv" in mcaps and "conv" not in bcaps:
        return f"{method} needs a convolutional backbone"
    if "needs-flat" in mcaps and "flat" not in bcaps:
        return f"{method} needs a fully connected (flat) backbone"
    only = [c.split(":", 1)[1] for c in mcaps if c.startswith("backbones:")]
    if only and backbone not in only[0].split("|"):
        return f"{method} runs only on backbones {only[0].replace('|', ', ')}"
    if "any-backbone" not in mcaps:
        missing = sorted((mcaps & _backbone_caps()) - bcaps)
        if missing:
            offering = [c.name for c in BACKBONES.list() if set(missing) <= c.capabilities]
            return (f"{method} needs a backbone with {', '.join(missing)} (offered by "
                    f"{', '.join(offering) or 'none'}); {backbone} has not")
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


def cell_id(suite: Suite, config: RunConfig, tuning: dict[str, Any] | None = None) -> str:
    parts: list[Any] = [config.without_seed(), suite.name, suite.version, __version__]
    if tuning:
        parts.append(tuning)
    return content_hash(*parts)


def combinations(suite: Suite) -> list[dict[str, Any]]:
    """The axis-level combinations the suite asks for (before per-method filtering)."""
    if not suite.axes:
        return [{}]
    names = [a.name for a in suite.axes]
    if suite.plan == "one-at-a-time":
        base = {a.name: a.levels[0] for a in suite.axes}
        combos = [dict(base)]
        for a in suite.axes:
            combos += [{**base, a.name: level} for level in a.levels[1:]]
        return combos
    return [dict(zip(names, levels)) for levels in itertools.product(*(a.levels for a in suite.axes))]


def _matches(factors: dict[str, Any], entry: dict[str, Any]) -> bool:
    return all(canonical_json(factors.get(k)) == canonical_json(v) for k, v in entry.items())


def _method_hook(method: str, config: RunConfig) -> str | None:
    hook = getattr(METHODS.get(method).obj, "incompatible", None)
    if callable(hook):
        try:
            return hook(config)
        except Exception as exc:  # a broken hook must not hide the design
            return f"{method}.incompatible raised {type(exc).__name__}: {exc}"
    return None


def _card_check(config: RunConfig) -> str | None:
    """A resolved option value that the backbone's or method's card does not allow."""
    for owner, card, options in ((config.backbone, BACKBONES.get(config.backbone).card, config.backbone_options),
                                 (config.method, METHODS.get(config.method).card, config.method_options)):
        for k, v in options.items():
            allowed = card.options.get(k)
            if isinstance(allowed, tuple) and v not in allowed:
                return f"{owner} does not offer {k}={v!r} (allowed: {', '.join(map(str, allowed))})"
    return None


def expand(suite: Suite) -> Design:
    cells: list[Cell] = []
    dropped: list[tuple[dict[str, Any], str]] = []
    merged: list[tuple[dict[str, Any], str]] = []
    seen: dict[str, Cell] = {}
    combos = combinations(suite)
    for method, dataset, backbone in itertools.product(suite.methods, suite.datasets, suite.backbones):
        base = {"method": method, "dataset": dataset, "backbone": backbone}
        reason = incompatibility(method, backbone)
        for combo in combos:
            declared = {**base, **combo}
            if suite.only and not any(_matches(declared, e) for e in suite.only):
                continue  # not part of the declared subset: not counted as dropped
            hit = next((i for i, e in enumerate(suite.exclude) if _matches(declared, e)), None)
            if hit is not None:
                dropped.append((declared, f"excluded by [design].exclude[{hit}]"))
                continue
            if reason:
                dropped.append((declared, reason))
                continue
            factors, overrides, why_merged = dict(base), {}, []
            for use in suite.axes:
                level = combo[use.name]
                na = use.axis.not_applicable(method, backbone)
                if na:
                    factors[use.name] = None
                    why_merged.append(na)
                else:
                    factors[use.name] = level
                    overrides.update(use.axis.overrides(level, method, backbone))
            config = resolve(suite, method, dataset, backbone, overrides)
            why = next((r for use in suite.axes if factors[use.name] is not None
                        for r in [use.axis.incompatible(factors[use.name], method, dataset, backbone, config)] if r),
                       None) or _card_check(config) or _method_hook(method, config)
            if why:
                dropped.append((declared, why))
                continue
            tuning = suite.tuning.for_method(method) if suite.tuning else None
            cid = cell_id(suite, config, tuning)
            if cid in seen:
                if why_merged and seen[cid].factors == factors:
                    merged.append((declared, "; ".join(dict.fromkeys(why_merged))))
                else:
                    dropped.append((declared, f"same configuration as cell {cid} ({seen[cid].label})"))
                continue
            cell = Cell(cid, factors, config, tuning)
            seen[cid] = cell
            cells.append(cell)
    runs = [Run(eval_run_id(c, seed), c, seed) for c in cells for seed in suite.seeds]
    trials = [Run(trial_run_id(c, k), c, c.tuning["seeds"][0], role=TUNING, trial=k)
              for c in cells if c.tuning for k in range(c.tuning["trials"])]
    return Design(cells, runs, dropped, trials, merged, suite.axis_names)
