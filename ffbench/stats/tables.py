"""Helpers over the tidy results table: metric and factor columns, factor levels, the rows that enter an
estimate (ok, failed, status counts), group keys, row selection and treatment labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ffbench.core.config import BOOKKEEPING, COMPUTE
from ffbench.stats.defaults import BASE_FACTORS, FAILED, METRIC_PREFIXES, NA, NOT_FACTOR_PREFIXES


def is_metric(column: str) -> bool:
    return column.startswith(METRIC_PREFIXES) or column in ("best_epoch",)


def infer_factors(frame: pd.DataFrame) -> list[str]:
    """Factor columns: neither bookkeeping, nor 'cfg.*' / 'param.*', nor compute, nor a metric, and not
    empty in every row. method, dataset and backbone first, then the ablation axes in table order."""
    rest = [
        c
        for c in frame.columns
        if c not in BOOKKEEPING
        and c not in COMPUTE
        and not c.startswith(NOT_FACTOR_PREFIXES)
        and not is_metric(c)
        and (c in BASE_FACTORS or frame[c].notna().any())
    ]
    return [c for c in BASE_FACTORS if c in rest] + [c for c in rest if c not in BASE_FACTORS]


def axes_of(factors: Sequence[str]) -> list[str]:
    """The ablation axes: the factors other than method, dataset and backbone."""
    return [f for f in factors if f not in BASE_FACTORS]


def levels_of(frame: pd.DataFrame, column: str) -> list:
    """The levels of a factor column, sorted, without '-' (not applicable)."""
    return sorted((v for v in frame[column].unique() if v != NA), key=_sort_key)


def _sort_key(v: Any):
    return (
        (0, v, "")
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        else (1, 0, str(v))
    )


def _hashable(v: Any) -> Any:
    if isinstance(v, (list, dict, tuple, set)):
        import json

        return json.dumps(v, sort_keys=True, default=str)
    return v


def prepare(
    frame: pd.DataFrame,
    factors: Sequence[str] | None = None,
    metric: str | None = None,
    suite_version: int | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """A copy of ``frame`` ready for grouping: one suite version (the latest unless given), factor values
    made hashable and missing levels shown as '-', ``metric`` present (NaN where absent) and float."""
    df = frame.copy()
    if "suite_version" in df and len(df) and df["suite_version"].nunique() > 1:
        v = df["suite_version"].max() if suite_version is None else suite_version
        df = df[df["suite_version"] == v]
    factors = list(factors) if factors is not None else infer_factors(df)
    for f in factors:
        if f not in df:
            df[f] = NA
        df[f] = df[f].map(_hashable).astype(object).where(df[f].notna(), NA)
    if metric is not None:
        df[metric] = pd.to_numeric(df[metric], errors="coerce") if metric in df else np.nan
        df[metric] = df[metric].astype(float)
    if "status" not in df:
        df["status"] = "done"
    return df.reset_index(drop=True), factors


def ok_mask(frame: pd.DataFrame, metric: str) -> pd.Series:
    """Rows that enter an estimate: status 'done' and a finite metric."""
    values = pd.to_numeric(frame[metric], errors="coerce") if metric in frame else pd.Series(np.nan, frame.index)
    return (frame["status"] == "done") & np.isfinite(values.astype(float))


def failed_mask(frame: pd.DataFrame, metric: str) -> pd.Series:
    """Runs that ended without a usable result: failed or diverged, or 'done' with a non-finite metric."""
    return frame["status"].isin(FAILED) | ((frame["status"] == "done") & ~ok_mask(frame, metric))


def status_counts(frame: pd.DataFrame, metric: str) -> dict[str, int]:
    """runs; n (usable); failures (``failed_mask``); missing (pending, running, or any other status)."""
    ok = ok_mask(frame, metric)
    failed = failed_mask(frame, metric)
    return {
        "runs": int(len(frame)),
        "n": int(ok.sum()),
        "failures": int(failed.sum()),
        "missing": int((~ok & ~failed).sum()),
    }


def _key(group: Any) -> tuple:
    return group if isinstance(group, tuple) else (group,)


group_key = _key  # a groupby key as a tuple, for one grouping column as for several


def rows_where(frame: pd.DataFrame, columns: Sequence[str], values: Sequence) -> pd.DataFrame:
    """The rows of ``frame`` whose ``columns`` hold ``values`` (every row for no columns)."""
    if not len(frame):
        return frame
    keep = np.ones(len(frame), bool)
    for c, v in zip(columns, values):
        keep &= (frame[c] == v).to_numpy()
    return frame[keep]


def treatments(df: pd.DataFrame, method_col: str = "method", axes: Sequence[str] = ()) -> pd.Series:
    """A label per row: the method, with the levels of the axes that apply to it ('sff[kernel=3]'). Axis
    levels are treatments, not blocks: a control without the axis is one treatment, never copied."""
    axes = [a for a in axes if a in df]
    if not axes:
        return df[method_col].astype(str)

    def label(row) -> str:
        lv = [
            f"{a}={int(v) if isinstance(v, float) and v.is_integer() else v}" for a, v in zip(axes, row[1:]) if v != NA
        ]
        return f"{row[0]}[{', '.join(lv)}]" if lv else str(row[0])

    return pd.Series([label(r) for r in df[[method_col] + axes].itertuples(index=False)], index=df.index, dtype=object)
