"""``ffbench report``: its arguments (their defaults are the statistics' own), the report files and headline,
and attaching them to the suite's MLflow experiment."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ffbench.cli.locate import locate


def parse_rope(values: Sequence[str] | None) -> float | dict[str, float] | None:
    """'--rope-pp 0.5' (all datasets) and/or '--rope-pp mnist=0.2' (one dataset), in percentage points."""
    if not values:
        return None
    out: dict[str, float] = {}
    for v in values:
        name, _, num = v.rpartition("=")
        try:
            out[name or "default"] = float(num) / 100.0
        except ValueError:
            raise SystemExit(f"--rope-pp {v!r}: expected a number of percentage points, or DATASET=NUMBER") from None
    return out["default"] if list(out) == ["default"] else out


def add_report_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``ffbench report SUITE --out DIR [--kind ...]``."""
    from ffbench import stats

    parser.add_argument("suite", nargs="?", help="suite name (as stored) or suite file")
    parser.add_argument("--out", help="output directory of the suite (holds results.db); default ffbench-out/SUITE")
    parser.add_argument(
        "--kind",
        action="append",
        metavar="KIND",
        help="report kind (repeatable); default: every registered kind with something to show",
    )
    parser.add_argument("--list-kinds", action="store_true", help="list the registered report kinds and exit")
    parser.add_argument("--control", help="the method others are compared with (default: the suite's, else bp)")
    parser.add_argument(
        "--rope-pp",
        action="append",
        metavar="[DATASET=]PP",
        help=f"ROPE half-width in percentage points, for all datasets or one (repeatable); "
        f"default {stats.ROPE * 100:g}",
    )
    parser.add_argument("--metric", default=stats.METRIC, help=f"metric column (default {stats.METRIC})")
    parser.add_argument("--all-pairs", action="store_true", help="also compare every pair of methods (exploratory, BH)")
    parser.add_argument("--alpha", type=float, default=stats.ALPHA, help=f"significance level (default {stats.ALPHA})")
    parser.add_argument(
        "--resamples", type=int, default=stats.N_RESAMPLES, help=f"bootstrap resamples (default {stats.N_RESAMPLES})"
    )
    parser.add_argument("--seed", type=int, default=stats.SEED, help=f"bootstrap RNG seed (default {stats.SEED})")
    parser.add_argument("--suite-version", type=int, help="suite version to report (default: the latest)")
    parser.add_argument("--split", default="test", choices=("test", "val"), help="split for per-layer diagnostics")
    parser.add_argument("--store", help="results store location or SQLAlchemy URL (default OUT/results.db)")
    parser.add_argument(
        "--include-superseded",
        action="store_true",
        help="also show the runs of superseded cells (settings or code changed since), each apart",
    )
    return parser


def report_arguments(parser: argparse.ArgumentParser) -> None:
    """``ffbench report``'s arguments: the report's own, and the MLflow experiment its files are attached to."""
    add_report_arguments(parser)
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: OUT/mlflow.db when it exists)")


def main_report(args: argparse.Namespace) -> int:
    """Build the reports of ``ffbench report`` (without touching MLflow)."""
    from ffbench.analysis.report import REPORTS, build_report, report_dir

    if getattr(args, "list_kinds", False):
        for c in REPORTS.list():
            print(f"{c.name:12s} {c.summary}")
        return 0
    if not args.suite and not args.out:
        print(
            "error: ffbench report: give a SUITE (a suite file, a name from suites/, or a suite stored under "
            "ffbench-out/<name>) or --out DIR",
            file=sys.stderr,
        )
        return 2
    name, out, suite = locate(args.suite, args.out)
    control = args.control or (suite.control if suite is not None else "bp")
    if args.kind:
        unknown = [k for k in args.kind if k not in REPORTS]
        if unknown:
            from ffbench.plan.suite import did_you_mean

            hint = "".join(did_you_mean(k, REPORTS.names()) for k in unknown)
            print(
                f"error: unknown report kind(s) {', '.join(unknown)}{hint}; registered: {', '.join(REPORTS.names())}",
                file=sys.stderr,
            )
            return 2
    from ffbench.analysis.report import headline
    from ffbench.analysis.report_context import open_store

    store = open_store(out, args.store)
    problem = stored_values_problem(store, name, args.suite_version, args.metric)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    rope = parse_rope(args.rope_pp)
    paths = build_report(
        out,
        name,
        args.kind,
        control=control,
        rope=rope,
        metric=args.metric,
        all_pairs=args.all_pairs,
        alpha=args.alpha,
        n_resamples=args.resamples,
        seed=args.seed,
        split=args.split,
        suite_version=args.suite_version,
        store=store,
        include_superseded=args.include_superseded,
    )
    print(
        "\n".join(
            headline(
                store,
                name,
                control,
                rope,
                args.suite_version,
                args.include_superseded,
                metric=args.metric,
                alpha=args.alpha,
                n_resamples=args.resamples,
                seed=args.seed,
            )
        )
    )
    root = report_dir(out, name)
    pages = [p for p in paths if p.suffix == ".html" and p.parent == root]
    print(f"\nreports: {', '.join(p.name for p in pages)} and {len(paths) - len(pages)} more files under {root}")
    print(f"open: {root / 'index.html'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Build the reports, then attach them (and fresh cell aggregates) to the suite's MLflow experiment."""
    from ffbench.analysis.report import report_dir, report_files

    code = main_report(args)
    if code or args.list_kinds:
        return code
    from ffbench.execution import runner
    from ffbench.record import tracking

    name, out, suite = locate(args.suite, args.out)
    paths = runner.Paths(out)
    uri = args.tracking_uri or (f"sqlite:///{paths.mlflow_db.resolve()}" if paths.mlflow_db.exists() else None)
    if uri is None:
        return 0
    tracker = tracking.Tracker(uri, paths.artifacts)
    tracker.init_experiment(name)
    if suite is not None:  # the cells' aggregates need the design; a stored suite gets its reports attached only
        from ffbench.plan.design import expand
        from ffbench.record.store import Store

        store = Store(args.store or paths.store)
        session = runner.Session(suite, expand(suite), paths, store, tracker, None, 0.0, 0.0)
        tracking.sync(
            store,
            suite.name,
            tracker,
            aggregates=runner.aggregates(session, control=args.control, rope=parse_rope(args.rope_pp)),
        )
    root = report_dir(paths.out, name)
    files = report_files(paths.out, name)
    for folder in sorted({f.parent for f in files}):
        rel = folder.relative_to(root)
        tracker.log_artifacts(
            [f for f in files if f.parent == folder], "report" + ("" if str(rel) == "." else f"/{rel}")
        )
    if tracker.degraded:
        print(f"report files not attached to MLflow ({tracker.degraded})")
    else:
        print(f"attached {len(files)} report files to MLflow experiment {name!r} ({uri})")
    return 0


def stored_values_problem(store, name: str, suite_version: int | None, metric: str) -> str | None:
    """``report --suite-version`` and ``--metric`` against what the store holds of suite ``name`` (naming the
    versions and metrics there), or None; None too when the store has no runs of it (the report says so)."""
    rows = store.rows(name, role="evaluation")
    versions = sorted({int(r["suite_version"]) for r in rows})
    if not versions:
        return None
    if suite_version is not None and suite_version not in versions:
        return (
            f"--suite-version {suite_version}: suite {name!r} has no runs of that version in {store.url}; "
            f"versions there: {', '.join(map(str, versions))}"
        )
    v = versions[-1] if suite_version is None else suite_version
    metrics = sorted(
        {
            k
            for r in rows
            if r["suite_version"] == v
            for k, x in (r["metrics"] or {}).items()
            if isinstance(x, (int, float)) and not isinstance(x, bool)
        }
    )
    if metric not in metrics:
        from ffbench.plan.suite import did_you_mean

        return (
            f"--metric {metric!r}: suite {name!r} (version {v}) has no such metric{did_you_mean(metric, metrics)}; "
            f"metrics there: {', '.join(metrics)}"
        )
    return None
