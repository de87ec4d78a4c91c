"""The defaults every statistic takes as an argument (confidence, alpha, resamples, seed, ROPE, power, the
Wilcoxon and bootstrap thresholds) and the words of the results table (statuses, verdicts, '-')."""

CONFIDENCE = 0.95
ALPHA = 0.05
N_RESAMPLES = 10_000
SEED = 0
ROPE = 0.005  # 0.5 percentage points of accuracy, on each side of 0
POWER = 0.8
EFFECT_MULTIPLES = (1.0, 2.0)  # the seed advisor's default effects: the ROPE and twice it (smaller are never 'better')
WILCOXON_FLOOR = 6  # fewer pairs: the two-sided exact p cannot fall below 0.05 (smallest p at n=5 is 0.0625)
WILCOXON_EXACT_MAX_N = 400  # up to here the signed-rank p is exact (the whole sign-flip distribution, counted)
WILCOXON_DRAWS = 200_000  # beyond it: this many seeded random sign flips (Monte Carlo SE of p below 0.0012)
MIN_PAIRS = 3  # fewer paired seeds: no verdict ('insufficient evidence')
MIN_BOOTSTRAP_N = 3  # fewer values: no bootstrap interval
METRIC = "test_acc"
NA = "-"  # the level shown where an axis does not apply to a method (None in the store)
VERDICTS = ("better", "equivalent", "worse", "insufficient evidence")
FAILED = ("failed", "diverged")  # terminal statuses without a result; 'done' with a non-finite metric counts too
UNFINISHED = ("pending", "running")
INTERVALS = ("t", "BCa", "percentile", "auto")  # 'auto': t below BCA_MIN_N values, BCa from there on
BCA_MIN_N = 30
RHO = 0.0  # correlation of per-seed differences for the Bayesian correlated t-test (seeds on a fixed split)

NOT_FACTOR_PREFIXES = ("cfg.", "param.", "_")
METRIC_PREFIXES = ("val_", "test_", "train_", "best_")
BASE_FACTORS = ("method", "dataset", "backbone")
