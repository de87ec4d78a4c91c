"""One registry mechanism for methods, datasets, backbones and axes.

Plugins register with a decorator and are discovered through ``importlib.metadata`` entry points
(groups ``ffbench.methods``, ``ffbench.datasets``, ``ffbench.backbones``, ``ffbench.axes``).
ffbench's own plugins are declared the same way in ``pyproject.toml``, so a lookup never depends on
what happened to be imported first.
"""
from __future__ import annotations

import fnmatch
import importlib.metadata
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

KINDS = ("methods", "datasets", "backbones", "axes")


@dataclass(frozen=True)
class Card:
    """What a registered entry is, where it comes from, and what it needs."""

    name: str
    summary: str
    family: str = ""
    paper: str = ""
    code: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    # option name -> tuple of allowed values, or a type (int, float, str, bool, list)
    options: dict[str, Any] = field(default_factory=dict)
    capabilities: frozenset[str] = frozenset()
    tuning_space: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    def describe(self) -> str:
        lines = [f"{self.name}  [{self.family or '-'}]  {self.summary}"]
        for label, value in (("paper", self.paper), ("code", self.code)):
            if value:
                lines.append(f"    {label}: {value}")
        if self.capabilities:
            lines.append(f"    capabilities: {', '.join(sorted(self.capabilities))}")
        if self.defaults:
            lines.append("    defaults: " + ", ".join(f"{k}={v!r}" for k, v in self.defaults.items()))
        if self.options:
            opts = []
            for k, allowed in self.options.items():
                opts.append(f"{k} in {list(allowed)}" if isinstance(allowed, tuple) else
                            f"{k}: {getattr(allowed, '__name__', allowed)}")
            lines.append("    options: " + "; ".join(opts))
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

    def __init__(self, kind: str):
        self.kind = kind
        self.group = f"ffbench.{kind}"
        self._entries: dict[str, Entry] = {}
        self._discovered = False

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
                f"{self.kind} name {card.name!r} is registered twice: by {old.origin} and by {origin}")
        self._entries[card.name] = Entry(card, obj, origin)

    def discover(self) -> None:
        """Load every entry point of this registry's group once; loading a module registers its entries."""
        if self._discovered:
            return
        self._discovered = True
        for ep in importlib.metadata.entry_points(group=self.group):
            try:
                ep.load()
            except Exception as exc:  # a broken third-party plugin must not hide the others
                raise ImportError(f"cannot load {self.group} entry point {ep.name!r} = {ep.value!r}: {exc}") from exc

    def get(self, name: str) -> Entry:
        self.discover()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind[:-1]} {name!r}; registered: {', '.join(sorted(self._entries)) or 'none'}"
            ) from None

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


METHODS = Registry("methods")
DATASETS = Registry("datasets")
BACKBONES = Registry("backbones")
AXES = Registry("axes")
REGISTRIES = {"methods": METHODS, "datasets": DATASETS, "backbones": BACKBONES, "axes": AXES}


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.names(pattern)
