"""Suite files: load the TOML, validate every field, and say what is wrong where.

A suite file (``suites/<name>.toml``)::

    [suite]                 name, version (an integer, bump it when results must not mix), description,
                            control (the method others are compared with; default "bp")
    [design]                methods, datasets, backbones (lists of registered names), seeds (evaluation seeds)
    [train]                 training fields shared by every run (the equal budget: epochs, batch_size, ...)
    [methods."<name>"]      per method: training fields and method options
    [backbones."<name>"]    per backbone: backbone options
    [datasets."<name>"]     per dataset: root, and training fields for that dataset
    [axes]                  ablation axes and their levels (see below); optional
    [tuning]                Optuna tuning inside each cell at an equal budget (see ``tuning.py``); optional

Later sections win: ffbench defaults < the method card's defaults < [train] < [datasets.X] < [methods.X]
< axis levels < tuned parameters. Every error names the file, the field and the allowed values, and is
raised before anything trains.

Axes (``ffbench list axes`` shows the registered ones)::

    [axes]
    granularity = ["layer", "block", "stage"]   # a registered axis and the levels to cross
    head_kernel = [1, 3, 5]
    [axes.loss]                                 # a generic axis declared here: method_option,
    method_option = "loss"                      # backbone_option or train_field, and its levels
    levels = ["ce", "margin"]

    [design]
    plan = "full"                               # or "one-at-a-time" (first level of each axis is the base)
    only = [{granularity = "block"}]            # optional: keep only combinations matching one of these
    exclude = [{bn = "none", head_kernel = 5}]  # optional: drop combinations matching any of these

Levels are checked against the axis (type, allowed values) and against the cards of the suite's methods
and backbones (a level no card allows is an error; a level some cards do not allow drops those cells).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffbench.config import TRAIN_FIELDS, Field, canonical_json, type_ok
from ffbench.registry import BACKBONES, DATASETS, METHODS, Card


class SuiteError(ValueError):
    pass


SUITE_DIRS = [Path.cwd() / "suites", Path(__file__).resolve().parent.parent / "suites"]

_SECTIONS = {
    "suite": "name, version, description, control",
    "design": "methods, datasets, backbones, seeds",
    "train": "training fields",
    "methods": "per-method settings",
    "backbones": "per-backbone options",
    "datasets": "per-dataset settings",
    "axes": "ablation axes and their levels",
    "tuning": "Optuna tuning: trials, seeds, sampler, pruner, space",
}
_SUITE_KEYS = {"name": str, "version": int, "description": str, "control": str}
_DESIGN_KEYS = ("methods", "datasets", "backbones", "seeds")
_DESIGN_OPTIONAL = ("plan", "only", "exclude")
PLANS = ("full", "one-at-a-time")
_FACTOR_NAMES = ("method", "dataset", "backbone")


@dataclass
class Suite:
    path: Path
    name: str
    version: int
    description: str
    control: str
    methods: list[str]
    datasets: list[str]
    backbones: list[str]
    seeds: list[int]
    train: dict[str, Any] = field(default_factory=dict)
    method_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    backbone_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)  # the whole parsed file
    axes: list = field(default_factory=list)  # [axes.AxisUse] in file order
    plan: str = "full"
    only: list[dict[str, Any]] = field(default_factory=list)
    exclude: list[dict[str, Any]] = field(default_factory=list)
    tuning: Any = None  # tuning.TuningSpec, or None (no tuning: the configured values are evaluated as they are)

    @property
    def axis_names(self) -> list[str]:
        return [a.name for a in self.axes]


def find_suite(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.exists():
            raise SuiteError(f"{p}: no such suite file")
        return p
    for d in SUITE_DIRS:
        candidate = d / f"{name_or_path}.toml"
        if candidate.exists():
            return candidate
    known = sorted({q.stem for d in SUITE_DIRS if d.is_dir() for q in d.glob("*.toml")})
    raise SuiteError(f"unknown suite {name_or_path!r}; named suites: {', '.join(known) or 'none'} "
                     f"(or give a path to a .toml file)")


class _Checker:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, problem: str) -> None:
        raise SuiteError(f"{self.path}: {where}: {problem}")

    def keys(self, where: str, table: Any, allowed: dict | tuple | list) -> None:
        if not isinstance(table, dict):
            self.fail(where, f"expected a table, got {type(table).__name__}")
        for k in table:
            if k not in allowed:
                self.fail(f"{where}.{k}", f"unknown key; allowed: {', '.join(allowed)}")

    def names(self, where: str, value: Any, registry) -> list[str]:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            self.fail(where, "expected a non-empty list of names")
        for v in value:
            if v not in registry:
                self.fail(where, f"unknown {registry.kind[:-1]} {v!r}; allowed: {', '.join(registry.names())}")
        if len(set(value)) != len(value):
            self.fail(where, "contains duplicates")
        return list(value)

    def train_field(self, where: str, key: str, value: Any) -> None:
        check_field(self, where, key, value, TRAIN_FIELDS[key])

    def option(self, where: str, key: str, value: Any, card: Card) -> None:
        allowed = card.options[key]
        if isinstance(allowed, tuple):
            if value not in allowed:
                self.fail(where, f"{value!r} is not allowed; allowed: {', '.join(map(repr, allowed))}")
        elif not type_ok(value, allowed):
            self.fail(where, f"expected {allowed.__name__}, got {type(value).__name__} {value!r}")


def check_field(checker: _Checker, where: str, key: str, value: Any, spec: Field) -> None:
    if not type_ok(value, spec.kind):
        kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
        names = " or ".join(k.__name__ for k in kinds if k is not type(None))
        checker.fail(where, f"expected {names}, got {type(value).__name__} {value!r}")
    if spec.allowed is not None and value not in spec.allowed:
        checker.fail(where, f"{value!r} is not allowed; allowed: {', '.join(spec.allowed)}")
    if spec.check is not None and not spec.check(value):
        checker.fail(where, f"{value!r} is out of range; expected {spec.check_doc}")


def validate_settings(ck: _Checker, where: str, table: dict, card: Card | None, extra: tuple = ()) -> None:
    """Training fields plus, where a card is given, that card's options."""
    if not isinstance(table, dict):
        ck.fail(where, f"expected a table, got {type(table).__name__}")
    options = card.options if card else {}
    for k, v in table.items():
        if k in TRAIN_FIELDS:
            ck.train_field(f"{where}.{k}", k, v)
        elif k in options:
            ck.option(f"{where}.{k}", k, v, card)
        elif k not in extra:
            allowed = list(TRAIN_FIELDS) + list(options) + list(extra)
            ck.fail(f"{where}.{k}", f"unknown key; allowed: {', '.join(allowed)}")


EXTRA_SECTIONS: dict[str, str] = {}  # sections added by later capabilities (axes, tuning), validated there


def load(name_or_path: str) -> Suite:
    path = find_suite(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: not valid TOML: {exc}") from None
    ck = _Checker(path)
    ck.keys("file", raw, list(_SECTIONS) + list(EXTRA_SECTIONS))
    head = raw.get("suite", {})
    ck.keys("[suite]", head, _SUITE_KEYS)
    for k, kind in _SUITE_KEYS.items():
        if k in head and not type_ok(head[k], kind):
            ck.fail(f"[suite].{k}", f"expected {kind.__name__}, got {type(head[k]).__name__}")
    for k in ("name", "version"):
        if k not in head:
            ck.fail(f"[suite].{k}", "missing (required)")
    if head["version"] < 1:
        ck.fail("[suite].version", "expected a positive integer")

    design = raw.get("design", {})
    ck.keys("[design]", design, _DESIGN_KEYS + _DESIGN_OPTIONAL)
    for k in _DESIGN_KEYS:
        if k not in design:
            ck.fail(f"[design].{k}", "missing (required)")
    methods = ck.names("[design].methods", design["methods"], METHODS)
    datasets = ck.names("[design].datasets", design["datasets"], DATASETS)
    backbones = ck.names("[design].backbones", design["backbones"], BACKBONES)
    seeds = design["seeds"]
    if (not isinstance(seeds, list) or not seeds or
            not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        ck.fail("[design].seeds", "expected a non-empty list of non-negative integers")
    if len(set(seeds)) != len(seeds):
        ck.fail("[design].seeds", "contains duplicates")

    train = raw.get("train", {})
    validate_settings(ck, "[train]", train, None)

    def per_name(section: str, allowed_names: list[str], check) -> dict[str, dict]:
        table = raw.get(section, {})
        if not isinstance(table, dict):
            ck.fail(f"[{section}]", "expected a table")
        for name, settings in table.items():
            if name not in allowed_names:
                ck.fail(f"[{section}.{name!r}]", f"not in [design].{section}; allowed: {', '.join(allowed_names)}")
            check(f'[{section}."{name}"]', name, settings)
        return table

    method_settings = per_name("methods", methods, lambda w, n, s: validate_settings(ck, w, s, METHODS.get(n).card))
    backbone_options = per_name("backbones", backbones, lambda w, n, s: _check_backbone(ck, w, s, BACKBONES.get(n).card))
    dataset_settings = per_name("datasets", datasets, lambda w, n, s: validate_settings(ck, w, s, None, ("root",)))

    axes = _parse_axes(ck, raw.get("axes", {}), methods, backbones)
    plan = design.get("plan", "full")
    if plan not in PLANS:
        ck.fail("[design].plan", f"{plan!r} is not allowed; allowed: {', '.join(PLANS)}")
    lists = {"method": methods, "dataset": datasets, "backbone": backbones, **{a.name: a.levels for a in axes}}
    only = _parse_matches(ck, "[design].only", design.get("only", []), lists)
    exclude = _parse_matches(ck, "[design].exclude", design.get("exclude", []), lists)

    tuning = None
    if "tuning" in raw:
        from ffbench.tuning import parse_tuning

        tuning = parse_tuning(ck, raw["tuning"], methods, backbones, list(seeds))

    control = head.get("control", "bp")
    return Suite(path=path, name=head["name"], version=head["version"], description=head.get("description", ""),
                 control=control, methods=methods, datasets=datasets, backbones=backbones, seeds=list(seeds),
                 train=train, method_settings=method_settings, backbone_options=backbone_options,
                 dataset_settings=dataset_settings, raw=raw, axes=axes, plan=plan, only=only, exclude=exclude,
                 tuning=tuning)


_GENERIC_KEYS = {"method_option": "method", "backbone_option": "backbone", "train_field": "train"}


def _parse_axes(ck: _Checker, table: Any, methods: list[str], backbones: list[str]) -> list:
    """[axes]: registered axes with their levels, or generic ones declared in the file."""
    from ffbench import axes as ax
    from ffbench.registry import AXES

    if not isinstance(table, dict):
        ck.fail("[axes]", f"expected a table, got {type(table).__name__}")
    out = []
    for name, spec in table.items():
        where = f"[axes].{name}"
        if name in _FACTOR_NAMES:
            ck.fail(where, f"{name!r} is a design factor, not an axis; choose another name")
        if isinstance(spec, list):
            spec = {"levels": spec}
        if not isinstance(spec, dict):
            ck.fail(where, "expected a list of levels, or a table with `levels` (and for a generic axis "
                           "method_option / backbone_option / train_field)")
        ck.keys(where, spec, ["levels", *_GENERIC_KEYS])
        generic = [k for k in _GENERIC_KEYS if k in spec]
        if len(generic) > 1:
            ck.fail(where, f"give one of {', '.join(_GENERIC_KEYS)}, not {', '.join(generic)}")
        if generic:
            kind, key = generic[0], spec[generic[0]]
            if name in AXES:
                ck.fail(where, f"{name!r} is a registered axis; give a generic axis another name "
                               f"(registered: {', '.join(AXES.names())})")
            if not isinstance(key, str):
                ck.fail(f"{where}.{kind}", "expected the name of an option or field")
            target = _GENERIC_KEYS[kind]
            if target == "train" and key not in TRAIN_FIELDS:
                ck.fail(f"{where}.{kind}", f"unknown training field {key!r}; allowed: {', '.join(TRAIN_FIELDS)}")
            if target != "train":
                reg, names = (METHODS, methods) if target == "method" else (BACKBONES, backbones)
                if not any(key in reg.get(n).card.options for n in names):
                    having = [c.name for c in reg.list() if key in c.options]
                    ck.fail(f"{where}.{kind}", f"no {target} in [design].{target}s has the option {key!r} "
                                               f"({target}s with it: {', '.join(having) or 'none'})")
            axis = ax.generic(name, target, key)
        else:
            if name not in AXES:
                ck.fail(where, f"unknown axis; registered: {', '.join(AXES.names())} (or declare a generic one "
                               f"as a table with method_option, backbone_option or train_field, and levels)")
            axis = ax.get(name)
        if "levels" not in spec:
            ck.fail(f"{where}.levels", "missing (required)")
        levels = spec["levels"]
        if not isinstance(levels, list) or not levels:
            ck.fail(f"{where}.levels" if generic else where, "expected a non-empty list of levels")
        seen = set()
        for i, level in enumerate(levels):
            problem = axis.level_problem(level)
            if problem is None and axis.target == "train" and axis.value(level) is not None:
                spec_field = TRAIN_FIELDS[axis.keys[0]]
                try:
                    check_field(ck, where, axis.keys[0], axis.value(level), spec_field)
                except SuiteError as exc:
                    problem = str(exc).split(": ", 2)[-1]
            if problem:
                ck.fail(where, problem)
            key = canonical_json(level)
            if key in seen:
                ck.fail(where, f"level {level!r} is given twice")
            seen.add(key)
        pairs = [(m, b) for m in methods for b in backbones if axis.option_of(m, b) is not None]
        if not pairs:
            ck.fail(where, f"applies to none of the suite's methods / backbones (it sets {axis.target} "
                           f"{' / '.join(axis.keys)}); check [design].methods and [design].backbones")
        if axis.target != "train":
            for level in levels:
                value = axis.value(level)
                allowed = [axis.allowed_by(m, b) for m, b in pairs]
                if not any(value in a if isinstance(a, tuple) else type_ok(value, a) for a in allowed):
                    union = []
                    for a in allowed:
                        for v in (a if isinstance(a, tuple) else (getattr(a, "__name__", str(a)),)):
                            if v not in union:
                                union.append(v)
                    owners = sorted({m if axis.target == "method" else b for m, b in pairs})
                    ck.fail(where, f"{level!r} is not allowed by any of {', '.join(owners)}; allowed: "
                                   f"{', '.join(map(repr, union))}")
        out.append(ax.AxisUse(axis, list(levels)))
    return out


def _parse_matches(ck: _Checker, where: str, value: Any, lists: dict[str, list]) -> list[dict[str, Any]]:
    """[design].only / exclude: a list of tables naming a level (or method / dataset / backbone) per key."""
    if not isinstance(value, list) or not all(isinstance(v, dict) and v for v in value):
        ck.fail(where, "expected a list of non-empty tables, e.g. [{granularity = \"block\", bn = \"none\"}]")
    for i, entry in enumerate(value):
        for k, v in entry.items():
            if k not in lists:
                ck.fail(f"{where}[{i}].{k}", f"unknown factor; allowed: {', '.join(lists)}")
            if canonical_json(v) not in {canonical_json(x) for x in lists[k]}:
                ck.fail(f"{where}[{i}].{k}", f"{v!r} is not a declared level; allowed: {', '.join(map(repr, lists[k]))}")
    return value


def _check_backbone(ck: _Checker, where: str, table: dict, card: Card) -> None:
    ck.keys(where, table, card.options)
    for k, v in table.items():
        ck.option(f"{where}.{k}", k, v, card)
