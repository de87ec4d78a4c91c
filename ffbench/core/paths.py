"""Where ffbench may write: every file it makes lies inside the output folder (or the folder the user named on
the command line), whatever a store, an MLflow database or a suite name read back from one says.

``inside`` is the one rule: it resolves a path (symbolic links and ``..`` included) and refuses one that
leaves its base, so a suite name of ``../../x`` in a store, an edited artifact location in ``mlflow.db`` or a
copied output folder that still points at the original never writes elsewhere.
"""

from __future__ import annotations

from pathlib import Path


class OutsideError(ValueError):
    """A path ffbench would write that resolves outside the folder it belongs in; the message names both."""


def inside(base: str | Path, *parts: str | Path) -> Path:
    """``base / parts``, resolved, checked to lie inside ``base`` (resolved too); ``OutsideError`` if not."""
    root = Path(base).resolve()
    path = root.joinpath(*parts).resolve()
    if path != root and root not in path.parents:
        raise OutsideError(
            f"{path}, outside {root} (ffbench writes only inside the output folder, whatever a "
            f"store or an MLflow database says)"
        )
    return path
