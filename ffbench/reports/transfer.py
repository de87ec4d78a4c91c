"""Report kind 'transfer': what pretraining on a source task buys on a target task (the ``adapt`` axis).

A run either trains from scratch (``adapt`` unset, or the level 'scratch') or starts from a checkpoint
trained on its config's ``source`` task and adapts it in a mode (linear-probe, local-heads-only,
last-k-units, fine-tune). Per target (dataset, backbone, kept classes, other axes) and source task: each
method's target accuracy per mode with its t interval; the gain over the same method trained from scratch
and the difference against the control in the same mode, both paired by seed and decided by the
comparison report's verdicts (one Holm family for the gains, one for the differences, each over the whole
page); a figure per mode; and the source checkpoints' own accuracy from the runs' manifests.
The computations are the functions below; the kind only lays them out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ffbench import stats
from ffbench.analysis import figures as F
from ffbench.analysis.document import Section, fmt_ci, fmt_num, fmt_pct
from ffbench.analysis.report import ReportKind, report_kind
from ffbench.analysis.report_context import ReportContext, posterior, verdict_label

AXIS = "adapt"
SCRATCH = "scratch"
# display order: from the least to the most that trains on the target
MODES = (SCRATCH, "linear-probe", "local-heads-only", "last-k-units", "fine-tune")
KEYS = ("target", "source", "mode")  # the columns transfer_frame adds
HELPED = {
    "better": "helped",
    "worse": "hurt",
    "equivalent": "no effect beyond the ROPE",
    "insufficient evidence": "unclear",
}


def parse(value: Any) -> Any:
    """A config value as stored in the tidy table (JSON text for lists and dicts), back as Python."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return value


def class_text(classes: Sequence[int] | None) -> str:
    """'0-4' for a run of consecutive labels, else '0, 2, 4'; '' for all classes."""
    if not classes:
        return ""
    c = [int(v) for v in classes]
    if len(c) > 2 and c == list(range(c[0], c[0] + len(c))):
        return f"{c[0]}-{c[-1]}"
    return ", ".join(map(str, c))


def target_label(dataset: str, keep_classes: Sequence[int] | None) -> str:
    """'mnist', or 'mnist classes 5-9'."""
    return f"{dataset} classes {class_text(keep_classes)}" if keep_classes else str(dataset)


def source_label(source: Mapping[str, Any] | None, dataset: str, keep_classes: Sequence[int] | None) -> str:
    """The source task against the target: 'fashion-mnist → mnist', 'mnist classes 0-4 → classes 5-9',
    'imagenet weights → cifar10'."""
    if not source:
        return f"unknown source → {target_label(dataset, keep_classes)}"
    if "weights" in source and "dataset" not in source:
        return f"{source['weights']} weights → {target_label(dataset, keep_classes)}"
    src_ds = source.get("dataset", "?")
    src = target_label(src_ds, source.get("keep_classes"))
    if src_ds == dataset and keep_classes and source.get("keep_classes"):
        return f"{src} → classes {class_text(keep_classes)}"
    return f"{src} → {target_label(dataset, keep_classes)}"


def mode_of(level: Any) -> str:
    """The adaptation mode of a level; no level (older rows, or unset) is training from scratch."""
    return (
        SCRATCH
        if level is None or level in (stats.NA, SCRATCH) or (isinstance(level, float) and math.isnan(level))
        else str(level)
    )


def mode_order(modes: Sequence[str]) -> list[str]:
    """Scratch first, then the known modes in ``MODES`` order, then any other by name."""
    return sorted(set(modes), key=lambda m: (MODES.index(m) if m in MODES else len(MODES), m))


def transfer_frame(frame: pd.DataFrame, axis: str = AXIS) -> pd.DataFrame:
    """``frame`` with the columns ``KEYS``: target (dataset and kept classes), source (the source task; '-'
    for scratch runs, which every source of their target is compared with), mode; and from each run's
    config and manifest the source's method and epochs and its checkpoint (key, accuracies, time)."""
    df = frame.copy()
    keep, sources = (
        [parse(v) for v in df[c]] if c in df else [None] * len(df) for c in ("cfg.keep_classes", "cfg.source")
    )
    df["mode"] = [mode_of(v) for v in df[axis]] if axis in df else SCRATCH
    df["target"] = [target_label(d, k) for d, k in zip(df["dataset"], keep)]
    df["source"] = [
        stats.NA if m == SCRATCH else source_label(s, d, k)
        for m, s, d, k in zip(df["mode"], sources, df["dataset"], keep)
    ]
    ckpt = [
        ((parse(v) if not isinstance(v, dict) else v) or {}).get("source") or {}
        for v in (df["manifest"] if "manifest" in df else [None] * len(df))
    ]
    adapted = df["mode"] != SCRATCH
    for name, values in [("method", sources), ("epochs", sources)] + [
        (k, ckpt) for k in ("key", "test_acc", "val_acc", "train_time_s")
    ]:
        df[f"source_{name}"] = pd.Series(
            [(v or {}).get(name) if a else None for v, a in zip(values, adapted)], index=df.index, dtype=object
        )  # object: an int stays an int beside None
    # one label per source task: a label shared by different source budgets names its epochs
    budgets = df[adapted].groupby("source")["source_epochs"].nunique()
    for label in budgets[budgets > 1].index:
        sel = adapted & (df["source"] == label)
        df.loc[sel, "source"] = [f"{label} ({e} source epochs)" for e in df.loc[sel, "source_epochs"]]
    return df


def strata(groups: Sequence[str]) -> list[str]:
    """The factors of a transfer comparison: the method, the target's factors, source and mode."""
    return ["method", *groups, *KEYS]


def transfer_cells(tf: pd.DataFrame, metric: str, groups: Sequence[str], **options: Any) -> pd.DataFrame:
    """Per method, target, source and mode (``stats.cell_table``): n, mean, SD, t interval, failures."""
    return stats.cell_table(tf, metric, [*groups, *KEYS, "method"], **options)


def method_differences(
    tf: pd.DataFrame, metric: str, groups: Sequence[str], *, control: str, **options: Any
) -> pd.DataFrame:
    """Each method against the control in the same target, source and mode, paired by seed
    (``stats.compare``: one Holm family over all of them)."""
    if control not in set(tf["method"]):
        return pd.DataFrame()
    return stats.compare(tf, metric, control=control, factors=strata(groups), **options)


def pretraining_gains(tf: pd.DataFrame, metric: str, groups: Sequence[str], **options: Any) -> pd.DataFrame:
    """Each mode against the same method trained from scratch on the same target, paired by seed (the
    seed's scratch run; ``stats.compare`` over modes: one Holm family over all the gains). The scratch
    runs ('-' source) pair with every source of their target."""
    if SCRATCH not in set(tf["mode"]) or tf["mode"].nunique() < 2:
        return pd.DataFrame()
    # compare names its treatments 'method': the modes take that column, the methods become a stratum
    by_mode = tf.rename(columns={"method": "base_method"})
    gains = stats.compare(
        by_mode, metric, control=SCRATCH, factors=["base_method", *groups, *KEYS], method_col="mode", **options
    )
    if not len(gains):
        return gains
    return gains.rename(columns={"method": "mode", "reference": "from"}).rename(columns={"base_method": "method"})


def source_accuracy(tf: pd.DataFrame, groups: Sequence[str], confidence: float = stats.CONFIDENCE) -> pd.DataFrame:
    """Per target, source and method: the source checkpoints' test accuracy (from the manifests; one
    value per checkpoint, so modes sharing a seed's checkpoint count once) with its t interval over seeds,
    their validation accuracy and pretraining time, and the source's method and epochs."""
    ad = tf[tf["mode"] != SCRATCH]
    rows = []
    for key, g in ad.groupby([*groups, "target", "source", "method"], sort=True):
        ck = g.assign(_id=[k if k is not None else f"seed {s}" for k, s in zip(g["source_key"], g["seed"])])
        ck = ck.drop_duplicates("_id")
        acc = pd.to_numeric(ck["source_test_acc"], errors="coerce").astype(float)
        ci = stats.t_interval(acc, confidence)
        num = {
            c: float(pd.to_numeric(ck[c], errors="coerce").astype(float).mean())
            for c in ("source_val_acc", "source_train_time_s")
        }
        rows.append(
            {
                **dict(zip([*groups, "target", "source", "method"], key)),
                "checkpoints": len(ck),
                "with_accuracy": int(np.isfinite(acc).sum()),
                "test_acc": float(acc.mean()),
                "ci_low": ci.low,
                "ci_high": ci.high,
                "ci_method": ci.method,
                "val_acc": num["source_val_acc"],
                "train_time_s": num["source_train_time_s"],
                "pretrained_by": ", ".join(sorted({str(v) for v in g["source_method"] if v})) or "—",
                "epochs": ", ".join(sorted({str(v) for v in g["source_epochs"] if v is not None})) or "—",
            }
        )
    return pd.DataFrame(rows)


def mode_winner(means: Mapping[str, float], verdicts: Mapping[str, str], control: str) -> tuple[str, str]:
    """The winner of one mode, named as the headline names one: the highest mean, a winner only when the
    verdicts against the control single it out (else 'none clear', and why)."""
    means = {m: v for m, v in means.items() if np.isfinite(v)}
    if not means:
        return "none", "no surviving runs"
    best = max(means, key=means.get)
    others = {m: verdicts.get(m, "not compared") for m in means if m != control}
    if len(means) == 1:
        return best, "the only method"
    if best != control:
        better = [m for m, v in others.items() if v == "better"]
        if others[best] == "better" and len(better) == 1:
            return best, f"the only method better than {control}"
        return "none clear", f"highest mean {best}, {others[best]} against {control}"
    if others and all(v == "worse" for v in others.values()):
        return control, f"every other method worse than {control}"
    return "none clear", f"{control} has the highest mean; " + ", ".join(
        f"{m}: {v}" for m, v in others.items() if v != "worse"
    )


@report_kind(
    "transfer",
    "Transfer: target accuracy per adaptation mode and method, the gain over training from "
    "scratch and the difference against the control with verdicts, and the source checkpoints' accuracy",
)
class Transfer(ReportKind):
    title = "Transfer from a source task"
    order = 26

    def applicable(self, ctx: ReportContext) -> str | None:
        if AXIS not in ctx.factors:
            return f"the results have no '{AXIS}' factor (factors: {', '.join(ctx.factors)})"
        if all(mode_of(v) == SCRATCH for v in ctx.frame[AXIS]):
            return "no run adapts a pretrained source: every run trains from scratch"
        return None

    def data(self, ctx: ReportContext) -> dict[str, Any]:
        """The page's tables (computed once: the headline reads them too)."""
        o = ctx.options

        def compute():
            groups = [c for c in ctx.task_cols if c != AXIS and c not in KEYS]
            tf = transfer_frame(ctx.frame)
            opts = dict(rope=o.rope, alpha=o.alpha, confidence=o.confidence, n_resamples=o.n_resamples, rng=o.seed)
            cells = transfer_cells(tf, o.metric, groups, confidence=o.confidence, n_resamples=o.n_resamples, rng=o.seed)
            return {
                "groups": groups,
                "frame": tf,
                "cells": cells,
                "diffs": method_differences(tf, o.metric, groups, control=o.control, **opts),
                "gains": pretraining_gains(tf, o.metric, groups, **opts),
                "sources": source_accuracy(tf, groups, o.confidence),
            }

        return ctx.cached("transfer", compute)

    def tasks(self, d: dict[str, Any]) -> list[tuple[tuple, str, str]]:
        """(target factors, target, source) of every source task, in order."""
        tf, groups = d["frame"], d["groups"]
        ad = tf[tf["mode"] != SCRATCH]
        keys = [stats.group_key(k) for k, _ in ad.groupby([*groups, "target", "source"], sort=True)]
        return [(k[:-2], k[-2], k[-1]) for k in keys]

    def part(self, d: dict[str, Any], name: str, fixed: tuple, target: str, source: str) -> pd.DataFrame:
        """One source task's rows of table ``name``: its adapted rows and its target's scratch rows."""
        t = stats.rows_where(d[name], [*d["groups"], "target"], (*fixed, target))
        return t[t["source"].isin([source, stats.NA])] if len(t) else t

    def where(self, d: dict[str, Any], fixed: tuple, source: str) -> str:
        """'fashion-mnist → mnist / cnn': the source task and the target's factors other than its dataset."""
        return " / ".join(
            [source] + [str(v) for c, v in zip(d["groups"], fixed) if c != "dataset" and str(v) != stats.NA]
        )

    def headline(self, ctx: ReportContext) -> list[str]:
        """Per source task: the winner of each mode, and whether pretraining helped each method."""
        d = self.data(ctx)
        control, lines = ctx.options.control, []
        for fixed, target, source in self.tasks(d):
            cells, diffs, gains = (self.part(d, n, fixed, target, source) for n in ("cells", "diffs", "gains"))
            where = self.where(d, fixed, source)
            wins = []
            for mode in mode_order(cells["mode"]):
                c = cells[cells["mode"] == mode]
                v = diffs[diffs["mode"] == mode] if len(diffs) else diffs
                w, why = mode_winner(
                    dict(zip(c["method"], c["mean"])), dict(zip(v["method"], v["verdict"])) if len(v) else {}, control
                )
                wins.append(f"{mode}: **{w}** ({why})")
            line = f"**Transfer, {where}**: winner per mode: " + "; ".join(wins) + "."
            if len(gains):
                helped = [
                    f"{r['method']} {r['mode']} {fmt_ci(r['delta'], r['ci_low'], r['ci_high'])} pp, "
                    f"{HELPED.get(r['verdict'], r['verdict'])}"
                    for r in gains.sort_values(["method", "mode"]).to_dict("records")
                ]
                line += " Pretraining (gain over scratch, 95% CI): " + "; ".join(helped) + "."
            lines.append(line)
        return lines

    def build(self, ctx: ReportContext) -> list[Section]:
        o = ctx.options
        d = self.data(ctx)
        fam_d = int(d["diffs"]["in_family"].sum()) if len(d["diffs"]) else 0
        fam_g = int(d["gains"]["in_family"].sum()) if len(d["gains"]) else 0
        intro = Section("Design")
        intro.text(
            "\n".join(
                [
                    "- Modes: *scratch* (random initialisation, no source), *linear-probe* (the backbone fixed, the "
                    "final read-out trains), *local-heads-only* (the backbone fixed, every unit's head trains), "
                    "*last-k-units* (the first units fixed), *fine-tune* (everything trains). A run without an `adapt` "
                    "level trains from scratch.",
                    f"- Accuracy: `{o.metric}` on the target task per method and mode over the surviving runs, mean ± SD "
                    f"with its {o.confidence:.0%} t interval over seeds.",
                    f"- Gain over scratch: the mode against the same method's scratch run of the same seed (same target "
                    f"split and order), paired by seed; one Holm family over the {fam_g} gains that can reach a verdict.",
                    f"- Against the control `{o.control}`: each method against the control in the same mode and source, "
                    f"paired by seed; one Holm family over the {fam_d} comparisons that can reach a verdict. Both families "
                    "decide as the comparison report does (difference and equivalence claims, read off the decision "
                    f"interval; ROPE {ctx.rope_text()}).",
                    "- Source accuracy: each source checkpoint's own test accuracy (from the run's manifest), one value "
                    "per checkpoint.",
                ]
            )
        )
        sections = [intro]
        for fixed, target, source in self.tasks(d):
            sections.append(self.task(ctx, d, fixed, target, source))
        return sections

    def task(self, ctx: ReportContext, d: dict[str, Any], fixed: tuple, target: str, source: str) -> Section:
        o = ctx.options
        cells, diffs, gains, src = (
            self.part(d, n, fixed, target, source) for n in ("cells", "diffs", "gains", "sources")
        )
        where = self.where(d, fixed, source)
        sec = Section(f"Transfer: {where}")
        modes = mode_order(cells["mode"])
        cells = cells.assign(_o=[modes.index(m) for m in cells["mode"]]).sort_values(["method", "_o"])
        gain = {(r["method"], r["mode"]): r for r in gains.to_dict("records")} if len(gains) else {}
        diff = {(r["method"], r["mode"]): r for r in diffs.to_dict("records")} if len(diffs) else {}
        rows = []
        for c in cells.to_dict("records"):
            g, v = gain.get((c["method"], c["mode"])), diff.get((c["method"], c["mode"]))
            rows.append(
                {
                    "verdict": "control" if c["method"] == o.control else verdict_label(v) if v else "—",
                    "method": c["method"],
                    "mode": c["mode"],
                    "mean ± SD (%)": f"{fmt_pct(c['mean'])} ± {fmt_pct(c['sd'])}",
                    f"{o.confidence:.0%} CI (%)": fmt_ci(math.nan, c["ci_low"], c["ci_high"]).split(" ", 1)[-1]
                    if np.isfinite(c["ci_low"])
                    else "—",
                    "n (failed)": f"{int(c['n'])} ({int(c['failures'])})",
                    "gain over scratch pp [95% CI]": fmt_ci(g["delta"], g["ci_low"], g["ci_high"]) if g else "—",
                    "pretraining": f"{HELPED.get(g['verdict'], g['verdict'])} ({verdict_label(g)})" if g else "—",
                    f"Δ vs {o.control} pp [95% CI]": fmt_ci(v["delta"], v["ci_low"], v["ci_high"]) if v else "—",
                    f"Δ vs {o.control} [decision CI]": fmt_ci(v["delta"], v["dec_low"], v["dec_high"]) if v else "—",
                    "P(worse / ROPE / better)": posterior(v) if v else "—",
                    "pairs (gain; vs control)": f"{g['n_pairs'] if g else '—'}; {v['n_pairs'] if v else '—'}",
                }
            )
        sec.table(
            f"{where}-accuracy",
            cells.drop(columns="_o"),
            pd.DataFrame(rows),
            caption=f"Target accuracy per method and mode with its {o.confidence:.0%} t interval; the gain over "
            "the same method from scratch (paired by seed) and its verdict; the difference against "
            f"`{o.control}` in the same mode (paired by seed) with the decision interval its verdict "
            "is read from and the Bayesian correlated t-test's posterior.",
        )
        sec.figure(
            f"{where}-modes",
            F.points_by_level(
                cells[cells["n"] > 0], x="mode", order=modes, ylabel=f"{o.metric} (%)", xlabel="adaptation", title=where
            ),
            caption=f"Target `{o.metric}` per mode (scratch: no source), each method's mean with its "
            f"{o.confidence:.0%} t interval (clipped to 0-100%); one accuracy axis.",
        )
        if len(src):
            sec.table(
                f"{where}-source",
                src,
                pd.DataFrame(
                    {
                        "method": src["method"],
                        "pretrained by": src["pretrained_by"],
                        "source epochs": src["epochs"],
                        "checkpoints": src["checkpoints"],
                        f"source test accuracy [{o.confidence:.0%} CI] (%)": [
                            fmt_ci(v, lo, hi) if n else "— (not in the manifests)"
                            for v, lo, hi, n in zip(
                                src["test_acc"], src["ci_low"], src["ci_high"], src["with_accuracy"]
                            )
                        ],
                        "source val. accuracy (%)": [fmt_pct(v) for v in src["val_acc"]],
                        "pretraining s": [fmt_num(v, 1) for v in src["train_time_s"]],
                    }
                ),
                caption="The source checkpoints the runs adapted: their own test accuracy on the source task, mean "
                "over the checkpoints (one per seed) with a t interval.",
            )
        return sec
