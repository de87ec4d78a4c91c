"""From a suite to cells and runs.

A cell is one combination of factor levels (method x dataset x backbone x the levels of the suite's axes)
with its fully resolved configuration. Its ID hashes that configuration (and, for a tuned cell, the
method's tuning specification: space, sampler, budget, tuning seeds) with the suite name, the suite
version, the ffbench version and the fingerprint of the code that produces its numbers (``code_fingerprint``:
the source of the method's, the backbone's and the dataset's modules, and the distribution version of a
third-party plugin), so changing any setting or plugin gives a new cell and results never mix. A run is a
cell with one seed and a role: evaluation (``<cell>-s<seed>``), or a tuning
trial slot (``<cell>-t<k>``).

Enumeration: the full factorial of the axes' levels (or one axis at a time from the first levels, with
``plan = "one-at-a-time"``), filtered by ``[design].only`` / ``exclude``. Then, per combination:
  * an axis that does not apply to the method or backbone (its card lacks the option) leaves it alone:
    its level is recorded as None and the combinations that differ only there merge into one cell;
  * a combination that cannot run is dropped with its reason: the method's capabilities and the
    backbone's (e.g. ff.hinton needs a flat backbone), a level the card does not allow (resnet18 has no
    layer granularity), an axis rule (on cnn a stage is a block), or the method's own ``skip(config) -> reason | None``;
  * two combinations with the same resolved configuration give one cell (the first), the other is dropped.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import importlib
import importlib.metadata
import itertools
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ffbench import __version__
from ffbench.core.config import ADAPT_MODES, TRAIN_FIELDS, RunConfig, canonical_json, content_hash
from ffbench.core.registry import BACKBONES, METHODS, RECIPE_DEFAULT
from ffbench.plan.suite import SOURCE_IMAGENET, Suite, SuiteError
from ffbench.plan.tuning import REPEAT, repeat_of_slot, repeats_of, tuning_seeds

EVALUATION, TUNING = "evaluation", "tuning"


@dataclass(frozen=True)
class Cell:
    cell_id: str
    factors: dict[str, Any]  # method, dataset, backbone (+ axis levels; None where an axis does not apply)
    config: RunConfig  # seed 0 placeholder; runs set their own
    tuning: dict[str, Any] | None = None  # TuningSpec.for_method(method), or None when the suite does not tune
    code: dict[str, Any] | None = None  # code_fingerprint(method, backbone, dataset): part of the cell's identity

    @property
    def label(self) -> str:
        """``method/dataset/backbone/axis=level`` (what ``--cells`` matches)."""
        base = [str(self.factors[k]) for k in ("method", "dataset", "backbone")]
        return "/".join(base + [f"{k}={v}" for k, v in _axis_levels(self.factors)])

    def matches(self, pattern: str) -> bool:
        """A wildcard over the label (method/dataset/backbone/axis=level) or the method's name."""
        return fnmatch.fnmatchcase(self.label, pattern) or fnmatch.fnmatchcase(self.factors["method"], pattern)


def _axis_levels(factors: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in factors.items() if k not in ("method", "dataset", "backbone") and v is not None]


def run_name(factors: dict[str, Any]) -> str:
    """A cell's MLflow run name, ``method[axis=level, ...]/dataset/backbone``: what tells cells apart comes
    first, so it stays visible where the UI cuts a long name short."""
    levels = ", ".join(f"{k}={v}" for k, v in _axis_levels(factors))
    head = f"{factors.get('method', '')}{f'[{levels}]' if levels else ''}"
    return "/".join([head, *(str(factors[k]) for k in ("dataset", "backbone") if factors.get(k) is not None)])


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
        return {
            "run_id": self.run_id,
            "suite": suite.name,
            "suite_version": suite.version,
            "cell_id": self.cell.cell_id,
            "role": self.role,
            "seed": self.seed,
            "trial": self.trial,
            "factors": self.cell.factors,
            "config": self.config.to_dict(),
            "code": self.cell.code,
        }


def tally(pairs: Sequence[tuple[dict[str, Any], str]]) -> list[tuple[str, int]]:
    """(reason, how many) of (factors, reason) pairs, the commonest first."""
    return Counter(reason for _, reason in pairs).most_common()


@dataclass
class Design:
    cells: list[Cell]
    runs: list[Run]  # evaluation runs (and the runs of tuning repeats' choices, role REPEAT)
    dropped: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (factors, reason)
    trials: list[Run] = field(default_factory=list)  # tuning slots (role tuning, trial 0..n-1)
    merged: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (factors, why it merged)
    axes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # suite values that meet a method's recipe (printed at planning)
    declared: list[str] = field(default_factory=list)  # every cell ID of the whole design (kept by select)

    @property
    def factors(self) -> list[str]:
        """The factors every cell has a level of: method, dataset, backbone, then the axes."""
        return ["method", "dataset", "backbone", *self.axes]

    def initial_runs(self) -> list[Run]:
        """What the store gets when the suite starts: the tuning slots of tuned cells, and the evaluation
        runs of untuned ones (a tuned cell's evaluation runs come when its tuning is complete)."""
        return self.trials + [r for r in self.runs if r.cell.tuning is None]

    def select(self, cells: Sequence[str] = (), seeds: Sequence[int] = ()) -> Design:
        """The part a command asks for: the cells matching any wildcard of ``cells`` (``Cell.matches``) and,
        of their evaluation runs, those of ``seeds``. Run IDs are the full design's, so the results land
        where the whole suite's do and a later run of the whole suite trains only the rest. A tuned cell
        keeps all its tuning slots (their seeds are the tuning's)."""
        if not cells and not seeds:
            return self
        keep = [c for c in self.cells if not cells or any(c.matches(p) for p in cells)]
        if not keep:
            raise SuiteError(
                f"--cells {' '.join(cells)}: no cell matches; the cells are "
                f"{', '.join(c.label for c in self.cells)} (a wildcard matches a cell's label or its method)"
            )
        known = sorted({r.seed for r in self.runs if r.role == EVALUATION})
        unknown = sorted(set(seeds) - set(known))
        if unknown:
            raise SuiteError(
                f"--seeds {','.join(map(str, unknown))}: not an evaluation seed of this suite; "
                f"allowed: {','.join(map(str, known))}"
            )
        ids = {c.cell_id for c in keep}
        runs = [
            r for r in self.runs if r.cell.cell_id in ids and (not seeds or r.role != EVALUATION or r.seed in seeds)
        ]
        return replace(self, cells=keep, runs=runs, trials=[r for r in self.trials if r.cell.cell_id in ids])

    def dropped_summary(self) -> list[tuple[str, int]]:
        return tally(self.dropped)

    def merged_summary(self) -> list[tuple[str, int]]:
        return tally(self.merged)

    def sources(self) -> list[tuple[dict[str, Any], list[int]]]:
        """The source stage: each distinct source task of the runs that adapt, with the seeds it is trained on."""
        seeds: dict[str, tuple[dict[str, Any], set[int]]] = {}
        for run in [*self.runs, *self.trials]:
            src = run.cell.config.source
            if src:
                seeds.setdefault(canonical_json(src), (src, set()))[1].add(run.seed)
        return [(src, sorted(s)) for src, s in seeds.values()]

    def budget(self) -> dict[str, int]:
        """Training epochs: tuning (an upper bound: pruning stops trials early) and evaluation."""
        tuning = sum(
            c.tuning["trials"] * repeats_of(c.tuning) * len(c.tuning["seeds"]) * _epochs(c, "tuning")
            for c in self.cells
            if c.tuning
        )
        evaluation = sum(_epochs(r.cell, "evaluation") for r in self.runs)
        return {
            "tuning_trials": len(self.trials),
            "tuning_epochs": tuning,
            "evaluation_runs": len(self.runs),
            "evaluation_epochs": evaluation,
            "total_epochs": tuning + evaluation,
        }


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


def repeat_run_id(cell: Cell, repeat: int, seed: int) -> str:
    return f"{cell.cell_id}-r{repeat}-s{seed}"


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
            return (
                f"{method} needs a backbone with {', '.join(missing)} (offered by "
                f"{', '.join(offering) or 'none'}); {backbone} has not"
            )
    return None


def resolve(
    suite: Suite, method: str, dataset: str, backbone: str, overrides: dict[str, Any] | None = None
) -> RunConfig:
    """The run configuration of one combination (see ``resolve_with_warnings``)."""
    return resolve_with_warnings(suite, method, dataset, backbone, overrides)[0]


def _recipe_name(suite: Suite, method: str, overrides: dict[str, Any]) -> str:
    return overrides.get("recipe", suite.method_settings.get(method, {}).get("recipe", RECIPE_DEFAULT))


def resolve_with_warnings(
    suite: Suite, method: str, dataset: str, backbone: str, overrides: dict[str, Any] | None = None
) -> tuple[RunConfig, list[str]]:
    """The run configuration, and the warnings about suite values that meet the method's recipe.

    Layers, later wins. Recipe ``ffbench`` (the default): ffbench defaults < the method card (its ffbench
    recipe) < [train] < [datasets.X] < [methods.X] < overrides (axis levels). Any other recipe (e.g.
    ``reference``) sits above the suite's shared sections: ... < [train] < [datasets.X] < recipe (resolved
    for the run's dataset) < [methods.X] < overrides. Either way a [train] or [datasets.X] value that differs
    from the recipe's is a warning naming method, field, recipe value and suite value (applied under
    ``ffbench``, ignored under another recipe), unless [methods.X] sets the field itself. Recipe settings
    may also be ``dataset.<option>`` (e.g. normalisation, the validation split) and ``backbone.<option>``.
    """
    overrides = overrides or {}
    card = METHODS.get(method).card
    name = _recipe_name(suite, method, overrides)
    own = suite.method_settings.get(method, {})
    shared = [("[train]", suite.train), (f"[datasets.{dataset}]", suite.dataset_settings.get(dataset, {}))]
    recipe: dict[str, Any] = {}
    warnings: list[str] = []
    if card.recipes:
        recipe, missing = card.recipe(name, dataset)
        if missing:
            warnings.append(
                f"{method}: recipe {name!r} has no value for {', '.join(missing)} on dataset "
                f"{dataset!r}; the {RECIPE_DEFAULT} values apply"
            )
    for where, table in shared:
        for k, v in table.items():
            if k in recipe and k not in own and k not in overrides and canonical_json(v) != canonical_json(recipe[k]):
                what = "applied" if name == RECIPE_DEFAULT else "ignored"
                warnings.append(
                    f"{method}: {where} {k} = {v!r} differs from recipe {name!r} value {recipe[k]!r}; "
                    f'{what} (set it in [methods."{method}"] to choose)'
                )
    later = [{k: v for k, v in own.items() if k != "recipe"}, {k: v for k, v in overrides.items() if k != "recipe"}]
    if name == RECIPE_DEFAULT:
        layers = [card.defaults, *(t for _, t in shared), *later]
    else:
        layers = [card.defaults, *(t for _, t in shared), recipe, *later]
    settings: dict[str, Any] = {}
    options: dict[str, Any] = {}
    bb_overrides: dict[str, Any] = {}
    dataset_options = {k: v for k, v in suite.dataset_settings.get(dataset, {}).items() if k == "root"}
    for layer in layers:
        for k, v in layer.items():
            if k in TRAIN_FIELDS:
                settings[k] = v
            elif k == "root":
                continue
            elif k.startswith("backbone."):
                if layer is not card.defaults:
                    bb_overrides[k.split(".", 1)[1]] = v
            elif k.startswith("dataset."):
                dataset_options[k.split(".", 1)[1]] = v
            else:
                options[k] = v
    if name != RECIPE_DEFAULT:
        options["recipe"] = name  # a non-default recipe is part of the configuration (and of the cell's identity)
    bb_card = BACKBONES.get(backbone).card
    suite_bb = suite.backbone_options.get(backbone, {})
    for k, v in recipe.items():
        key = k.split(".", 1)[1] if k.startswith("backbone.") else None
        if key and v is not None and key in suite_bb and canonical_json(suite_bb[key]) != canonical_json(v):
            what = "applied" if name == RECIPE_DEFAULT else f"ignored for {method}"
            warnings.append(
                f"{method}: [backbones.{backbone}] {key} = {suite_bb[key]!r} differs from recipe "
                f"{name!r} value {v!r}; {what}"
            )
    bb_options = {**{k: v for k, v in bb_card.defaults.items() if v is not None}, **suite_bb}
    recipe_bb = {k.split(".", 1)[1] for k in recipe if k.startswith("backbone.")}
    bb_options.update({k: v for k, v in bb_overrides.items() if k in bb_card.options or k not in recipe_bb})
    options = {k: v for k, v in options.items() if not (v is None and k in card.options and card.options[k].optional)}
    config = RunConfig(
        method=method,
        dataset=dataset,
        backbone=backbone,
        seed=0,
        **settings,
        method_options=options,
        backbone_options=bb_options,
        dataset_options=dataset_options,
    )
    return config, warnings


OWN_DISTRIBUTION = "ffbench"


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.cache
def module_fingerprint(module_name: str) -> dict[str, str]:
    """{"file": the module's path from its top package (e.g. ffbench/methods/sff.py), "sha256": of its source,
    "dist": "name==version" when a third-party distribution provides it}. Read once per process."""
    try:
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
    except ImportError:  # defined by code run in place (exec), not by an importable module
        module = None
    path = getattr(module, "__file__", None)
    out = {"file": module_name.replace(".", "/") + ("/__init__.py" if path and path.endswith("__init__.py") else ".py")}
    try:
        with open(path, "rb") as fh:
            out["sha256"] = hashlib.sha256(fh.read()).hexdigest()[:16]
    except (OSError, TypeError):
        out["sha256"] = "unknown"  # a module without a source file (built in, or made at run time)
    dists = [d for d in _distributions().get(module_name.split(".")[0], []) if d.lower() != OWN_DISTRIBUTION]
    if dists:
        out["dist"] = f"{dists[0]}=={importlib.metadata.version(dists[0])}"
    return out


def code_fingerprint(method: str, backbone: str, dataset: str) -> dict[str, dict[str, str]]:
    """The code a cell's numbers come from: the modules that define its method, backbone and dataset."""
    from ffbench.core.registry import DATASETS

    entries = (
        ("method", METHODS.get(method)),
        ("backbone", BACKBONES.get(backbone)),
        ("dataset", DATASETS.get(dataset)),
    )
    return {kind: module_fingerprint(entry.obj.__module__) for kind, entry in entries}


def code_changes(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """What differs between two code fingerprints, as "ffbench/methods/sff.py changed" / "mypkg 0.1 -> 0.2"."""
    if not old or not new:
        return []
    out = []
    for kind in new:
        a, b = old.get(kind) or {}, new[kind]
        if a.get("dist") != b.get("dist") and a.get("dist") and b.get("dist"):
            out.append(f"{a['dist']} became {b['dist']}")
        elif a.get("sha256") != b.get("sha256") or a.get("file") != b.get("file"):
            out.append(f"{b['file']} changed")
    return list(dict.fromkeys(out))


def cell_id(
    suite: Suite, config: RunConfig, tuning: dict[str, Any] | None = None, code: dict[str, Any] | None = None
) -> str:
    parts: list[Any] = [config.without_seed(), suite.name, suite.version, __version__]
    if tuning:
        parts.append(tuning)
    if code:
        parts.append({k: {f: v for f, v in fp.items() if f != "file"} for k, fp in code.items()})
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


def _method_skip(method: str, config: RunConfig) -> str | None:
    try:
        return METHODS.get(method).obj.skip(config)
    except Exception as exc:  # a broken hook must not hide the design
        return f"{method}.skip raised {type(exc).__name__}: {exc}"


def _card_check(config: RunConfig) -> str | None:
    """A resolved option value that the backbone's or method's card does not allow."""
    for owner, card, options in (
        (config.backbone, BACKBONES.get(config.backbone).card, config.backbone_options),
        (config.method, METHODS.get(config.method).card, config.method_options),
    ):
        for k, v in options.items():
            why = card.options[k].problem(v) if k in card.options else None
            if why:
                return f"{owner} option {k}: {why}"
    return None


def source_of(suite: Suite, config: RunConfig) -> dict[str, Any]:
    """The source task of a run that adapts (``config.source``): the suite's [transfer] resolved for the run's
    method (or the one [transfer] names) and backbone, on the source dataset at the source budget, without
    seed. Independent of tuned values and of the target's training-set size, so cells share their sources."""
    t = suite.transfer.get(config.dataset) or suite.transfer.get("*")
    if t is None:
        raise SuiteError(
            f"{suite.path}: adapt = {config.adapt!r} on {config.dataset}: no [transfer.{config.dataset}] "
            f"names its source (sources are given for {', '.join(suite.transfer)})"
        )
    if t["dataset"] == SOURCE_IMAGENET:
        return {"weights": SOURCE_IMAGENET}
    method = config.method if t["method"] == "same" else t["method"]
    base = resolve(suite, method, t["dataset"], config.backbone)
    fields = {k: v for k, v in t.items() if k in TRAIN_FIELDS and k not in ("epochs", "classes")}
    dataset_options = {**base.dataset_options, **({"root": t["root"]} if "root" in t else {})}
    src = replace(
        base,
        **fields,
        epochs=t["epochs"],
        eval_every=t["epochs"],
        keep_classes=t.get("classes"),
        classes=None,
        train_subset=None,
        adapt=None,
        adapt_units=1,
        source=None,
        backbone_options=config.backbone_options,
        dataset_options=dataset_options,
        method_options=config.method_options if method == config.method else base.method_options,
    )
    return src.without_seed()


def _adapt_problem(config: RunConfig) -> str | None:
    """Why a run cannot adapt as configured (a mode the method does not offer), or None."""
    modes = METHODS.get(config.method).obj.adapt_modes
    if config.adapt not in modes:
        return f"{config.method} does not offer adapt={config.adapt} (allowed: {', '.join(modes)})"
    return None


def expand(suite: Suite) -> Design:
    cells: list[Cell] = []
    dropped: list[tuple[dict[str, Any], str]] = []
    merged: list[tuple[dict[str, Any], str]] = []
    seen: dict[str, Cell] = {}
    warnings: list[str] = []
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
            config, notes = resolve_with_warnings(suite, method, dataset, backbone, overrides)
            warnings += notes
            if config.adapt is not None:
                if suite.transfer is None:
                    raise SuiteError(
                        f"{suite.path}: adapt = {config.adapt!r} (cell {'/'.join(map(str, declared.values()))}) "
                        f"needs a [transfer] section naming the source task (dataset, epochs)"
                    )
                config = replace(config, source=source_of(suite, config))
            why = (
                next(
                    (
                        r
                        for use in suite.axes
                        if factors[use.name] is not None
                        for r in [use.axis.incompatible(factors[use.name], method, dataset, backbone, config)]
                        if r
                    ),
                    None,
                )
                or _card_check(config)
                or _method_skip(method, config)
                or (config.adapt is not None and _adapt_problem(config))
            )
            if why:
                dropped.append((declared, why))
                continue
            tuning = suite.tuning.for_method(method) if suite.tuning else None
            code = code_fingerprint(method, backbone, dataset)
            cid = cell_id(suite, config, tuning, code)
            if cid in seen:
                if why_merged and seen[cid].factors == factors:
                    merged.append((declared, "; ".join(dict.fromkeys(why_merged))))
                else:
                    dropped.append((declared, f"same configuration as cell {cid} ({seen[cid].label})"))
                continue
            cell = Cell(cid, factors, config, tuning, code)
            seen[cid] = cell
            cells.append(cell)
    if not cells:  # a suite that trains nothing is a mistake in it, not an empty result
        why = "; ".join(f"{reason} ({n}x)" for reason, n in tally(dropped))
        raise SuiteError(f"{suite.path}: [design] leaves no cell to run: every combination was dropped ({why})")
    if suite.transfer is not None and not any(c.config.adapt for c in cells):
        raise SuiteError(
            f"{suite.path}: [transfer] names a source but no run adapts from it; set adapt in [train] "
            f"or an adapt axis (levels: scratch, {', '.join(ADAPT_MODES)})"
        )
    runs = [Run(eval_run_id(c, seed), c, seed) for c in cells for seed in suite.seeds]
    runs += [
        Run(repeat_run_id(c, r, seed), c, seed, role=REPEAT, trial=r)  # tuning repeats' choices
        for c in cells
        if c.tuning
        for r in range(1, repeats_of(c.tuning))
        for seed in suite.seeds
    ]
    trials = [
        Run(trial_run_id(c, k), c, tuning_seeds(c.tuning, repeat_of_slot(c.tuning, k))[0], role=TUNING, trial=k)
        for c in cells
        if c.tuning
        for k in range(c.tuning["trials"] * repeats_of(c.tuning))
    ]
    return Design(
        cells,
        runs,
        dropped,
        trials,
        merged,
        suite.axis_names,
        warnings=list(dict.fromkeys(warnings)),
        declared=[c.cell_id for c in cells],
    )
