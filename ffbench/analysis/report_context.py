"""What a report kind sees: a suite's results loaded from the store, the report options, and the
statistics every kind shares (computed once per report and cached).

``load_tables`` reads one suite version's evaluation and tuning runs, and its factors from the stored
rows' ``factors`` (method, dataset, backbone and the axes), so the statistics never guess which columns
are factors. ``ReportContext`` prepares the tidy table (``stats.prepare``), labels each row's task
(the factor levels other than the method) and caches the cell table and the comparisons.

The sections every page shares are made here too: the headline (the winner per task, each method's
verdict against the control with its interval and posterior probabilities, the failures), the statement
of methods, and the references (papers only, so a reader can look up every method named).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ffbench import stats
from ffbench.analysis.document import Section, fmt_ci, fmt_num, fmt_pct, natural_key
from ffbench.record import resultset

# Papers the reports cite, by key: a reader can find each from what is printed.
REFERENCES = {
    "corani2015": "Corani, G. & Benavoli, A. (2015). A Bayesian approach for comparing cross-validated algorithms "
    "on multiple data sets. Machine Learning 100, 285–304.",
    "benavoli2017": "Benavoli, A., Corani, G., Demšar, J. & Zaffalon, M. (2017). Time for a change: a tutorial for "
    "comparing multiple classifiers through Bayesian analysis. JMLR 18(77). arXiv:1606.04316.",
    "demsar2006": "Demšar, J. (2006). Statistical comparisons of classifiers over multiple data sets. JMLR 7, 1–30.",
    "holm1979": "Holm, S. (1979). A simple sequentially rejective multiple test procedure. Scandinavian Journal of "
    "Statistics 6, 65–70.",
    "bh1995": "Benjamini, Y. & Hochberg, Y. (1995). Controlling the false discovery rate: a practical and powerful "
    "approach to multiple testing. JRSS B 57, 289–300.",
    "dodge2019": "Dodge, J., Gururangan, S., Card, D., Schwartz, R. & Smith, N. A. (2019). Show your work: improved "
    "reporting of experimental results. EMNLP 2019. arXiv:1909.03004.",
    "agarwal2021": "Agarwal, R., Schwarzer, M., Castro, P. S., Courville, A. & Bellemare, M. G. (2021). Deep "
    "reinforcement learning at the edge of the statistical precipice. NeurIPS 2021. arXiv:2108.13264.",
    "adamson2025": "Adamson (2025). The Forward-Forward Algorithm: Characterizing Training Behavior. arXiv:2504.11229.",
}
SHARED_REFERENCES = ("holm1979", "bh1995", "corani2015")  # cited by the headline and the statement of methods


def references_section(keys: Sequence[str]) -> Section:
    """The papers behind ``keys`` (and those every page cites), in citation-key order."""
    keys = list(dict.fromkeys([*SHARED_REFERENCES, *keys]))
    return Section("References").text("\n".join(f"- {REFERENCES[k]}" for k in sorted(keys, key=REFERENCES.get)))


def fail_rate(k, n, lo, hi) -> str:
    """A failure count in words with the exact interval of its rate: 'none of 3', '1 of 3 (1–91%)'; '—'
    without outcomes."""
    if not n:
        return "—"
    return f"none of {int(n)}" if not k else f"{int(k)} of {int(n)} ({fmt_pct(lo, 0)}–{fmt_pct(hi, 0)}%)"


def verdict_label(r: Mapping[str, Any]) -> str:
    """The verdict with its flags: reliability (exact test of the failure rates), the sensitivity of
    the verdict to failures scored as chance accuracy, and a seed outlying from the others
    (``stats.seed_influence``: the interval behind the verdict then under-covers)."""
    flags = [r["reliability_flag"]] if r.get("reliability_flag") else []
    if r.get("one_seed"):
        flags.append(r["one_seed"])
    if not r.get("survives_failures", True):
        flags.append(f"failures as chance: {r['sens_verdict']}")
    return r["verdict"] + (f" ({'; '.join(flags)})" if flags else "")


def posterior(r: Mapping[str, Any]) -> str:
    return " / ".join(fmt_num(r[k], 2) for k in ("bayes_p_worse", "bayes_p_rope", "bayes_p_better"))


def verdicts_display(comp: pd.DataFrame, task: bool = True) -> pd.DataFrame:
    """The compact verdict table (verdict first): what a comparison concluded, its decision interval, its
    posterior probabilities and the failures of both sides; the test statistics are shown apart."""
    recs = comp.to_dict("records")
    return pd.DataFrame(
        {
            "verdict": [verdict_label(r) for r in recs],
            "method": comp["method"],  # the difference next: in view on a phone before the table scrolls
            "Δ pp [decision CI]": [
                fmt_ci(d, lo, hi) for d, lo, hi in zip(comp["delta"], comp["dec_low"], comp["dec_high"])
            ],
            "vs": comp["reference"],
            **({"task": comp["task"]} if task and "task" in comp else {}),
            "P(worse / ROPE / better)": [posterior(r) for r in recs],
            "pairs": comp["n_pairs"],
            "runs failed: method; vs": [_failed_both(r) for r in recs],
        }
    )


def _failed_both(r: Mapping[str, Any]) -> str:
    """The failures of both sides of a comparison in words ('1 of 3 (1–91%); none of 3'), 'none' when neither
    failed."""
    m = fail_rate(r["fail_method"], r["outcomes_method"], r["fail_rate_method_low"], r["fail_rate_method_high"])
    ref = fail_rate(
        r["fail_reference"], r["outcomes_reference"], r["fail_rate_reference_low"], r["fail_rate_reference_high"]
    )
    return "none" if not r["fail_method"] and not r["fail_reference"] else f"{m}; {ref}"


@dataclass
class Options:
    metric: str = stats.METRIC
    control: str = "bp"
    rope: float | Mapping[str, float] | None = None
    all_pairs: bool = False
    confirmatory: Sequence[tuple[str, str]] | None = None
    alpha: float = stats.ALPHA
    confidence: float = stats.CONFIDENCE
    n_resamples: int = stats.N_RESAMPLES
    seed: int = stats.SEED
    split: str = "test"  # per-layer diagnostics
    delay_fraction: float = 0.9
    power: float = stats.POWER
    deltas: Sequence[float] | None = None  # the seed advisor's effects; None: multiples of the ROPE


class ReportContext:
    """What a kind sees: the tidy tables, the factors, the options, and cached shared statistics."""

    def __init__(
        self,
        suite: str,
        frame: pd.DataFrame,
        tuning: pd.DataFrame,
        options: Options,
        factors: Sequence[str] | None = None,
        older_versions: int = 0,
        repeats: pd.DataFrame | None = None,
        superseded: str | None = None,
    ):
        self.suite = suite
        self.options = options
        self.raw = frame
        self.superseded = superseded  # the sentence naming the superseded runs left out (or shown apart)
        stored = list(factors) if factors is not None else stats.infer_factors(frame)
        frame, factors = resultset.fold_variants(frame, stored, options.control)
        self.frame, self.factors = stats.prepare(frame, factors, options.metric)
        self.suite_version = (
            int(self.frame["suite_version"].max()) if "suite_version" in self.frame and len(self.frame) else None
        )
        self.older_versions = older_versions
        folded = [f for f in stored if f not in factors]  # method-only axes, now method variants
        self.tuning = resultset.fold_variants(tuning, stored, axes=folded)[0] if tuning is not None else tuning
        self.axes = stats.axes_of(self.factors)
        self.task_cols = [f for f in self.factors if f != "method"]
        self.frame["task"] = self._task(self.frame)
        self.repeats = pd.DataFrame()  # the runs of later tuning repeats' choices, prepared like the frame
        if repeats is not None and len(repeats):
            self.repeats = stats.prepare(
                resultset.fold_variants(repeats, stored, axes=folded)[0], self.factors, options.metric
            )[0]
            self.repeats["task"] = self._task(self.repeats)
        self.cache: dict[str, Any] = {}

    def _task(self, df: pd.DataFrame) -> pd.Series:
        """'dataset / backbone / axis=level ...' (axes that do not apply, '-', left out)."""
        cols = [c for c in self.task_cols if c in df]
        if not cols:
            return pd.Series("all", index=df.index)

        def label(row) -> str:
            parts = [
                str(v) if c in stats.BASE_FACTORS else f"{c}={v}"
                for c, v in zip(cols, row)
                if v is not None and str(v) != stats.NA
            ]
            return " / ".join(parts) or "all"

        return pd.Series([label(r) for r in df[cols].itertuples(index=False)], index=df.index, dtype=object)

    def with_task(self, df: pd.DataFrame) -> pd.DataFrame:
        """``df`` with a 'task' label column joined from the non-method factor columns it has."""
        if df is None or not len(df) or "task" in df:
            return df
        return df.assign(task=self._task(df))

    def cached(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = fn()
        return self.cache[key]

    # shared statistics -------------------------------------------------------
    @property
    def methods(self) -> list[str]:
        return sorted(self.frame["method"].astype(str).unique()) if "method" in self.frame else []

    def cells(self) -> pd.DataFrame:
        o = self.options
        return self.cached(
            "cells",
            lambda: self.with_task(
                stats.cell_table(
                    self.frame, o.metric, self.factors, confidence=o.confidence, n_resamples=o.n_resamples, rng=o.seed
                )
            ),
        )

    def comparisons(self) -> pd.DataFrame:
        o = self.options
        return self.cached(
            "comparisons",
            lambda: self.with_task(
                stats.compare(
                    self.frame,
                    o.metric,
                    control=o.control,
                    factors=self.factors,
                    confirmatory=o.confirmatory,
                    all_pairs=o.all_pairs,
                    rope=o.rope,
                    alpha=o.alpha,
                    confidence=o.confidence,
                    n_resamples=o.n_resamples,
                    rng=o.seed,
                )
            ),
        )

    def counts(self) -> dict[str, int]:
        return self.frame["status"].value_counts().to_dict()

    def rope_text(self) -> str:
        r = self.options.rope
        if r is None:
            return f"±{stats.ROPE * 100:g} pp (the default) on every dataset"
        if isinstance(r, Mapping):
            return "; ".join(f"{k}: ±{v * 100:g} pp" for k, v in r.items())
        return f"±{float(r) * 100:g} pp on every dataset"

    def confirmatory(self) -> pd.DataFrame:
        """Each method against the control (the confirmatory family); empty when the control has no runs."""
        if self.options.control not in self.methods and not self.options.confirmatory:
            return pd.DataFrame()
        comp = self.comparisons()
        return comp[comp["family"] == "confirmatory"] if len(comp) else comp

    def winners(self) -> pd.DataFrame:
        """Per task, the method with the highest mean over its surviving runs, and whether the verdicts
        against the control single it out: a winner is named only when the statistics separate it."""
        cells, conf, control = self.cells(), self.confirmatory(), self.options.control
        verdict = {(r["task"], r["method"]): r["verdict"] for r in conf.to_dict("records")} if len(conf) else {}
        rows = []
        for task, g in sorted(cells[cells["n"] > 0].groupby("task"), key=lambda tg: natural_key(tg[0])):
            g = g.sort_values("mean", ascending=False)
            best = g.iloc[0]
            others = [(m, verdict.get((task, m), "not compared")) for m in g["method"] if m != control]
            if best["method"] != control:
                v = verdict.get((task, best["method"]), "not compared")
                better = [m for m, vm in others if vm == "better"]
                if v == "better" and len(better) == 1:
                    winner, why = best["method"], f"the only method better than {control}"
                elif v == "better":
                    winner, why = (
                        "none clear",
                        (f"{', '.join(better)} better than {control}; not compared with each other (--all-pairs)"),
                    )
                else:
                    winner, why = "none clear", f"highest mean, but {v} against {control}"
            elif len(g) == 1:
                winner, why = best["method"], "the only method"
            elif others and all(v == "worse" for _, v in others):
                winner, why = control, f"every other method worse than {control}"
            else:
                winner, why = (
                    "none clear",
                    f"{control} has the highest mean; " + ", ".join(f"{m}: {v}" for m, v in others if v != "worse"),
                )
            rows.append(
                {
                    "task": task,
                    "winner": winner,  # the accuracy early: in view on a phone
                    "mean [CI] (%)": fmt_ci(best["mean"], best["ci_low"], best["ci_high"]),
                    "n": int(best["n"]),
                    "highest mean": best["method"],
                    "why": why,
                }
            )
        return pd.DataFrame(rows)

    def headline(self, extra: Sequence[str] = ()) -> Section:
        """What a reader needs at a glance: the winner per task, every verdict against the control with its
        decision interval and posterior probabilities, and the failures. ``extra``: a kind's own lines."""
        o = self.options
        sec = Section("Headline", kind="headline")
        win = self.winners()
        if len(win):
            sec.table(
                "headline_winners",
                win,
                caption="Winner per task: the highest mean accuracy, named a winner "
                f"only when the verdicts against the control `{o.control}` separate it (otherwise 'none clear'). "
                f"Mean over surviving runs with its {o.confidence:.0%} t interval.",
            )
        conf = self.confirmatory()
        if len(conf):
            sec.table(
                "headline_verdicts",
                conf,
                verdicts_display(conf),
                caption=f"Each method against `{o.control}`, paired by seed: Δ = method − control in percentage "
                "points with the interval the verdict is read from (Holm-consistent level); P(worse / "
                f"ROPE / better): the Bayesian correlated t-test's posterior (ROPE {self.rope_text()}); "
                "failures with exact 95% intervals.",
            )
        elif o.control not in self.methods:
            sec.note(f"The control `{o.control}` has no runs in this suite: no verdicts (set `--control`).")
        sec.text(self.failure_line())
        if self.superseded:
            sec.note(self.superseded[0].upper() + self.superseded[1:] + ".")
        for line in extra:
            sec.text(line)
        return sec

    def failure_line(self) -> str:
        """Failures in one sentence: how many runs failed or are unfinished, and where."""
        f = self.frame
        failed = f[f["status"].isin(stats.FAILED) | ((f["status"] == "done") & ~stats.ok_mask(f, self.options.metric))]
        unfinished = f[f["status"].isin(stats.UNFINISHED)]
        if not len(failed) and not len(unfinished):
            return f"**Failures: none.** All {len(f)} evaluation runs finished with a value."
        where = "; ".join(f"{m} / {t}: {len(g)}" for (m, t), g in failed.groupby(["method", "task"], sort=True))
        first = next(
            (str(e).strip().splitlines()[0][:120] for e in failed.get("error", []) if isinstance(e, str) and e.strip()),
            "",
        )
        return (
            f"**Failures: {len(failed)} of {len(f)} evaluation runs failed**"
            + (f" ({where})" if where else "")
            + (f", e.g. “{first}”" if first else "")
            + (f"; {len(unfinished)} not finished" if len(unfinished) else "")
            + ". Failed runs are counted as outcomes, never dropped (see the failure rates above)."
        )

    def methods_section(self, extra: Sequence[str] = ()) -> Section:
        """The statement every report carries: data, n, seeds, intervals, tests, corrections, ROPE, RNG."""
        o = self.options
        counts = self.counts()
        seeds = sorted(self.frame["seed"].unique()) if "seed" in self.frame else []
        lines = [
            f"- Suite **{self.suite}**, version {self.suite_version}; {len(self.frame)} evaluation runs: "
            + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            + (f" ({self.older_versions} runs of older suite versions are not used)" if self.older_versions else "")
            + ".",
            f"- Metric: `{o.metric}` (test accuracy at the best-validation epoch unless stated), shown in %.",
            f"- Seeds (common random numbers: the same seed gives every method the same split, order and "
            f"augmentation): {', '.join(map(str, seeds)) or 'none'}. Runs of different methods with the same "
            "other factor levels and seed are paired.",
            "- Failed runs (failed, diverged, or finished without a value) and missing ones (pending, running) are "
            "counted in every table and left out of the means, which are over the surviving runs only; failures "
            "enter the verdicts as an outcome (failure rates, McNemar's exact test, a sensitivity analysis).",
            f"- Intervals: {o.confidence:.0%}; means over seeds and paired differences: t intervals (each table "
            "names its method); bootstrap intervals (effect sizes, aggregates): BCa or percentile, "
            f"{o.n_resamples} resamples, numpy Generator (PCG64) seeded {o.seed} afresh for each estimate; "
            "stratified-bootstrap (percentile) intervals resample seeds within strata; curve bands are t intervals "
            "over seeds.",
            f"- Comparisons: paired t-test on the per-seed differences (p_t), Wilcoxon signed-rank as a robustness "
            f"check (no p below 0.05 is possible with fewer than {stats.WILCOXON_FLOOR} pairs), Hedges' g "
            "(pooled SD, exact small-sample correction) and the probability of superiority P(A>B)+½P(=), both "
            "with paired bootstrap intervals, the paired P(Δ>0), and the Bayesian correlated t-test (ρ = 0; Corani & "
            "Benavoli 2015). "
            "Confirmatory family (each method vs the control "
            f"`{o.control}`{', as declared' if o.confirmatory else ''}): one Holm family over the difference and "
            "equivalence claims of every comparison that can reach a verdict (Holm 1979); exploratory family (other "
            f"pairs): Benjamini–Hochberg (1995). α = {o.alpha:g}.",
            f"- ROPE (region of practical equivalence): {self.rope_text()}.",
            "- Verdict, read off one decision interval (the t interval of the difference at the level where the "
            "family's correction stops): *equivalent* if it lies within ±ROPE; else *better* / *worse* if it "
            "excludes 0; otherwise *insufficient evidence* (also whenever fewer than "
            f"{stats.MIN_PAIRS} seeds pair up, or all differences are equal: degenerate, no claim).",
        ]
        lines += list(extra)
        return Section("How these numbers were made").text("\n".join(lines))


@dataclass
class Tables:
    """One suite version's results as the report reads them."""

    frame: pd.DataFrame  # evaluation runs
    tuning: pd.DataFrame  # tuning trials (empty when the suite does not tune)
    factors: list[str]  # from the rows' stored factors: method, dataset, backbone, then the axes
    older_versions: int  # evaluation runs of other suite versions, left out
    repeats: pd.DataFrame | None = None  # runs of the configurations chosen by later repeats of the search
    superseded_note: str | None = None  # what is left out: runs of cells the current design no longer declares


def open_store(out_dir: Path, store: Any = None):
    """The results store: ``store`` (a Store or a location), else ``<out_dir>/results.db``, which must exist."""
    from ffbench.record.store import Store

    if store is None:
        loc = Path(out_dir) / "results.db"
        if not loc.exists():
            raise FileNotFoundError(
                f"no results store at {loc}; run the suite first (ffbench run SUITE --out {out_dir})"
            )
        return Store(loc)
    return store if hasattr(store, "frame") else Store(store)


def load_tables(store: Any, suite: str, suite_version: int | None = None, include_superseded: bool = False) -> Tables:
    """The evaluation and tuning runs of one version of ``suite`` (the latest unless given) that are its
    results (``resultset``: the current design's cells; with ``include_superseded`` the superseded cells'
    runs too, each cell apart), and its factors."""
    evaluation = resultset.load(store, suite, suite_version, "evaluation", include_superseded)
    frame, v = evaluation.frame, evaluation.version
    if not len(frame) and v is None:
        raise ValueError(
            f"no evaluation runs of suite {suite!r} in {store.url}; suites there: {', '.join(store.suites()) or 'none'}"
        )
    if not len(frame):
        raise ValueError(
            f"suite {suite!r} has no evaluation runs of version {v}"
            + (
                f" in its current design ({resultset.superseded_note(evaluation.superseded)})"
                if len(evaluation.superseded)
                else ""
            )
        )
    tuning = resultset.load(store, suite, v, "tuning", include_superseded).frame
    # each run's manifest (a bookkeeping column, never a factor): e.g. the source checkpoint a transfer run read
    manifests = {r.run_id: r.manifest for r in store.rows(suite, role="evaluation", suite_version=v)}
    frame["manifest"] = frame["run_id"].map(manifests)
    repeats = resultset.load(store, suite, v, "repeat", include_superseded).frame
    return Tables(
        frame,
        tuning,
        stored_factors(store, suite, v, frame),
        evaluation.older_versions,
        repeats,
        resultset.superseded_note(evaluation.superseded, include_superseded),
    )


def stored_factors(store: Any, suite: str, version: int, frame: pd.DataFrame) -> list[str]:
    """The factor names the rows were stored with (their ``factors`` JSON): method, dataset and backbone
    first, then the axes in the design's order; an axis that applies to none of the runs (None in every
    row) is left out, as it splits nothing."""
    names: dict[str, None] = {}
    runs = set(frame["run_id"]) if "run_id" in frame else None
    for r in store.rows(suite, role="evaluation", suite_version=version):
        if runs is None or r.run_id in runs:
            names.update(dict.fromkeys(r.factors or {}))
    base = [f for f in stats.BASE_FACTORS if f in names]
    axes = [f for f in names if f not in stats.BASE_FACTORS and f in frame and frame[f].notna().any()]
    return base + axes
