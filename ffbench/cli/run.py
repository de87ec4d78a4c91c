"""``ffbench run``, ``worker`` and ``sync``: their arguments, and what they print (the results table, the dry-run
plan with its time estimate, the tuning summary)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SUITE_HELP = "a suite: a name from suites/ (e.g. quick) or the path of a .toml file"
OUT_HELP = "output directory (results store, MLflow store, tables)"


def run_arguments(p: argparse.ArgumentParser) -> None:
    from ffbench.execution.ray_executor import add_ray_arguments

    p.add_argument("suite", help=SUITE_HELP)
    p.add_argument("--out", help=f"{OUT_HELP} (default: ffbench-out/<suite name>)")
    p.add_argument("--device", default="auto", help="auto (cuda when present, else cpu), cpu, cuda, cuda:N")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: OUT/mlflow.db, a SQLite file)")
    p.add_argument(
        "--dry-run", action="store_true", help="list the cells, runs and budget with a time estimate; train nothing"
    )
    p.add_argument(
        "--no-estimate",
        action="store_true",
        help="with --dry-run: skip the time estimate (its timed probe trains a few steps per method)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _shared_options(p)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes on this machine (one device each, round-robin over cuda:i)",
    )
    p.add_argument(
        "--rerun",
        action="append",
        metavar="PATTERN",
        help="execute again the cells whose label (method/dataset/backbone/axis=level) or method matches "
        "this wildcard (repeatable); the old results are kept as superseded",
    )
    _part_options(p)
    add_ray_arguments(p)


def worker_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help=SUITE_HELP)
    p.add_argument("--out", help="output directory for local files (default: ffbench-out/<suite name>)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument(
        "--tracking-uri", help="MLflow tracking URI, a shared server for several machines (default: OUT/mlflow.db)"
    )
    _shared_options(p)
    p.add_argument("--workers", type=int, default=1, help="start this many local worker processes")
    p.add_argument(
        "--poll",
        type=float,
        help="seconds between looks while other workers hold runs (default: a quarter of the lease, at most 5)",
    )
    p.add_argument(
        "--no-init", action="store_true", help="do not initialise the store, studies and MLflow (the launcher did)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _part_options(p)


def sync_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help=SUITE_HELP)
    p.add_argument("--out", help=f"{OUT_HELP} (default: ffbench-out/<suite name>)")
    p.add_argument("--store", help="results store URL (default: OUT/results.db)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: OUT/mlflow.db)")


def _shared_options(p: argparse.ArgumentParser) -> None:
    from ffbench.execution.lease import LEASE_RANGE, LEASE_S

    p.add_argument(
        "--store",
        help="results store URL (default: SQLite in the output directory; postgresql://... for several machines)",
    )
    p.add_argument(
        "--optuna-storage",
        help="Optuna storage for tuning (default: the store's database if it is "
        "PostgreSQL, else journal:<out>/optuna.journal)",
    )
    p.add_argument(
        "--lease",
        type=float,
        default=LEASE_S,
        help=f"seconds without a heartbeat after which a run is taken over (default {LEASE_S:g}; "
        f"{LEASE_RANGE[0]:g} to {LEASE_RANGE[1]:g})",
    )
    p.add_argument("--no-tracking", action="store_true", help="do not mirror runs to MLflow")


MAX_SEEDS = 10_000  # seeds one --seeds range may name


def parse_seeds(text: str) -> list[int]:
    """'0,1,2', '0-2' or a mix ('0-2,7'): the evaluation seeds of ``--seeds``."""
    from ffbench.plan.suite import INT_MAX

    seeds: list[int] = []
    for part in filter(None, (t.strip() for t in text.split(","))):
        low, dash, high = part.partition("-")
        try:
            first, last = (int(low), int(high)) if dash else (int(part), int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: expected seeds such as 0,1,2 or 0-2") from None
        if not 0 <= first <= last <= INT_MAX or last - first >= MAX_SEEDS:
            raise argparse.ArgumentTypeError(
                f"{part!r}: allowed: seeds in 0..{INT_MAX}, ranges of at most {MAX_SEEDS:,} seeds"
            )
        seeds += range(first, last + 1)
    if not seeds:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seeds such as 0,1,2 or 0-2")
    return sorted(set(seeds))


def _part_options(p: argparse.ArgumentParser) -> None:
    """--cells / --seeds: work on part of a suite; the results go where the whole suite's do."""
    p.add_argument(
        "--cells",
        action="append",
        metavar="PATTERN",
        default=[],
        help="only the cells whose label (method/dataset/backbone/axis=level) or method matches this "
        "wildcard (repeatable)",
    )
    p.add_argument(
        "--seeds",
        type=parse_seeds,
        default=[],
        metavar="SEEDS",
        help="only these evaluation seeds of the suite (0,1,2 or 0-2)",
    )


def cmd_run(args: argparse.Namespace) -> int:
    from ffbench.execution import runner

    if args.dry_run:
        return dry_run(args)
    try:
        common = dict(
            device=args.device,
            tracking_uri=args.tracking_uri,
            progress=not args.no_progress,
            track=not args.no_tracking,
            workers=args.workers,
            store_url=args.store,
            optuna_storage=args.optuna_storage,
            lease_s=args.lease,
            rerun=args.rerun,
            cells=args.cells,
            seeds=args.seeds,
        )
        if args.executor == "ray":
            from ffbench.execution import ray_executor

            summary = ray_executor.run_suite(args.suite, args.out, **common, **ray_executor.ray_options(args))
        else:
            summary = runner.run_suite(args.suite, args.out, **common)
    except BaseException as exc:  # interrupted, a refused store, unusable data, a failing disk: one line
        code = runner.stopped(exc)
        if code is None:
            raise
        return code
    code = report_run(args, summary)
    runner.backlog(summary.get("tracker"), summary["store"], summary["suite"])
    return code


def report_run(args: argparse.Namespace, summary: dict) -> int:
    from ffbench.execution import results

    suite, design, paths, store = summary["suite"], summary["design"], summary["paths"], summary["store"]
    table, frame = results.results_table(store, suite, design)
    text = results.format_table(table)
    out = paths.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(f"# {suite.name} (version {suite.version})\n\n{text}\n")
    frame.drop(columns=["curves"], errors="ignore").to_csv(out / "results.csv", index=False)
    _print_design_notes(design)
    print(text)
    if design.trials:
        _print_tuning(store, suite, design, out)
    fails = results.failures(store, suite, design)
    failed = [f for f in fails if f["status"] == "failed"]
    if failed:
        print(f"\n{len(failed)} failed runs (recorded as outcomes):")
        for f in failed[:20]:
            what = f"trial {f['trial']}" if f["role"] == "tuning" else f"seed {f['seed']}"
            print(f"  {f['run_id']}  {f['cell']} {what}: {f['message']}")
        if len(failed) > 20:
            print(f"  ... and {len(failed) - 20} more (results.csv has them all)")
    prog = summary["progress"]
    left = prog["total"] - prog["finished"]
    others = summary.get("by_others") or 0
    print(
        f"\nran {summary['executed']} of {prog['total']} runs "
        + (f"here this time; {others} by other processes " if others else "this time ")
        + f"({prog['finished']} finished: {prog.get('done', 0)} done, {prog.get('failed', 0)} failed, "
        f"{prog.get('pruned', 0)} pruned; {left} left)"
    )
    if any(summary.get("exit_codes") or []):
        print(f"worker exit codes: {summary['exit_codes']} (logs: {out / 'logs'})")
    if left:
        print("some runs are not finished (held by other workers, or a worker died): run the suite again to resume")
    print(f"results store: {store.url}")
    print(f"results table: {out / 'table.md'} and {out / 'results.csv'}")
    if summary.get("optuna_storage"):
        print(f"Optuna studies: {summary['optuna_storage']}")
    if summary.get("tracking_uri"):
        print(f"MLflow store:  {summary['tracking_uri']}  (browse: ffbench ui --out {args.out or paths.out})")
    return 0 if not left else 1


def _print_design_notes(design) -> None:
    for reason, n in design.dropped_summary():
        print(f"dropped {n} combination{'s' * (n != 1)}: {reason}")
    for reason, n in design.merged_summary():
        print(f"merged {n} combination{'s' * (n != 1)} into an existing cell: {reason}")


def _print_tuning(store, suite, design, out: Path) -> None:
    from ffbench.execution.results import budget_curves

    curves = budget_curves(store, suite, design)
    if not len(curves):
        return
    curves.to_csv(out / "budget_curves.csv", index=False)
    print("\ntuning (per cell: trials done / pruned / failed, best validation accuracy, chosen parameters):")
    for cell in design.cells:
        g = curves[curves["cell_id"] == cell.cell_id]
        if not len(g):
            continue
        counts = "/".join(str(int((g["status"] == s).sum())) for s in ("done", "pruned", "failed"))
        chosen = g[g["chosen"]]
        params = ""
        if len(chosen):
            c = chosen.iloc[0]
            params = ", ".join(f"{k[6:]}={_fmt(c[k])}" for k in g.columns if k.startswith("param.") and c[k] == c[k])
        best = g["best_val_acc"].iloc[-1]
        print(
            f"  {cell.cell_id}  {cell.label}: {counts} of {cell.tuning['trials']}, best val {best * 100:.2f}%  {params}"
            if best == best
            else f"  {cell.cell_id}  {cell.label}: {counts}"
        )
    print(f"budget curves: {out / 'budget_curves.csv'}")


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def cmd_worker(args: argparse.Namespace) -> int:
    """A worker against a shared store (several machines), or N local ones."""
    from ffbench.execution import runner

    try:
        r = runner.run_worker(
            args.suite,
            args.out,
            device=args.device,
            workers=args.workers,
            store_url=args.store,
            optuna_storage=args.optuna_storage,
            tracking_uri=args.tracking_uri,
            track=not args.no_tracking,
            lease_s=args.lease,
            poll_s=args.poll,
            init=not args.no_init,
            progress=not args.no_progress,
            cells=args.cells,
            seeds=args.seeds,
        )
    except BaseException as exc:  # interrupted (its run was given back), a refused store, unusable data
        code = runner.stopped(exc)
        if code is None:
            raise
        return code
    if args.workers > 1:
        codes = r["exit_codes"]
        print(f"{args.workers} workers exited with {codes}")
        runner.backlog(r["tracker"], r["store"], r["suite"])
        return max(codes) if codes else 0
    prog = r["progress"]
    print(f"worker {r['worker']}: executed {r['executed']} runs; suite {prog['finished']} of {prog['total']} finished")
    if not args.no_init:  # a launcher's worker leaves the summary to the launcher
        runner.backlog(r["tracker"], r["store"], r["suite"])
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    """Copy into MLflow whatever of a suite the results store holds and MLflow lacks, then the aggregates."""
    from ffbench.execution import runner
    from ffbench.record.store import Store

    suite, design, paths = runner.prepare(args.suite, args.out)
    if not args.store and not paths.store.exists():
        print(f"error: no results store at {paths.store}; give the suite's --out DIR or --store URL", file=sys.stderr)
        return 2
    try:
        store = Store(args.store or paths.store)
    except BaseException as exc:
        code = runner.stopped(exc)
        if code is None:
            raise
        return code
    tracker = runner.open_tracker(suite, paths, args.tracking_uri)
    session = runner.Session(suite, design, paths, store, tracker, None, 0.0, 0.0)
    mirrored, failed = runner.catch_up(session)
    print(f"mirrored {mirrored} run(s) of {suite.name!r} to {tracker.uri}; {failed} failed")
    runner.backlog(tracker, store, suite)
    return 1 if failed or tracker.degraded else 0


def dry_run(args: argparse.Namespace) -> int:
    from ffbench.execution import runner

    suite, design, paths = runner.prepare(args.suite, args.out, args.cells, args.seeds)
    print(f"suite {suite.name} (version {suite.version}) from {suite.path}")
    if suite.description:
        print(f"  {suite.description}")
    print(
        f"methods: {', '.join(suite.methods)}; datasets: {', '.join(suite.datasets)}; "
        f"backbones: {', '.join(suite.backbones)}"
    )
    for use in suite.axes:
        a = use.axis
        print(
            f"axis {a.name} ({a.target} {' / '.join(a.keys)}{', generic' if a.generic else ''}): "
            f"{', '.join(map(str, use.levels))}"
        )
    if suite.axes:
        print(
            f"plan: {suite.plan}"
            + (f"; only {suite.only}" if suite.only else "")
            + (f"; exclude {suite.exclude}" if suite.exclude else "")
        )
    _print_design_notes(design)
    _print_code_notes(suite, design, paths, args.store)
    t = suite.tuning
    seeds = args.seeds or suite.seeds
    print(
        f"{len(design.cells)} cells x {len(seeds)} evaluation seeds {list(seeds)} = {len(design.runs)} "
        f"evaluation runs" + (" (the part asked for by --cells / --seeds)" if args.cells or args.seeds else "")
    )
    if t:
        print(
            f"tuning: {t.trials} trials per method per cell ({len(design.trials)} in all), tuning seeds "
            f"{list(t.seeds)}, {t.sampler}({_args(t.sampler_args)}), {t.pruner}({_args(t.pruner_args)}); "
            f"the best trial's configuration is evaluated on the evaluation seeds"
        )
        for m in suite.methods:
            print(f"  space {m}: " + ", ".join(f"{k}={list(v)}" for k, v in t.spaces[m].items()))
    for cell in design.cells:
        c = cell.config
        extra = f" tuned: {', '.join(cell.tuning['space'])}" if cell.tuning else ""
        print(
            f"  {cell.cell_id}  {cell.label}  epochs={c.epochs} batch={c.batch_size} {c.optimizer} lr={c.lr:g}{extra}"
        )
    b = design.budget()
    line = f"budget: {b['evaluation_epochs']} evaluation epochs"
    if b["tuning_trials"]:
        line += (
            f" + at most {b['tuning_epochs']} tuning epochs ({b['tuning_trials']} trials; pruning "
            f"stops some early) = at most {b['total_epochs']} training epochs"
        )
    print(line)
    sources = design.sources()
    if sources:
        print(
            f"source stage: {sum(len(seeds) for _, seeds in sources)} pretraining run(s), "
            f"{sum(s.get('epochs', 0) * len(seeds) for s, seeds in sources)} epochs in all; each trained once, "
            f"kept in {paths.weights} and shared by every cell that adapts from it"
        )
        for src, seeds in sources:
            what = (
                "torchvision ImageNet weights"
                if "weights" in src
                else f"{src['method']}/{src['dataset']}/{src['backbone']}"
                + (f" classes {src['keep_classes']}" if src.get("keep_classes") else "")
                + f" {src['epochs']} epochs"
            )
            print(f"  {what}, seeds {seeds}")
    if not args.no_estimate:
        from ffbench.execution.estimate import estimate

        print(_estimate_line(estimate(suite, design, paths, args.store, args.device)))
    print(f"output directory: {paths.out}")
    return 0


def _print_code_notes(suite, design, paths, store_url: str | None) -> None:
    """The planner's "cells are new: code changed in ..." lines, as `run` prints them (nothing is written)."""
    from ffbench.execution import runner
    from ffbench.record.store import Store

    location = store_url or (paths.store if paths.store.exists() else None)
    if location is not None:
        for line in runner.code_notes(Store(location), suite, design):
            print(line)


def _estimate_line(e: dict) -> str:
    if not e["rows"]:
        return "estimated time: nothing left to run (every run is finished in the store)"
    how = []
    if e["from_store"]:
        how.append(f"{e['from_store']} run(s) from the training time of earlier runs of the same cells in the store")
    if e["from_probe"]:
        how.append(
            f"{e['from_probe']} run(s) from a short timed probe ({e['probes']} probe(s): the first "
            f"training steps of one run per method / backbone / dataset, scaled by steps and epochs)"
        )
    line = (
        f"estimated time: about {_duration(e['seconds'])} of training for {e['from_store'] + e['from_probe']} of "
        f"{e['rows']} run(s) left, evaluation excluded; " + "; ".join(how)
        if how
        else f"estimated time: none for the {e['rows']} run(s) left"
    )
    for name, why in e.get("unavailable", {}).items():
        line += f"\nnot estimated: the runs on {name}, whose data are not here ({why})"
    return line


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _args(d: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in d.items())
