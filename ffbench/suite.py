"""Suite files: load the TOML, validate every field, and say what is wrong where.

A suite file (``suites/<name>.toml``)::

    [suite]                 name, version (an integer, bump it when results must not mix), description,
                            control (the method others are compared with; default "bp")
    [design]                methods, datasets, backbones (lists of registered names), seeds (evaluation seeds)
    [train]                 training fields shared by every run (the equal budget: epochs, batch_size, ...)
    [methods."<name>"]      per method: training fields and method options
    [backbones."<name>"]    per backbone: backbone options
    [datasets."<name>"]     per dataset: root, and training fields for that dataset

Later sections win: ffbench defaults < the method card's defaults < [train] < [datasets.X] < [methods.X].
Every error names the file, the field and the allowed values, and is raised before anything trains.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffbench.config import TRAIN_FIELDS, Field, type_ok
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
}
_SUITE_KEYS = {"name": str, "version": int, "description": str, "control": str}
_DESIGN_KEYS = ("methods", "datasets", "backbones", "seeds")


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
    raw: dict[str, Any] = field(default_factory=dict)  # the whole parsed file, for later sections (axes, tuning)


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
    ck.keys("[design]", design, _DESIGN_KEYS)
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

    control = head.get("control", "bp")
    return Suite(path=path, name=head["name"], version=head["version"], description=head.get("description", ""),
                 control=control, methods=methods, datasets=datasets, backbones=backbones, seeds=list(seeds),
                 train=train, method_settings=method_settings, backbone_options=backbone_options,
                 dataset_settings=dataset_settings, raw=raw)


def _check_backbone(ck: _Checker, where: str, table: dict, card: Card) -> None:
    ck.keys(where, table, card.options)
    for k, v in table.items():
        ck.option(f"{where}.{k}", k, v, card)
