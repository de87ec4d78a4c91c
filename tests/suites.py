"""Suite files for tests: the small suite most tests run (bp on a 16-wide MLP, synthetic data, one epoch), written
once, with what a test varies as arguments.

``suite_toml(...)`` gives the text (tests of the TOML itself edit it), ``suite_file(folder, ...)`` writes it to
``folder/<file or name>.toml``. Lists and tables are written as TOML values, so ``methods=["bp", "sff"]`` reads
``methods = ["bp", "sff"]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def toml_value(v: Any) -> str:
    """``v`` as a TOML value: strings, numbers, booleans, lists and (inline) tables."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML value for {type(v).__name__} {v!r}")


def _table(header: str, items: dict[str, Any]) -> str:
    return f"[{header}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in items.items() if v is not None)


def suite_toml(
    name: str = "t",
    *,
    version: int = 1,
    methods: list[str] = ("bp",),
    datasets: list[str] = ("synthetic",),
    backbones: list[str] = ("mlp",),
    seeds: list[int] = (0,),
    suite: dict[str, Any] | None = None,
    design: dict[str, Any] | None = None,
    epochs: int | None = 1,
    batch_size: int | None = 32,
    train: dict[str, Any] | None = None,
    widths: list[int] | None = (16,),
    extra: str = "",
) -> str:
    """A suite's text: ``suite``, ``design`` and ``train`` add keys to their sections (after the usual ones);
    ``epochs``, ``batch_size`` or ``widths`` None leaves that key out (no [train] or [backbones.mlp] when empty);
    ``extra`` is appended as it is."""
    head = {"name": name, "version": version, **(suite or {})}
    plan = {"methods": methods, "datasets": datasets, "backbones": backbones, "seeds": seeds, **(design or {})}
    fields = {"epochs": epochs, "batch_size": batch_size, **(train or {})}
    text = _table("suite", head) + _table("design", plan)
    if any(v is not None for v in fields.values()):
        text += _table("train", fields)
    if widths is not None:
        text += _table("backbones.mlp", {"widths": widths})
    return text + extra


def suite_file(folder: Path, name: str = "t", *, file: str | None = None, **kwargs: Any) -> Path:
    """Write ``suite_toml(name, **kwargs)`` to ``folder/<file or name>.toml``; the path."""
    path = Path(folder) / f"{file or name}.toml"
    path.write_text(suite_toml(name, **kwargs))
    return path
