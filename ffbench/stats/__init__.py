"""Statistics over the tidy results table: plain functions over numpy arrays and DataFrames.

No torch and no plotting here (figures.py draws what these functions return). The style is rliable's:
a tidy table in, plain arrays / DataFrames out, and every random draw from an explicit
``numpy.random.Generator``. An ``rng`` argument that is an int seeds a *fresh* Generator (PCG64), so an
estimate does not depend on what was computed before it; pass a Generator to share one stream.

Conventions (the defaults; every function takes them as arguments):

* Accuracies are fractions in [0, 1]; differences are ``method - reference`` (positive: the method is
  higher). Rows of different methods with the same other factor levels and the same seed are paired
  (common random numbers).
* Only rows with status 'done' and a finite metric enter an estimate (the survivors). A run that failed,
  diverged, or finished without a finite metric is a *failure*, an outcome in its own right (failure
  rates, exact tests, a worst-case sensitivity analysis); pending and running rows are *missing*. Both
  are counted and shown, never dropped silently.
* Intervals are 95%. Means of seeds and paired differences: the t interval by default (it keeps its
  coverage at 3-10 seeds, where bootstrap intervals are too narrow); BCa bootstrap (``N_RESAMPLES``
  resamples, percentile when BCa is undefined) on request. Every interval says which method made it.
* Comparison verdicts (``verdict``, ``compare``): one interval, one family; see those functions.

Where things are (each module imports only those above it; every name below is ``ffbench.stats.<name>``):

* ``defaults``: the default levels, counts and thresholds, and the words of the table (statuses, '-')
* ``tables``: metric and factor columns, levels, the rows that count (ok, failed), treatment labels
* ``intervals``: ``Interval``, generators, bootstrap, t and Clopper-Pearson intervals, exact tests
* ``one_sample``: one cell (IQM, ``describe``, ``cell_table``, ``compute_table``)
* ``paired``: two samples paired by seed (effect sizes, paired tests, ``paired_comparison``)
* ``verdicts``: adjusted p-values, verdicts, outlying seeds, the decisions of a family
* ``comparisons``: ``compare``, the comparison table (failures and reliability included)
* ``advisor``: power and the seed-count advisor
* ``cells``: ``cell_summaries``, per cell for the tracker
* ``ablation``: factorial ablations (effects, marginal means)
* ``across_tasks``: per-dataset matrices, ranks, Friedman / Nemenyi, signed-rank tests
* ``aggregates``: rliable aggregates, probability of improvement, performance profiles
* ``variance``: sources of variance (seed, test sample, hyperparameter search)
* ``curves``: learning curves, per-layer diagnostics, tuning budget curves

A module is imported on first use of one of its names, so ``import ffbench.stats`` (the command line's
defaults) costs no scipy or pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

# module -> the names it defines that ffbench.stats re-exports (private ones: used by the tests)
_NAMES = {
    "defaults": (
        "CONFIDENCE ALPHA N_RESAMPLES SEED ROPE POWER EFFECT_MULTIPLES WILCOXON_FLOOR WILCOXON_EXACT_MAX_N "
        "WILCOXON_DRAWS MIN_PAIRS MIN_BOOTSTRAP_N METRIC NA VERDICTS FAILED UNFINISHED INTERVALS BCA_MIN_N RHO "
        "NOT_FACTOR_PREFIXES METRIC_PREFIXES BASE_FACTORS"
    ),
    "tables": (
        "is_metric infer_factors axes_of levels_of prepare ok_mask failed_mask status_counts group_key rows_where "
        "treatments"
    ),
    "intervals": (
        "Interval make_rng bootstrap_ci stratified_bootstrap pooled mean_of_stratum_means t_interval "
        "mean_interval clopper_pearson mcnemar_exact wilcoxon_signed_rank"
    ),
    "one_sample": "iqm describe cell_table executed compute_table",
    "paired": (
        "hedges_correction hedges_g prob_superiority paired_tests paired_superiority bayes_correlated_t "
        "paired_comparison"
    ),
    "verdicts": (
        "adjust_pvalues decision_level verdict interval_verdict outlying seed_influence decide family_decisions "
        "resolve_rope"
    ),
    "comparisons": (
        "paired_values seed_outcomes chance_level failure_score reliability compatible broadcast_na merge_strata "
        "compare"
    ),
    "advisor": "power_paired_integral power_paired power_equivalence seeds_needed seeds_needed_equivalence seed_advice",
    "cells": "cell_summaries",
    "ablation": "ablation_model ablation_effects marginal_means",
    "across_tasks": (
        "dataset_matrices task_matrix average_ranks nemenyi_cd friedman wilcoxon_across control_rank_tests "
        "bayes_signed_rank across_datasets"
    ),
    "aggregates": (
        "normalized_scores optimality_gap probability_of_improvement performance_profile aggregate aggregate_profiles"
    ),
    "variance": "variance_sources variance_table search_variance search_variance_table",
    "curves": (
        "unit_indices curves_long curve_bands first_reach layer_delays summarize_by EXACT_SPEARMAN_MAX_N "
        "correlation_ci fisher_z_mean layer_correlations_within layer_correlations_across expected_max "
        "budget_curves _corr"
    ),
}
_MODULE_OF = {name: module for module, names in _NAMES.items() for name in names.split()}
__all__ = sorted(n for n in _MODULE_OF if not n.startswith("_"))


def __getattr__(name: str) -> Any:
    """``ffbench.stats.<name>``: import the module that defines ``name`` (or the module ``name``) once."""
    if name in _NAMES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_NAMES))
