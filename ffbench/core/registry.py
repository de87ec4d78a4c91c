"""One registry mechanism for methods, datasets, backbones and axes.

Plugins register with a decorator and are discovered through ``importlib.metadata`` entry points
(groups ``ffbench.methods``, ``ffbench.datasets``, ``ffbench.backbones``, ``ffbench.axes``). ffbench's own
entries are found in the package itself (every module of ``ffbench.methods``, the built-in datasets,
backbones and axes), whatever an installation's metadata says, so a lookup never depends on what happened to
be imported first. A plugin whose import fails (any exception, ``SystemExit`` included) is
reported once on stderr (entry point and error) and left out whole: whatever it registered before failing is
rolled back. Everything else still works, and looking up a name that is missing while some plugin
failed names that failure.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import inspect
import logging
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

KINDS = ("methods", "datasets", "backbones", "axes")
RECIPE_DEFAULT = "ffbench"  # the recipe a method runs unless a suite names another


@dataclass(frozen=True)
class ByDataset:
    """A recipe value that depends on the run's dataset: ``values[dataset]``; a dataset it does not name
    has no value (the setting is left to the other layers, and the planner says so)."""

    values: dict[str, Any]

    def get(self, dataset: str) -> Any:
        return self.values.get(dataset, _MISSING)

    def __repr__(self) -> str:
        return "by dataset: " + "; ".join(f"{k} {v!r}" for k, v in self.values.items())


_MISSING = object()


@dataclass(frozen=True)
class Card:
    """What a registered entry is, where it comes from, and what it needs.

    ``options``: name -> ``Option`` (see ``ffbench.core.options``), the only way to declare a setting.
    ``defaults``: settings that are not options (a method's training recipe: optimizer, lr, ...) and
    overrides of option defaults (how a ``variant`` differs); after construction it holds every default.
    ``rules``: a method's inference rules, the default first; ``rule_option`` names the option that picks
    the default rule instead (e.g. ``rule`` on sff).
    """

    name: str
    summary: str
    family: str = ""
    paper: str = ""
    code: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    capabilities: frozenset[str] = frozenset()
    tuning_space: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    rules: tuple[str, ...] = ()
    rule_option: str = ""
    # a method's recipes: name -> {setting: (value or ByDataset, source)}; a setting is a training field, an
    # option, ``dataset.<option>`` or ``backbone.<option>``. "ffbench" is the card's defaults when not given.
    recipes: dict[str, dict[str, tuple[Any, str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ffbench.core.options import Option

        options = {}
        for k, opt in self.options.items():
            if not isinstance(opt, Option):
                raise TypeError(
                    f"{self.name}: option {k!r} must be declared as an Option (from ffbench.api import Option: "
                    f"type, default, help, choices or range), got {type(opt).__name__} {opt!r} "
                    f"(CHANGELOG.md, 'Porting a 0.1 plugin')"
                )
            if k in self.defaults:
                opt = opt.with_default(self.defaults[k])  # validated by Option itself
            options[k] = opt
        if self.recipes:  # chosen per method in a suite; no default, so an unset recipe is not in a configuration
            names = tuple(dict.fromkeys((RECIPE_DEFAULT, *self.recipes)))
            options["recipe"] = Option(str, help="training recipe (settings and their sources below)", choices=names)
        defaults = {**{k: o.default for k, o in options.items() if o.has_default}, **self.defaults}
        object.__setattr__(self, "options", options)
        object.__setattr__(self, "defaults", defaults)
        if self.recipes and RECIPE_DEFAULT not in self.recipes:
            object.__setattr__(self, "recipes", {RECIPE_DEFAULT: self._default_recipe(), **self.recipes})
        if self.rule_option and self.rule_option not in options:
            raise TypeError(f"{self.name}: rule_option {self.rule_option!r} is not one of its options")

    def _default_recipe(self) -> dict[str, tuple[Any, str]]:
        """The ffbench recipe: the card's training defaults, and for every setting another recipe names, its
        ffbench value (an option's default; the harness's data handling and the suite's backbone options
        appear as None) so the recipes read side by side."""
        out = {k: (v, "ffbench default") for k, v in self.defaults.items() if k not in self.options}
        for settings in self.recipes.values():
            for k in settings:
                if k in out:
                    continue
                if k in self.options and k != "recipe":
                    out[k] = (
                        self.defaults.get(k),
                        f"ffbench option default{'; ' + self.options[k].source if self.options[k].source else ''}",
                    )
                elif k.startswith("dataset."):
                    out[k] = (
                        None,
                        {
                            "dataset.normalize": "harness: the dataset's own statistics",
                            "dataset.val_split": "harness: a seeded stratified split",
                        }.get(k, "harness"),
                    )
                elif k.startswith("backbone."):
                    out[k] = (None, "the suite's backbone options")
        return out

    def recipe(self, name: str, dataset: str) -> tuple[dict[str, Any], list[str]]:
        """Recipe ``name``'s settings for ``dataset`` and the settings it has no value for on that dataset."""
        if name not in self.recipes:
            raise KeyError(
                f"{self.name}: unknown recipe {name!r}; allowed: {', '.join(self.recipes) or RECIPE_DEFAULT}"
            )
        values, missing = {}, []
        for k, (v, _) in self.recipes[name].items():
            v = v.get(dataset) if isinstance(v, ByDataset) else v
            if v is _MISSING:
                missing.append(k)
            else:
                values[k] = v
        return values, missing

    def describe(self) -> str:
        lines = [f"{self.name}  [{self.family or '-'}]  {self.summary}"]
        for label, value in (("paper", self.paper), ("code", self.code)):
            if value:
                lines.append(f"    {label}: {value}")
        if self.capabilities:
            lines.append(f"    capabilities: {', '.join(sorted(self.capabilities))}")
        recipe = {k: v for k, v in self.defaults.items() if k not in self.options}
        if recipe:
            lines.append("    defaults: " + ", ".join(f"{k}={v!r}" for k, v in recipe.items()))
        if self.options:
            lines.append("    options:")
            lines += [f"      {opt.card_line(k)}" for k, opt in self.options.items()]
        if self.rules:
            lines.append(
                f"    inference rules: {', '.join(self.rules)}"
                + (f" (default set by option {self.rule_option})" if self.rule_option else " (default first)")
            )
        for name, settings in self.recipes.items():
            lines.append(f"    recipe {name}{' (default)' if name == RECIPE_DEFAULT else ''}:")
            lines += [f"      {k} = {v!r}  ({src})" for k, (v, src) in settings.items()]
        if self.tuning_space:
            lines.append("    tuning space: " + ", ".join(f"{k}={v}" for k, v in self.tuning_space.items()))
        if self.notes:
            lines.append(f"    notes: {self.notes}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Entry:
    card: Card
    obj: Any
    origin: str


class DuplicateNameError(ValueError):
    pass


class UnknownNameError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def _origin(obj: Any) -> str:
    module = getattr(obj, "__module__", "?")
    qual = getattr(obj, "__qualname__", type(obj).__name__)
    try:
        line = inspect.getsourcelines(obj)[1]
        return f"{module}:{qual} (line {line})"
    except (OSError, TypeError):
        return f"{module}:{qual}"


class Registry:
    """Name -> (card, object). Names are ``family.variant`` strings, e.g. ``ff.hinton``."""

    def __init__(self, kind: str, builtin: str | None = None):
        self.kind = kind
        self.group = f"ffbench.{kind}"
        self.builtin = builtin  # the module, or package of modules, that registers ffbench's own entries
        self._entries: dict[str, Entry] = {}
        self._discovered = False
        self.failures: list[str] = []  # entry points that could not be loaded: "'name' = 'value': error"

    def register(self, card: Card | None = None, **card_fields: Any) -> Callable:
        """Decorator: ``@METHODS.register(Card(...))`` or ``@METHODS.register(name=..., summary=...)``."""

        def wrap(obj: Any) -> Any:
            c = card or Card(**card_fields)
            self.add(c, obj)
            return obj

        return wrap

    def add(self, card: Card, obj: Any) -> None:
        origin = _origin(obj)
        old = self._entries.get(card.name)
        if old is not None:
            if old.origin == origin:  # the same module imported twice (e.g. as __main__ and by name)
                return
            raise DuplicateNameError(
                f"{self.kind} name {card.name!r} is registered twice: by {old.origin} and by {origin}"
            )
        self._entries[card.name] = Entry(card, obj, origin)

    def discover(self) -> None:
        """Load every entry point of this registry's group once; loading a module registers its entries."""
        if self._discovered:
            return
        self._discovered = True
        if self.builtin:  # ffbench's own: found in the package itself, whatever an installation's metadata says
            module = importlib.import_module(self.builtin)
            if hasattr(module, "__path__"):
                for info in pkgutil.iter_modules(module.__path__):
                    importlib.import_module(f"{self.builtin}.{info.name}")
        for ep in importlib.metadata.entry_points(group=self.group):
            before = {kind: set(r._entries) for kind, r in REGISTRIES.items()}
            try:
                ep.load()
            except DuplicateNameError:
                _roll_back(before, ep.module)
                raise  # two plugins claim one name: which one runs would depend on load order
            except (Exception, SystemExit) as exc:  # a broken plugin must not take the others (and every command) down
                _roll_back(before, ep.module)  # nothing of a plugin that failed half-way: not what it registered first
                failure = f"{ep.name!r} = {ep.value!r}: {type(exc).__name__}: {exc}"
                self.failures.append(failure)
                logger.warning(
                    f"warning: cannot load {self.group} entry point {failure}; its {self.kind} are unavailable"
                )

    def unknown(self, name: str) -> str:
        """Why ``name`` cannot be found: the registered names, and the plugins that failed to load."""
        text = f"unknown {self.kind[:-1]} {name!r}; registered: {', '.join(sorted(self._entries)) or 'none'}"
        if self.failures:
            text += (
                f" (it may come from a plugin that failed to load: {self.group} entry point {'; '.join(self.failures)})"
            )
        return text

    def get(self, name: str) -> Entry:
        self.discover()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown(name)) from None

    def names(self, pattern: str = "*") -> list[str]:
        self.discover()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def list(self, pattern: str = "*") -> list[Card]:
        return [self._entries[n].card for n in self.names(pattern)]

    def __contains__(self, name: str) -> bool:
        self.discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


METHODS = Registry("methods", "ffbench.methods")
DATASETS = Registry("datasets", "ffbench.data.datasets")
BACKBONES = Registry("backbones", "ffbench.training.backbones")
AXES = Registry("axes", "ffbench.plan.axes")
REGISTRIES = {"methods": METHODS, "datasets": DATASETS, "backbones": BACKBONES, "axes": AXES}


def _roll_back(before: dict[str, set[str]], module: str) -> None:
    """Remove what a plugin whose import failed registered since ``before`` (the names each registry held when
    its import began): the entries defined in its package. Entries other plugins registered meanwhile (a
    registry discovered during the import) stay."""
    package = module.split(".")[0]
    for kind, registry in REGISTRIES.items():
        for name in set(registry._entries) - before[kind]:
            defined = getattr(registry._entries[name].obj, "__module__", "") or ""
            if defined == package or defined.startswith(package + "."):
                del registry._entries[name]


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.names(pattern)
