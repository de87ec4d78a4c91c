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
    [transfer]              the source task of the runs that set ``adapt`` (dataset or "imagenet", classes,
                            epochs, method, training fields); or [transfer."<target dataset>"] per target;
                            optional (see ``transfer.py``)

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

import difflib
import inspect
import math
import os
import re
import stat
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffbench.core.config import (
    DATASET_SIZES,
    IMAGE_SIZE,
    RESERVED_NAMES,
    RESERVED_PREFIXES,
    TRAIN_FIELDS,
    SplitError,
    canonical_json,
    class_problem,
    split_sizes,
)
from ffbench.core.options import Option, type_ok
from ffbench.core.registry import BACKBONES, DATASETS, METHODS, Card
from ffbench.plan.tuning import REPEAT_SEED_STRIDE, TuningSpec


class SuiteError(ValueError):
    pass


SUITE_DIRS = [Path.cwd() / "suites", Path(__file__).resolve().parent.parent / "suites"]

_SECTIONS = {
    "suite": "name, version, description, control, batch_seeds",
    "design": "methods, datasets, backbones, seeds",
    "train": "training fields",
    "methods": "per-method settings",
    "backbones": "per-backbone options",
    "datasets": "per-dataset settings",
    "axes": "ablation axes and their levels",
    "tuning": "Optuna tuning: trials, seeds, sampler, pruner, space",
    "transfer": "the source task runs with adapt set start from: dataset (or imagenet), classes, epochs, method",
}
_SUITE_KEYS = {"name": str, "version": int, "description": str, "control": str, "batch_seeds": (str, bool)}
BATCH_SEEDS = ("auto", True, False)  # train a cell's pending seeds as one stacked model (ffbench.training.batched)
_DESIGN_KEYS = ("methods", "datasets", "backbones", "seeds")
_DESIGN_OPTIONAL = ("plan", "only", "exclude")
PLANS = ("full", "one-at-a-time")
# A suite's name is its default output folder (ffbench-out/<name>) and its MLflow experiment: a plain name, so
# it cannot point outside ffbench-out/.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
NAME_RULE = "letters, digits, '.', '-' and '_' (1 to 100 characters, not '.' or '..')"
# Axis names and the design's registered names become MLflow keys (tags, params) and parts of file names: what
# MLflow accepts in a key, without '/', and not starting with '.' (so never '.' or '..').
_KEY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_. -]{0,99}")
KEY_RULE = (
    "letters, digits, '_', '-', '.' and spaces, starting with a letter, digit or '_' (1 to 100 characters; "
    "it becomes an MLflow key and part of file names)"
)
INT_MAX = 2**31 - 1  # seeds and versions: stored as integers by SQLite, PostgreSQL, Optuna and numpy alike
MAX_DESCRIPTION = 5000  # [suite].description is the MLflow experiment's description tag
MAX_TRIALS = 10_000  # [tuning].trials per method per cell
SUITE_MAX_BYTES = 1_000_000  # a suite file is read whole: a few KB in practice
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
    tuning: TuningSpec | None = None  # None (no tuning: the configured values are evaluated as they are)
    # [transfer]: the source task per target dataset ("*": every target); None: no run adapts
    transfer: dict[str, dict[str, Any]] | None = None
    warnings: list[str] = field(default_factory=list)  # said at planning; the suite is usable as it is
    batch_seeds: str | bool = "auto"  # [suite].batch_seeds: train a cell's seeds together (ffbench.training.batched)

    @property
    def axis_names(self) -> list[str]:
        return [a.name for a in self.axes]


def did_you_mean(word: Any, choices) -> str:
    """' (did you mean 'x'?)' for the closest of ``choices`` to a mistyped ``word``, else ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def find_suite(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.is_file():
        if not p.exists():
            raise SuiteError(f"{p}: no such suite file")
        return p
    for d in SUITE_DIRS:
        candidate = d / f"{name_or_path}.toml"
        if candidate.exists():
            return candidate
    known = sorted({q.stem for d in SUITE_DIRS if d.is_dir() for q in d.glob("*.toml")})
    raise SuiteError(
        f"unknown suite {name_or_path!r}{did_you_mean(name_or_path, known)}; named suites: "
        f"{', '.join(known) or 'none'} (or give a path to a .toml file)"
    )


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
                self.fail(f"{where}.{k}", f"unknown key{did_you_mean(k, allowed)}; allowed: {', '.join(allowed)}")

    def names(self, where: str, value: Any, registry) -> list[str]:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            self.fail(where, "expected a non-empty list of names")
        for v in value:
            if v not in registry:
                why = f"; plugins that failed to load: {'; '.join(registry.failures)}" if registry.failures else ""
                self.fail(
                    where,
                    f"unknown {registry.kind[:-1]} {v!r}{did_you_mean(v, registry.names())}; allowed: "
                    f"{', '.join(registry.names())}{why}",
                )
        if len(set(value)) != len(value):
            self.fail(where, "contains duplicates")
        for v in value:
            self.key_name(where, v)
        return list(value)

    def key_name(self, where: str, name: str) -> None:
        """A name that becomes an MLflow key and part of file names."""
        if not isinstance(name, str) or not _KEY_NAME.fullmatch(name):
            self.fail(where, f"{name!r} is not allowed as a name; allowed: {KEY_RULE}")

    def seeds(self, where: str, seeds: Any) -> None:
        if (
            not isinstance(seeds, list)
            or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= INT_MAX for s in seeds)
        ):
            self.fail(where, f"expected a non-empty list of integers in 0..{INT_MAX}")
        if len(set(seeds)) != len(seeds):
            self.fail(where, "contains duplicates")

    def value(self, where: str, value: Any, spec: Option) -> None:
        why = spec.problem(value)
        if why:
            self.fail(where, why)


def validate_settings(ck: _Checker, where: str, table: dict, card: Card | None, extra: tuple = ()) -> None:
    """Training fields plus, where a card is given, that card's options."""
    if not isinstance(table, dict):
        ck.fail(where, f"expected a table, got {type(table).__name__}")
    options = card.options if card else {}
    for k, v in table.items():
        if k in TRAIN_FIELDS:
            ck.value(f"{where}.{k}", v, TRAIN_FIELDS[k])
        elif k in options:
            ck.value(f"{where}.{k}", v, options[k])
        elif k not in extra:
            allowed = list(TRAIN_FIELDS) + list(options) + list(extra)
            ck.fail(f"{where}.{k}", f"unknown key{did_you_mean(k, allowed)}; allowed: {', '.join(allowed)}")


EXTRA_SECTIONS: dict[str, str] = {}  # sections added by later capabilities (axes, tuning), validated there


def read_text(path: Path) -> str:
    """The suite file's text; a SuiteError saying why it cannot be read (a folder, a device, a pipe, too large,
    no permission, not UTF-8). Opened without blocking (a FIFO would wait for a writer) and read as a regular
    file of at most SUITE_MAX_BYTES (a link to /dev/zero never ends)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError
            if not stat.S_ISREG(mode):
                kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a device or socket"
                raise SuiteError(f"{path}: is {kind}, not a regular file; a suite file is a .toml file on disk")
            data = f.read(SUITE_MAX_BYTES + 1)
        if len(data) > SUITE_MAX_BYTES:
            raise SuiteError(
                f"{path}: larger than {SUITE_MAX_BYTES:,} bytes; allowed: a suite file of at most "
                f"{SUITE_MAX_BYTES // 1_000_000} MB"
            )
        return data.decode("utf-8")
    except IsADirectoryError:
        raise SuiteError(f"{path}: is a folder, not a suite file; give the path of a .toml file") from None
    except UnicodeDecodeError as exc:
        raise SuiteError(
            f"{path}: not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x}); a suite "
            f"file is TOML, saved as UTF-8"
        ) from None
    except OSError as exc:
        raise SuiteError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def load(name_or_path: str) -> Suite:
    path = find_suite(name_or_path)
    text = read_text(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise SuiteError(
            f"{path}: not valid TOML for ffbench: arrays or tables nested too deeply to read; a suite "
            f"file nests a few levels at most"
        ) from None
    ck = _Checker(path)
    ck.keys("file", raw, list(_SECTIONS) + list(EXTRA_SECTIONS))
    head = raw.get("suite", {})
    ck.keys("[suite]", head, _SUITE_KEYS)
    for k, kind in _SUITE_KEYS.items():
        if k in head and not type_ok(head[k], kind):
            ck.fail(
                f"[suite].{k}",
                f"expected {getattr(kind, '__name__', 'a string or a boolean')}, got {type(head[k]).__name__}",
            )
    for k in ("name", "version"):
        if k not in head:
            ck.fail(f"[suite].{k}", "missing (required)")
    if not 1 <= head["version"] <= INT_MAX:
        ck.fail("[suite].version", f"{head['version']} is out of range; allowed: an integer in 1..{INT_MAX}")
    if len(head.get("description", "")) > MAX_DESCRIPTION:
        ck.fail(
            "[suite].description",
            f"{len(head['description']):,} characters; allowed: at most "
            f"{MAX_DESCRIPTION:,} (it is the MLflow experiment's description)",
        )
    if not _PLAIN_NAME.fullmatch(head["name"]) or head["name"] in (".", ".."):
        ck.fail(
            "[suite].name",
            f"{head['name']!r} is not a plain name; allowed: {NAME_RULE} (the name is the "
            f"default output folder ffbench-out/<name>)",
        )

    design = raw.get("design", {})
    ck.keys("[design]", design, _DESIGN_KEYS + _DESIGN_OPTIONAL)
    for k in _DESIGN_KEYS:
        if k not in design:
            ck.fail(f"[design].{k}", "missing (required)")
    methods = ck.names("[design].methods", design["methods"], METHODS)
    datasets = ck.names("[design].datasets", design["datasets"], DATASETS)
    backbones = ck.names("[design].backbones", design["backbones"], BACKBONES)
    seeds = design["seeds"]
    ck.seeds("[design].seeds", seeds)

    train = raw.get("train", {})
    validate_settings(ck, "[train]", train, None)

    warnings: list[str] = []

    def per_name(section: str, allowed_names: list[str], registry, check) -> dict[str, dict]:
        """A section per name; one for a registered name the design leaves out is unused (a warning: a
        suite can switch a method off without deleting its settings), an unregistered name is an error."""
        table = raw.get(section, {})
        if not isinstance(table, dict):
            ck.fail(f"[{section}]", "expected a table")
        used = {}
        for name, settings in table.items():
            if name not in allowed_names:
                if name in registry:
                    warnings.append(
                        f"{path}: [{section}.{name!r}] is not used: {name!r} is not in [design].{section} "
                        f"({', '.join(allowed_names)})"
                    )
                    continue
                ck.fail(
                    f"[{section}.{name!r}]",
                    f"not in [design].{section}{did_you_mean(name, allowed_names)}; "
                    f"allowed: {', '.join(allowed_names)}",
                )
            check(f'[{section}."{name}"]', name, settings)
            used[name] = settings
        return used

    method_settings = per_name(
        "methods", methods, METHODS, lambda w, n, s: validate_settings(ck, w, s, METHODS.get(n).card)
    )
    backbone_options = per_name(
        "backbones", backbones, BACKBONES, lambda w, n, s: _check_backbone(ck, w, s, BACKBONES.get(n).card)
    )
    dataset_settings = per_name("datasets", datasets, DATASETS, lambda w, n, s: _check_dataset(ck, w, n, s))

    axes = _parse_axes(ck, raw.get("axes", {}), methods, backbones)
    plan = design.get("plan", "full")
    if plan not in PLANS:
        ck.fail("[design].plan", f"{plan!r} is not allowed; allowed: {', '.join(PLANS)}")
    lists = {"method": methods, "dataset": datasets, "backbone": backbones, **{a.name: a.levels for a in axes}}
    only = _parse_matches(ck, "[design].only", design.get("only", []), lists)
    exclude = _parse_matches(ck, "[design].exclude", design.get("exclude", []), lists)

    tuning = None
    if "tuning" in raw:
        tuning = _parse_tuning(ck, raw["tuning"], methods, backbones, list(seeds))

    transfer = _parse_transfers(ck, raw["transfer"], datasets) if "transfer" in raw else None

    batch_seeds = head.get("batch_seeds", "auto")
    if batch_seeds not in BATCH_SEEDS or (isinstance(batch_seeds, int) and not isinstance(batch_seeds, bool)):
        ck.fail(
            "[suite].batch_seeds",
            f'{batch_seeds!r}; allowed: "auto" (batch where the cell allows), true '
            f"(batch even where auto would not), false (one seed at a time)",
        )
    control = head.get("control", "bp")  # the default may be absent from the suite: the report says so
    if "control" in head and control not in methods:
        ck.fail("[suite].control", f"{control!r} is not one of [design].methods; allowed: {', '.join(methods)}")
    return Suite(
        path=path,
        name=head["name"],
        version=head["version"],
        description=head.get("description", ""),
        control=control,
        methods=methods,
        datasets=datasets,
        backbones=backbones,
        seeds=list(seeds),
        train=train,
        method_settings=method_settings,
        backbone_options=backbone_options,
        dataset_settings=dataset_settings,
        raw=raw,
        axes=axes,
        plan=plan,
        only=only,
        exclude=exclude,
        tuning=tuning,
        transfer=transfer,
        warnings=warnings,
        batch_seeds=batch_seeds,
    )


_GENERIC_KEYS = {"method_option": "method", "backbone_option": "backbone", "train_field": "train"}


def _parse_axes(ck: _Checker, table: Any, methods: list[str], backbones: list[str]) -> list:
    """[axes]: registered axes with their levels, or generic ones declared in the file."""
    from ffbench.core.registry import AXES
    from ffbench.plan import axes as ax

    if not isinstance(table, dict):
        ck.fail("[axes]", f"expected a table, got {type(table).__name__}")
    out = []
    for name, spec in table.items():
        where = f"[axes].{name}"
        if name in _FACTOR_NAMES:
            ck.fail(where, f"{name!r} is a design factor, not an axis; choose another name")
        ck.key_name("[axes]", name)
        if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
            ck.fail(
                where,
                f"{name!r} is reserved (a column of the run table, results.csv or the MLflow tags); "
                f"choose another name; reserved: {', '.join(RESERVED_NAMES)}, and names starting with "
                f"{', '.join(RESERVED_PREFIXES)}",
            )
        if isinstance(spec, list):
            spec = {"levels": spec}
        if not isinstance(spec, dict):
            ck.fail(
                where,
                "expected a list of levels, or a table with `levels` (and for a generic axis "
                "method_option / backbone_option / train_field)",
            )
        ck.keys(where, spec, ["levels", *_GENERIC_KEYS])
        generic = [k for k in _GENERIC_KEYS if k in spec]
        if len(generic) > 1:
            ck.fail(where, f"give one of {', '.join(_GENERIC_KEYS)}, not {', '.join(generic)}")
        if generic:
            kind, key = generic[0], spec[generic[0]]
            if name in AXES:
                ck.fail(
                    where,
                    f"{name!r} is a registered axis; give a generic axis another name "
                    f"(registered: {', '.join(AXES.names())})",
                )
            if not isinstance(key, str):
                ck.fail(f"{where}.{kind}", "expected the name of an option or field")
            target = _GENERIC_KEYS[kind]
            if target == "train" and key not in TRAIN_FIELDS:
                ck.fail(f"{where}.{kind}", f"unknown training field {key!r}; allowed: {', '.join(TRAIN_FIELDS)}")
            if target != "train":
                reg, names = (METHODS, methods) if target == "method" else (BACKBONES, backbones)
                if not any(key in reg.get(n).card.options for n in names):
                    having = [c.name for c in reg.list() if key in c.options]
                    ck.fail(
                        f"{where}.{kind}",
                        f"no {target} in [design].{target}s has the option {key!r} "
                        f"({target}s with it: {', '.join(having) or 'none'})",
                    )
            axis = ax.generic(name, target, key)
        else:
            if name not in AXES:
                ck.fail(
                    where,
                    f"unknown axis{did_you_mean(name, AXES.names())}; registered: {', '.join(AXES.names())} (or declare a generic one "
                    f"as a table with method_option, backbone_option or train_field, and levels)",
                )
            axis = ax.get(name)
        if "levels" not in spec:
            ck.fail(f"{where}.levels", "missing (required)")
        levels = spec["levels"]
        if not isinstance(levels, list) or not levels:
            ck.fail(f"{where}.levels" if generic else where, "expected a non-empty list of levels")
        seen = set()
        for level in levels:
            problem = axis.level_problem(level)
            if problem is None and axis.target == "train":
                problem = TRAIN_FIELDS[axis.keys[0]].problem(axis.value(level))
            if problem:
                ck.fail(where, problem)
            key = canonical_json(level)
            if key in seen:
                ck.fail(where, f"level {level!r} is given twice")
            seen.add(key)
        pairs = [(m, b) for m in methods for b in backbones if axis.option_of(m, b) is not None]
        if not pairs:
            ck.fail(
                where,
                f"applies to none of the suite's methods / backbones (it sets {axis.target} "
                f"{' / '.join(axis.keys)}); check [design].methods and [design].backbones",
            )
        if axis.target != "train":
            for level in levels:
                value = axis.value(level)
                allowed = [axis.allowed_by(m, b) for m, b in pairs]
                if all(a.problem(value) for a in allowed):
                    union = list(dict.fromkeys(repr(c) for a in allowed for c in (a.choices or ())))
                    union += list(dict.fromkeys(a.describe() for a in allowed if a.choices is None))
                    owners = sorted({m if axis.target == "method" else b for m, b in pairs})
                    ck.fail(
                        where, f"{level!r} is not allowed by any of {', '.join(owners)}; allowed: {', '.join(union)}"
                    )
        out.append(ax.AxisUse(axis, list(levels)))
    return out


def _parse_matches(ck: _Checker, where: str, value: Any, lists: dict[str, list]) -> list[dict[str, Any]]:
    """[design].only / exclude: a list of tables naming a level (or method / dataset / backbone) per key."""
    if not isinstance(value, list) or not all(isinstance(v, dict) and v for v in value):
        ck.fail(where, 'expected a list of non-empty tables, e.g. [{granularity = "block", bn = "none"}]')
    for i, entry in enumerate(value):
        for k, v in entry.items():
            if k not in lists:
                ck.fail(f"{where}[{i}].{k}", f"unknown factor; allowed: {', '.join(lists)}")
            if canonical_json(v) not in {canonical_json(x) for x in lists[k]}:
                ck.fail(
                    f"{where}[{i}].{k}", f"{v!r} is not a declared level; allowed: {', '.join(map(repr, lists[k]))}"
                )
    return value


SOURCE_IMAGENET = "imagenet"  # torchvision's ImageNet weights of a torchvision backbone (online)
# what [transfer] says besides training fields of the source stage (lr, batch_size, ...)
_TRANSFER_KEYS = ("dataset", "classes", "epochs", "method", "root")
_NOT_FOR_SOURCE = ("adapt", "adapt_units", "keep_classes", "classes", "train_subset", "epochs")


def _parse_transfers(ck: _Checker, table: Any, datasets: list[str]) -> dict[str, dict[str, Any]]:
    """[transfer] (one source for every target dataset) or [transfer.<target dataset>] (one per target)."""
    if (
        isinstance(table, dict)
        and table
        and "dataset" not in table
        and all(isinstance(v, dict) for v in table.values())
    ):
        for target in table:
            if target not in datasets:
                ck.fail(
                    f"[transfer.{target}]",
                    f"not in [design].datasets{did_you_mean(target, datasets)}; allowed: {', '.join(datasets)}",
                )
        return {target: _parse_transfer(ck, spec, f"[transfer.{target}]") for target, spec in table.items()}
    return {"*": _parse_transfer(ck, table, "[transfer]")}


def _parse_transfer(ck: _Checker, table: Any, where: str) -> dict[str, Any]:
    """A source task: a dataset with optional classes, an epoch budget, and the method that pretrains ("same"
    as the run's, or one named), or dataset = "imagenet" (torchvision weights)."""
    if not isinstance(table, dict):
        ck.fail(where, f"expected a table, got {type(table).__name__}")
    if "dataset" not in table:
        ck.fail(
            f"{where}.dataset", f"missing (required): a dataset ({', '.join(DATASETS.names())}) or {SOURCE_IMAGENET!r}"
        )
    dataset = table["dataset"]
    if dataset != SOURCE_IMAGENET:
        ck.names(f"{where}.dataset", [dataset], DATASETS)
        if "epochs" not in table:
            ck.fail(f"{where}.epochs", "missing (required): the source stage's epoch budget")
    method = table.get("method", "same")
    if method != "same" and method not in METHODS:
        ck.fail(
            f"{where}.method",
            f"unknown method {method!r}{did_you_mean(method, METHODS.names())}; allowed: "
            f"same (each method pretrains its own backbone), {', '.join(METHODS.names())}",
        )
    for k, v in table.items():
        if k in ("dataset", "method", "root"):
            if not isinstance(v, str):
                ck.fail(f"{where}.{k}", f"expected a string, got {type(v).__name__}")
            if k == "root" and table.get("dataset") != SOURCE_IMAGENET:
                table[k] = _data_root(ck, f"{where}.root", table["dataset"], v)
        elif k == "classes":
            ck.value(f"{where}.classes", v, TRAIN_FIELDS["keep_classes"])
        elif k == "epochs":
            ck.value(f"{where}.epochs", v, TRAIN_FIELDS["epochs"])
        elif k in _NOT_FOR_SOURCE or k not in TRAIN_FIELDS:
            allowed = list(_TRANSFER_KEYS) + [f for f in TRAIN_FIELDS if f not in _NOT_FOR_SOURCE]
            ck.fail(f"{where}.{k}", f"unknown key{did_you_mean(k, allowed)}; allowed: {', '.join(allowed)}")
        else:
            ck.value(f"{where}.{k}", v, TRAIN_FIELDS[k])
    return {**table, "method": method}


def _check_dataset(ck: _Checker, where: str, name: str, table: Any) -> None:
    """[datasets.X]: training fields, and a root that is a folder which exists."""
    validate_settings(ck, where, table, None, ("root",))
    if "root" in table:
        table["root"] = _data_root(ck, f"{where}.root", name, table["root"])


def _data_root(ck: _Checker, where: str, name: str, root: Any) -> str:
    """A dataset root as the runs use it: relative to the suite file's folder (never the current folder, so a
    suite means the same data wherever it is run from), absolute, and an existing folder; refused on a dataset
    that reads no files (bundled or generated)."""
    from ffbench.data.datasets import DataError, check_root, reads_files

    if name in DATASETS and not reads_files(name):
        ck.fail(
            where,
            f"dataset {name!r} reads no files (it is bundled or generated), so a root would be ignored; "
            f"allowed: no root",
        )
    if isinstance(root, str) and root:
        root = str((ck.path.resolve().parent / Path(root).expanduser()).resolve())
    try:
        check_root(name, root)
    except DataError as exc:
        ck.fail(
            where,
            f"{exc}; allowed: the path of a folder that exists (a string; relative paths are from the "
            f"suite file's folder)",
        )
    return root


def check_cells(suite: Suite, cells: list) -> None:
    """The resolved configuration of every cell against its dataset's size, before any run is claimed.

    ``cells``: the design's cells (anything with ``config``, ``factors`` and ``label``). The sizes come from
    the dataset card's ``defaults`` (num_classes, n_train); a dataset card without them is loaded (once per
    process, as ``datasets.verify`` does). The rule is ``config.split_sizes``, which ``data.prepare`` applies
    again to the loaded data. Raises SuiteError naming the file, the field where the value was set, and
    what is allowed.
    """
    sizes: dict[tuple, dict[str, int]] = {}
    for cell in cells:
        c = cell.config
        root = c.dataset_options.get("root")
        key = (c.dataset, root)
        if key not in sizes:
            sizes[key] = _dataset_sizes(c.dataset, root)
        n_train, k = sizes[key]["n_train"], sizes[key]["num_classes"]
        kept = c.classes
        if c.keep_classes is not None and c.classes is not None:
            raise SuiteError(
                f"{suite.path}: {_where_set(suite, cell, 'keep_classes')} and "
                f"{_where_set(suite, cell, 'classes')} are both set (cell {cell.label}); allowed: one of "
                f"them (keep_classes: exactly these labels; classes: this many, drawn per seed)"
            )
        if c.keep_classes is not None:
            why = class_problem(c.keep_classes, k, c.dataset)
            if why:
                raise SuiteError(f"{suite.path}: {_where_set(suite, cell, 'keep_classes')}: {why} (cell {cell.label})")
            kept = len(c.keep_classes)
        if kept is not None and kept <= k:
            n_train = n_train * kept // k  # the kept classes' share (balanced classes assumed)
        try:
            split_sizes(c.val_size, c.train_subset, kept, n_train=n_train, num_classes=k, dataset=c.dataset)
        except SplitError as exc:
            raise SuiteError(f"{suite.path}: {_where_set(suite, cell, exc.field)}: {exc} (cell {cell.label})") from None
        side = sizes[key].get(IMAGE_SIZE)
        if side is not None and c.crop_padding > side:
            raise SuiteError(
                f"{suite.path}: {_where_set(suite, cell, 'crop_padding')}: crop_padding = "
                f"{c.crop_padding} exceeds the {side}-pixel side of {c.dataset}'s images (cell "
                f"{cell.label}); allowed: 0..{side}"
            )


def _dataset_sizes(name: str, root: Any) -> dict[str, int]:
    """num_classes, n_train, n_test and, where known, image_size: from the card, else from the loaded data."""
    card = DATASETS.get(name).card
    if all(k in card.defaults for k in DATASET_SIZES):
        return {k: int(card.defaults[k]) for k in (*DATASET_SIZES, IMAGE_SIZE) if k in card.defaults}
    from ffbench.data.datasets import load as load_dataset

    raw = load_dataset(name, root)
    return {
        "num_classes": raw.num_classes,
        "n_train": len(raw.train_y),
        "n_test": len(raw.test_y),
        IMAGE_SIZE: int(raw.train_x.shape[-1]),
    }


def _where_set(suite: Suite, cell: Any, key: str) -> str:
    """The section that set training field ``key`` for ``cell``: the latest layer that gives it."""
    method, dataset = cell.factors["method"], cell.factors["dataset"]
    for use in suite.axes:
        level = cell.factors.get(use.name)
        if use.axis.target == "train" and key in use.axis.keys and level is not None:
            return f"[axes].{use.name} (level {level!r})"
    for where, table in (
        (f'[methods."{method}"]', suite.method_settings.get(method, {})),
        (f'[datasets."{dataset}"]', suite.dataset_settings.get(dataset, {})),
        ("[train]", suite.train),
    ):
        if key in table:
            return f"{where}.{key}"
    return f'{key} (from method {method}\'s card or recipe; set it in [methods."{method}"])'


def _check_backbone(ck: _Checker, where: str, table: dict, card: Card) -> None:
    ck.keys(where, table, card.options)
    for k, v in table.items():
        ck.value(f"{where}.{k}", v, card.options[k])


# ---------------------------------------------------------------- [tuning]
SAMPLERS = ("TPESampler", "RandomSampler", "QMCSampler", "GPSampler", "CmaEsSampler", "GridSampler")
PRUNERS = (
    "MedianPruner",
    "PercentilePruner",
    "SuccessiveHalvingPruner",
    "HyperbandPruner",
    "ThresholdPruner",
    "NopPruner",
)
SPACE_KINDS = ("log", "float", "int", "choice")
_TUNING_KEYS = ("trials", "seeds", "sampler", "sampler_args", "pruner", "pruner_args", "space", "repeats")


def _parse_tuning(
    ck: _Checker, table: Any, methods: list[str], backbones: list[str], eval_seeds: list[int]
) -> TuningSpec:
    """[tuning]: the equal budget, the tuning seeds, the pinned sampler and pruner, and each method's space."""
    ck.keys("[tuning]", table, _TUNING_KEYS)
    for k in ("trials", "seeds", "sampler", "pruner"):
        if k not in table:
            ck.fail(
                f"[tuning].{k}",
                "missing (required: the budget, the seeds and the sampler and pruner are pinned in the suite file)",
            )
    trials = table["trials"]
    if not isinstance(trials, int) or isinstance(trials, bool) or not 1 <= trials <= MAX_TRIALS:
        ck.fail("[tuning].trials", f"{trials!r}; allowed: an integer in 1..{MAX_TRIALS:,} (trials per method per cell)")
    seeds = table["seeds"]
    ck.seeds("[tuning].seeds", seeds)
    repeats = table.get("repeats", 1)
    if not isinstance(repeats, int) or isinstance(repeats, bool) or not 1 <= repeats <= 100:
        ck.fail("[tuning].repeats", "expected an integer in [1, 100] (independent repeats of each cell's search)")
    all_seeds = [s + r * REPEAT_SEED_STRIDE for r in range(repeats) for s in seeds]
    shared = sorted(set(all_seeds) & set(eval_seeds))
    if shared:
        ck.fail(
            "[tuning].seeds",
            f"{', '.join(map(str, shared))} also in [design].seeds (repeat r tunes on the "
            f"seeds + r x {REPEAT_SEED_STRIDE}); tuning seeds and evaluation seeds must be "
            f"disjoint (evaluation seeds: {eval_seeds})",
        )

    import optuna

    sampler, pruner = table["sampler"], table["pruner"]
    if sampler not in SAMPLERS:
        ck.fail("[tuning].sampler", f"{sampler!r} is not allowed; allowed: {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        ck.fail("[tuning].pruner", f"{pruner!r} is not allowed; allowed: {', '.join(PRUNERS)}")
    sampler_args = _check_tuning_args(
        ck,
        "[tuning].sampler_args",
        table.get("sampler_args", {}),
        getattr(optuna.samplers, sampler),
        exclude=("search_space",),
    )
    if "seed" in inspect.signature(getattr(optuna.samplers, sampler)).parameters and "seed" not in sampler_args:
        ck.fail("[tuning].sampler_args.seed", "missing (required: the sampler must be seeded)")
    pruner_args = _check_tuning_args(
        ck, "[tuning].pruner_args", table.get("pruner_args", {}), getattr(optuna.pruners, pruner)
    )

    space_table = table.get("space", {})
    if not isinstance(space_table, dict):
        ck.fail("[tuning].space", "expected a table of per-method tables")
    for name in space_table:
        if name not in methods:
            ck.fail(f'[tuning.space."{name}"]', f"not in [design].methods; allowed: {', '.join(methods)}")
    spaces = {}
    for m in methods:
        if m in space_table:
            where, spec = f'[tuning.space."{m}"]', space_table[m]
        else:
            where, spec = f'the tuning_space of {m}\'s card (no [tuning.space."{m}"])', METHODS.get(m).card.tuning_space
        if not isinstance(spec, dict):
            ck.fail(where, "expected a table of parameters")
        if not spec:
            ck.fail(
                where,
                f'empty search space for {m}; give [tuning.space."{m}"] (every method is tuned with '
                f"the same number of trials)",
            )
        spaces[m] = {k: _check_tuning_param(ck, f"{where}.{k}", k, v, m, backbones) for k, v in spec.items()}
    if sampler == "GridSampler":
        for m, space in spaces.items():
            if any(v[0] != "choice" for v in space.values()):
                ck.fail(
                    "[tuning].sampler",
                    f'GridSampler needs every parameter as ["choice", ...]; {m} has '
                    f"{', '.join(k for k, v in space.items() if v[0] != 'choice')}",
                )
            size = math.prod(len(v) - 1 for v in space.values())
            if size != trials:
                ck.fail(
                    "[tuning].trials", f"GridSampler: {m}'s grid has {size} points; trials must equal it (got {trials})"
                )
    _build_tuning_objects(ck, sampler, sampler_args, pruner, pruner_args, next(iter(spaces.values())))
    return TuningSpec(trials, tuple(seeds), sampler, dict(sampler_args), pruner, dict(pruner_args), spaces, repeats)


# The TOML value kinds an argument's annotation admits (the first word of each alternative of "int | None", ...).
_ARG_KINDS = {
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "None": type(None),
    "list": list,
    "Sequence": list,
    "tuple": list,
}


def _arg_kinds(param: inspect.Parameter) -> tuple[type, ...]:
    ann = param.annotation
    text = ann if isinstance(ann, str) else getattr(ann, "__name__", "") if ann is not param.empty else ""
    heads = (re.match(r"\s*([A-Za-z_.]+)", alt) for alt in re.split(r"\|(?![^\[]*\])", text))
    kinds = tuple(
        dict.fromkeys(_ARG_KINDS[h[1].rsplit(".", 1)[-1]] for h in heads if h and h[1].rsplit(".", 1)[-1] in _ARG_KINDS)
    )
    if not kinds and param.default is not param.empty and param.default is not None:
        kinds = (type(param.default),)
    return kinds


def _check_tuning_args(ck: _Checker, where: str, args: Any, cls: type, exclude: tuple = ()) -> dict:
    """Keyword arguments of an Optuna sampler or pruner: each one of its parameters, with a value of a kind its
    annotation admits (a callable or an object cannot be given in a suite file)."""
    if not isinstance(args, dict):
        ck.fail(where, "expected a table of keyword arguments")
    params = {
        n: p for n, p in inspect.signature(cls).parameters.items() if n not in ("self", "args", "kwargs", *exclude)
    }
    for k, v in args.items():
        if k not in params:
            ck.fail(f"{where}.{k}", f"not an argument of {cls.__name__}; allowed: {', '.join(params)}")
        kinds = _arg_kinds(params[k])
        if kinds in ((), (type(None),)) or isinstance(v, dict):
            takes = params[k].annotation if params[k].annotation is not inspect.Parameter.empty else "an object"
            ck.fail(
                f"{where}.{k}", f"{cls.__name__}'s {k} cannot be given in a suite file (it takes {takes}); leave it out"
            )
        if not type_ok(v, kinds):
            ck.fail(
                f"{where}.{k}",
                f"expected {' or '.join(t.__name__.replace('NoneType', 'none') for t in kinds)}, "
                f"got {type(v).__name__} {v!r} ({cls.__name__}'s {k})",
            )
    return args


def _build_tuning_objects(
    ck: _Checker, sampler: str, sampler_args: dict, pruner: str, pruner_args: dict, space: dict
) -> None:
    """Build the sampler and the pruner once, as every tuning run will (``tuning.make_sampler`` /
    ``make_pruner``), so that a value Optuna refuses (a negative count, an unknown qmc_type) is found here."""
    from ffbench.plan.tuning import make_pruner, make_sampler

    spec = {
        "sampler": sampler,
        "sampler_args": sampler_args,
        "pruner": pruner,
        "pruner_args": pruner_args,
        "space": space,
    }
    for where, build in (
        ("[tuning].sampler_args", lambda: make_sampler(spec, 0)),
        ("[tuning].pruner_args", lambda: make_pruner(spec)),
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's experimental-feature warnings: said when tuning runs
                build()
        except Exception as exc:  # Optuna's own check of a value: its words name the argument
            first = str(exc).splitlines()[0] if str(exc) else ""
            ck.fail(where, f"refused by Optuna: {type(exc).__name__}: {first}")


def _check_tuning_param(ck: _Checker, where: str, name: str, spec: Any, method: str, backbones: list[str]) -> tuple:
    shapes = '["log", low, high], ["float", low, high], ["int", low, high] or ["choice", value, ...]'
    if isinstance(spec, tuple):
        spec = list(spec)
    if not isinstance(spec, list) or len(spec) < 2 or spec[0] not in SPACE_KINDS:
        ck.fail(where, f"expected {shapes}")
    kind, values = spec[0], spec[1:]
    # what the parameter sets, and which values it takes
    card = METHODS.get(method).card
    if name in TRAIN_FIELDS:
        specs = [TRAIN_FIELDS[name]]
    elif name.startswith("backbone."):
        opt = name.split(".", 1)[1]
        lacking = [b for b in backbones if opt not in BACKBONES.get(b).card.options]
        if lacking:
            ck.fail(where, f"backbone option {opt!r} is not offered by {', '.join(lacking)}")
        specs = [BACKBONES.get(b).card.options[opt] for b in backbones]
    elif name in card.options:
        specs = [card.options[name]]
    else:
        ck.fail(
            where,
            f"unknown parameter; allowed: training fields ({', '.join(TRAIN_FIELDS)}), {method}'s "
            f"options ({', '.join(card.options) or 'none'}), or backbone.<option>",
        )

    def ok(v):
        return not any(spec.problem(v) for spec in specs)

    shown = specs[0].describe()
    if kind == "choice":
        if len(values) < 2:
            ck.fail(where, "a choice needs at least two values")
        for v in values:
            if not ok(v):
                ck.fail(where, f"{v!r} is not allowed for {name}; allowed: {shown}")
        return ("choice", *values)
    if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        ck.fail(where, f"expected [{kind!r}, low, high] with numbers")
    lo, hi = values
    if not lo < hi:
        ck.fail(where, f"low ({lo}) must be below high ({hi})")
    if kind == "log" and lo <= 0:
        ck.fail(where, f"a log range needs low > 0 (got {lo})")
    if kind == "int" and not all(isinstance(v, int) for v in values):
        ck.fail(where, "an int range needs integer bounds")
    probe = int(lo) if kind == "int" else float(lo)
    for v in (probe, type(probe)(hi)):
        if not ok(v):
            ck.fail(where, f"{kind} values are not allowed for {name}; allowed: {shown}")
    return (kind, lo, hi)
