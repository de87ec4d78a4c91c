"""The suite's results: the one definition every reader uses (the end-of-run table, the reports, the
export, the MLflow aggregates, sync and prune).

They are the runs of the cells the suite version's current design declares. A cell's ID hashes its
configuration and code fingerprint (``design.cell_id``), so a setting or a plugin's code changed within
one suite version makes new cells; the runs of the cells they replace stay in the store (nothing is
deleted silently) but are superseded: never counted, named once, shown apart on request
(``--include-superseded``) and deleted only by ``ffbench prune``. ``run`` and ``worker`` record the
declared cells in the store when they plan (``Store.record_design``), so a store alone says which runs
count; a store written before that is read as one cell per factor combination, the one that finished last.

It also says how the runs are grouped: a level of an axis that applies to one method only (a plugin's
own option, or a suite axis over one method's option) is a variant of that method inside its dataset /
backbone task, ``pepita[feedback_scale=0.5]``, compared with the control like any method (``fold_variants``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from ffbench import stats
from ffbench.core.config import canonical_json, content_hash

if TYPE_CHECKING:  # pragma: no cover
    from ffbench.record.store import RunRow

BASE_FACTORS, NA = stats.BASE_FACTORS, stats.NA


def declared_cells(store: Any, suite: str, version: int) -> set[str]:
    """The cell IDs whose runs are ``suite`` version ``version``'s results: those its design was last planned
    with, or (a store without that record) per factor combination the cell that finished last."""
    declared = store.declared_cells(suite, version)
    if declared is not None:
        return declared
    stored = store.cells(suite, version)
    latest: dict[str, str] = {}
    for cid, info in stored.items():
        key = canonical_json(info["factors"])
        if key not in latest or info["finished"] > stored[latest[key]]["finished"]:
            latest[key] = cid
    return set(latest.values())


@dataclass
class Results:
    """One suite version's runs of one role, split into the current design's and the superseded ones."""

    suite: str
    version: int | None
    frame: pd.DataFrame  # the runs that count (or every run with ``include_superseded``, flagged)
    superseded: pd.DataFrame  # runs of cells the current design no longer declares
    cells: set[str] = field(default_factory=set)  # the declared cell IDs
    older_versions: int = 0  # runs of other suite versions


def superseded_note(superseded: pd.DataFrame, included: bool = False) -> str | None:
    """The one sentence that names the superseded runs (left out, or ``included`` apart); None if there are none."""
    if superseded is None or not len(superseded):
        return None
    runs, cells = len(superseded), superseded["cell_id"].nunique()
    what = (
        f"{runs} run{'s' * (runs != 1)} of {cells} superseded cell{'s' * (cells != 1)} (settings or code changed since)"
    )
    if included:
        return f"{what} are shown apart, each labelled 'superseded' and never pooled with the current cells"
    return f"{what} are left out; `--include-superseded` to see them, `ffbench prune` to delete them"


def load(
    store: Any,
    suite: str,
    version: int | None = None,
    role: str | None = "evaluation",
    include_superseded: bool = False,
) -> Results:
    """The runs of ``role`` (None: every role) of ``suite`` version ``version`` (the latest when None) that
    count. ``include_superseded``: the superseded ones too, flagged (column ``superseded``) and, for the
    statistics, labelled as their own method variant so they never pool with a current cell."""
    frame = store.frame(suite, role=role)
    if not len(frame):
        return Results(suite, version, frame, frame)
    v = int(frame["suite_version"].max()) if version is None else int(version)
    older = int((frame["suite_version"] != v).sum())
    frame = frame[frame["suite_version"] == v].reset_index(drop=True)
    cells = declared_cells(store, suite, v)
    keep = frame["cell_id"].isin(cells)
    frame["superseded"] = ~keep
    superseded = frame[~keep].reset_index(drop=True)
    if include_superseded:
        frame = pd.concat([frame[keep], apart(superseded)], ignore_index=True)
    else:
        frame = frame[keep].reset_index(drop=True)
    return Results(suite, v, frame, superseded, cells, older)


def apart(superseded: pd.DataFrame) -> pd.DataFrame:
    """Superseded runs labelled as their own variant of the method (``bp (superseded 1a2b3c4d)``)."""
    if not len(superseded):
        return superseded
    out = superseded.copy()
    out["method"] = [f"{m} (superseded {c[:8]})" for m, c in zip(out["method"], out["cell_id"])]
    return out


def identity(rows: Sequence[RunRow]) -> pd.DataFrame:
    """Per run: its configuration hash (the resolved configuration without the seed) and code fingerprint
    (a hash of the modules its cell's numbers come from, ``design.code_fingerprint``)."""
    out = []
    for r in rows:
        config = {k: v for k, v in (r.config or {}).items() if k != "seed"}
        code = {k: {f: v for f, v in fp.items() if f != "file"} for k, fp in (r.code or {}).items()}
        out.append(
            {
                "run_id": r.run_id,
                "config_hash": content_hash(config),
                "code_fingerprint": content_hash(code) if code else None,
            }
        )
    return pd.DataFrame(out, columns=["run_id", "config_hash", "code_fingerprint"])


# ---------------------------------------------------------------- grouping: method-only axes as variants
def _is_level(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and v != v) and str(v) != NA


def _applies(col: pd.Series) -> pd.Series:
    return col.map(_is_level).astype(bool)


def method_only_axes(frame: pd.DataFrame, factors: Sequence[str], control: str | None = None) -> list[str]:
    """The axes whose every level belongs to one method (a plugin's own option, or a suite axis over an option
    of one method, or of several methods with a level each), where more than one method runs: their levels
    are variants of methods, not tasks. The control may hold at most one level of such an axis."""
    out = []
    if "method" not in frame or frame["method"].nunique() < 2:
        return out
    for a in factors:
        if a in BASE_FACTORS or a not in frame:
            continue
        applies = _applies(frame[a])
        if not applies.any():
            continue
        owners = frame.loc[applies].groupby(frame.loc[applies, a].map(str))["method"].nunique()
        control_levels = frame.loc[applies & (frame["method"] == control), a].map(str).nunique()
        if (owners == 1).all() and control_levels <= 1:
            out.append(a)
    return out


def fold_variants(
    frame: pd.DataFrame, factors: Sequence[str], control: str | None = None, axes: Sequence[str] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """(frame, factors) with each method-only axis (``axes``, default ``method_only_axes``) folded into its
    method's name as a variant (``pepita[feedback_scale=0.5]``) and dropped from the factors, so the variant
    sits in its dataset / backbone task beside the control (whose one level, if it has one, is its own
    setting, not a variant). Nothing changes when no axis is method-only."""
    axes = [a for a in (method_only_axes(frame, factors, control) if axes is None else axes) if a in frame]
    if not axes or not len(frame):
        return frame, list(factors)
    df = frame.copy()
    marked = df.assign(**{a: df[a].where(_applies(df[a]), NA) for a in axes})  # '-' where an axis does not apply
    labels = stats.treatments(marked, "method", axes)
    df["method"] = labels.where(df["method"] != control, df["method"])
    for a in axes:
        df[a] = None
    return df, [f for f in factors if f not in axes]


def base_method(name: str) -> str:
    """The method a variant label belongs to: 'pepita' for 'pepita[feedback_scale=0.5]'."""
    return str(name).split("[", 1)[0]
