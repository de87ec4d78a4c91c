"""One option type: what a value may be, checked in one place.

Every setting a suite can give is an ``Option``: the training fields (``config.TRAIN_FIELDS``), the
options on a method's or a backbone's card, and the levels of an ablation axis. The suite checker, the
tuning space, the axes and the design all ask the same ``Option.problem(value)``, so a rule is written
once, and a plugin declares its options in one documented way::

    options={"kernel": Option(int, 1, "aux conv kernel", ge=1, check=odd, check_doc="an odd integer"),
             "loss": Option(str, "ce", "unit loss", choices=("ce", "margin"), source="[INF] §4.2"),
             "widths": Option(list, [256], "layer widths", item=Option(int, 1, "a width", ge=1))}

No torch here: suites are validated before anything heavy is imported.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

_NO_DEFAULT = object()


class OptionError(ValueError):
    """A value an option does not allow; the message says what is allowed."""


def type_ok(value: Any, kind: type | tuple[type, ...]) -> bool:
    """``isinstance`` with TOML's reading of numbers: an int is a float, a bool is not a number."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        return False  # TOML true is not a number
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, kinds)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("none" if k is type(None) else getattr(k, "__name__", str(k)) for k in kinds)


@dataclass(frozen=True)
class Option:
    """A typed setting: its type, default, allowed values or range, help, and where it comes from.

    ``kind``: int, float, str, bool, list, or a tuple of them (``type(None)`` makes it optional).
    ``choices``: the allowed values (a tuple; a list is accepted and frozen). ``ge``/``gt``/``le``/``lt``:
    numeric bounds; floats must also be finite. ``check``/``check_doc``: any other rule, with its wording.
    ``item``: the Option every element of a list must satisfy. ``source``: the paper, code or [INF] choice.
    """

    kind: type | tuple[type, ...]
    default: Any = _NO_DEFAULT
    help: str = ""
    choices: tuple | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    check: Callable[[Any], bool] | None = None
    check_doc: str = ""
    item: Option | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.choices is not None and not isinstance(self.choices, tuple):
            if not isinstance(self.choices, (list, set, frozenset)):
                raise TypeError(f"Option choices must be a tuple of values, got {type(self.choices).__name__}")
            object.__setattr__(self, "choices", tuple(self.choices))
        if self.has_default:
            self.validate(self.default)  # a wrong default is the plugin author's error, found at import

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT

    @property
    def optional(self) -> bool:
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        return type(None) in kinds

    def with_default(self, default: Any) -> Option:
        return replace(self, default=default)

    # ------------------------------------------------------------ checking
    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed (one line naming what is), or None."""
        if value is None and self.optional:
            return None
        if not type_ok(value, self.kind):
            return f"expected {_kind_name(self.kind)}, got {type(value).__name__} {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"{value!r} is not allowed; allowed: {', '.join(map(str, self.choices))}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                return f"{value!r} is not a finite number; expected {self.describe()}"
            if not self._in_range(value):
                return f"{value!r} is out of range; expected {self.describe()}"
        if self.check is not None and not self.check(value):
            return f"{value!r} is out of range; expected {self.describe()}"
        if self.item is not None and isinstance(value, list):
            for i, v in enumerate(value):
                why = self.item.problem(v)
                if why:
                    return f"element {i} ({v!r}): {why}"
        return None

    def validate(self, value: Any) -> Any:
        """``value`` if allowed, else ``OptionError`` saying what is allowed."""
        why = self.problem(value)
        if why:
            raise OptionError(why)
        return value

    def _in_range(self, v: float) -> bool:
        return (
            (self.ge is None or v >= self.ge)
            and (self.gt is None or v > self.gt)
            and (self.le is None or v <= self.le)
            and (self.lt is None or v < self.lt)
        )

    # ------------------------------------------------------------ describing
    def describe(self) -> str:
        """What the option accepts, in words: "one of a, b", "a positive integer", "a number in [0, 1)"."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.check_doc:
            return self.check_doc
        kinds = set(self.kind if isinstance(self.kind, tuple) else (self.kind,)) - {type(None)}
        noun = {frozenset({int}): "integer", frozenset({float}): "number", frozenset({int, float}): "number"}.get(
            frozenset(kinds)
        )
        if noun is None:
            text = _kind_name(self.kind)
        else:
            low = ("[", self.ge) if self.ge is not None else ("(", self.gt) if self.gt is not None else None
            high = ("]", self.le) if self.le is not None else (")", self.lt) if self.lt is not None else None
            if low and not high and low[1] == 0:
                text = f"a {'non-negative' if low[0] == '[' else 'positive'} {noun}"
            elif low == ("[", 1) and not high and noun == "integer":
                text = "a positive integer"
            elif low and high:
                text = (
                    f"{'an' if noun == 'integer' else 'a'} {noun} in {low[0]}{_bound(low[1])}, "
                    f"{_bound(high[1])}{high[0]}"
                )
            elif low or high:
                op, b = (">=" if low[0] == "[" else ">", low[1]) if low else ("<=" if high[0] == "]" else "<", high[1])
                text = f"{'an' if noun == 'integer' else 'a'} {noun} {op} {_bound(b)}"
            else:
                text = f"{'an' if noun == 'integer' else 'a'} {noun}"
        if self.item is not None:
            text += f", each {self.item.describe()}"
        return text

    def card_line(self, name: str) -> str:
        """One line for a card: name, what it accepts, default, help and source."""
        parts = [f"{name}: {self.describe()}"]
        if self.has_default:
            parts.append(f"default {self.default!r}")
        line = ", ".join(parts)
        if self.help:
            line += f" - {self.help}"
        if self.source:
            line += f" ({self.source})"
        return line


def _bound(b: float) -> str:
    """A range bound as written: 1048576, not 1.04858e+06; 0.001 as is."""
    return str(int(b)) if float(b).is_integer() else f"{b:g}"


def odd(v: int) -> bool:
    return v % 2 == 1


def check_options(specs: dict[str, Option], values: dict[str, Any], owner: str) -> dict[str, Any]:
    """Validate ``values`` against ``specs`` (every key known, every value allowed); returns ``values``."""
    for k, v in values.items():
        if k not in specs:
            raise OptionError(f"{owner}: unknown option {k!r}; allowed: {', '.join(specs) or 'none'}")
        why = specs[k].problem(v)
        if why:
            raise OptionError(f"{owner}: option {k}: {why}")
    return values
