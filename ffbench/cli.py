"""The ``ffbench`` command. Argument parsing and printing only; the work happens in the modules."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def cmd_run(args: argparse.Namespace) -> int:
    from ffbench import runner

    if args.dry_run:
        return dry_run(args)
    summary = runner.run_suite(args.suite, args.out, device=args.device, tracking_uri=args.tracking_uri,
                               progress=not args.no_progress, track=not args.no_tracking, workers=args.workers,
                               store_url=args.store, optuna_storage=args.optuna_storage, lease_s=args.lease)
    return report_run(args, summary)


def report_run(args: argparse.Namespace, summary: dict) -> int:
    from ffbench import runner

    suite, design, paths, store = summary["suite"], summary["design"], summary["paths"], summary["store"]
    table, frame = runner.results_table(store, suite, design)
    text = runner.format_table(table)
    out = paths.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(f"# {suite.name} (version {suite.version})\n\n{text}\n")
    frame.drop(columns=["curves"], errors="ignore").to_csv(out / "results.csv", index=False)
    _print_design_notes(design)
    print(text)
    if design.trials:
        _print_tuning(store, suite, design, out)
    fails = runner.failures(store, suite, design)
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
    print(f"\nran {summary['executed']} of {prog['total']} runs this time "
          f"({prog['finished']} finished: {prog.get('done', 0)} done, {prog.get('failed', 0)} failed, "
          f"{prog.get('pruned', 0)} pruned; {left} left)")
    if any(summary.get("exit_codes") or []):
        print(f"worker exit codes: {summary['exit_codes']} (logs: {out / 'logs'})")
    if left:
        print("some runs are not finished (held by other workers, or a worker died): run the suite again to "
              "resume")
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
    from ffbench.tuning import budget_curves

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
        print(f"  {cell.cell_id}  {cell.label}: {counts} of {cell.tuning['trials']}, best val "
              f"{best * 100:.2f}%  {params}" if best == best else f"  {cell.cell_id}  {cell.label}: {counts}")
    print(f"budget curves: {out / 'budget_curves.csv'}")


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def cmd_worker(args: argparse.Namespace) -> int:
    """A worker against a shared store (several machines), or N local ones."""
    from ffbench import runner
    from ffbench import workers as w
    from ffbench.store import Store, worker_name

    w.install_signal_handlers()
    w.set_threads()
    suite, design, paths = runner.prepare(args.suite, args.out)
    paths.out.mkdir(parents=True, exist_ok=True)
    store = Store(args.store or paths.store)
    ourl = runner.optuna_url(design, paths, args.store, args.optuna_storage, max(args.workers, 2))
    tracker = None if args.no_tracking else runner.open_tracker(suite, paths, args.tracking_uri)
    if not args.no_init:
        w.init_suite(suite, design, store, tracker, ourl)
    lease = float(args.lease)
    poll = float(args.poll or min(w.POLL_S, max(0.2, lease / 4)))
    if args.workers > 1:
        procs = w.spawn(args.workers, suite.path.resolve(), paths.out.resolve(), store.url, ourl,
                        tracker.uri if tracker else None, args.device, lease, poll)
        codes = w.wait_for(procs, store, suite, design)
        print(f"{args.workers} workers exited with {codes}")
        return max(codes) if codes else 0
    env = w.Env(suite, design, store, worker_name(), args.device, tracker, ourl, lease, poll)
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(w.expected_ids(design)), desc=f"{suite.name} worker", unit="run", file=sys.stderr)
    try:
        executed = w.work(env, bar)
    except KeyboardInterrupt:
        print("worker interrupted; its run was given back", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    prog = w.progress(store, suite, design)
    if tracker is not None and prog["finished"] == prog["total"] and not args.no_init:
        runner.summarize_cells(suite, design, store, tracker)  # (under a launcher, the launcher does it)
    print(f"worker {env.worker}: executed {executed} runs; suite {prog['finished']} of {prog['total']} finished")
    return 0


def dry_run(args: argparse.Namespace) -> int:
    from ffbench import runner

    suite, design, paths = runner.prepare(args.suite, args.out)
    print(f"suite {suite.name} (version {suite.version}) from {suite.path}")
    if suite.description:
        print(f"  {suite.description}")
    print(f"methods: {', '.join(suite.methods)}; datasets: {', '.join(suite.datasets)}; "
          f"backbones: {', '.join(suite.backbones)}")
    for use in suite.axes:
        a = use.axis
        print(f"axis {a.name} ({a.target} {' / '.join(a.keys)}{', generic' if a.generic else ''}): "
              f"{', '.join(map(str, use.levels))}")
    if suite.axes:
        print(f"plan: {suite.plan}" + (f"; only {suite.only}" if suite.only else "")
              + (f"; exclude {suite.exclude}" if suite.exclude else ""))
    _print_design_notes(design)
    t = suite.tuning
    print(f"{len(design.cells)} cells x {len(suite.seeds)} evaluation seeds {suite.seeds} = {len(design.runs)} "
          f"evaluation runs")
    if t:
        print(f"tuning: {t.trials} trials per method per cell ({len(design.trials)} in all), tuning seeds "
              f"{list(t.seeds)}, {t.sampler}({_args(t.sampler_args)}), {t.pruner}({_args(t.pruner_args)}); "
              f"the best trial's configuration is evaluated on the evaluation seeds")
        for m in suite.methods:
            print(f"  space {m}: " + ", ".join(f"{k}={list(v)}" for k, v in t.spaces[m].items()))
    for cell in design.cells:
        c = cell.config
        extra = f" tuned: {', '.join(cell.tuning['space'])}" if cell.tuning else ""
        print(f"  {cell.cell_id}  {cell.label}  epochs={c.epochs} batch={c.batch_size} {c.optimizer} "
              f"lr={c.lr:g}{extra}")
    b = design.budget()
    line = f"budget: {b['evaluation_epochs']} evaluation epochs"
    if b["tuning_trials"]:
        line += (f" + at most {b['tuning_epochs']} tuning epochs ({b['tuning_trials']} trials; pruning "
                 f"stops some early) = at most {b['total_epochs']} training epochs")
    print(line)
    print(f"output directory: {paths.out}")
    return 0


def _args(d: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in d.items())


def cmd_list(args: argparse.Namespace) -> int:
    from ffbench.registry import REGISTRIES

    reg = REGISTRIES[args.kind]
    cards = reg.list(args.pattern)
    if not cards:
        print(f"no {args.kind} match {args.pattern!r}; registered: {', '.join(reg.names())}")
        return 1
    print("\n\n".join(c.describe() for c in cards))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from ffbench.datasets import fetch

    for name in args.names:
        print(f"{name}: {fetch(name)}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    db = out / "mlflow.db"
    if not db.exists():
        print(f"no MLflow store at {db}; run a suite first (ffbench run SUITE --out {args.out})", file=sys.stderr)
        return 2
    uri = f"sqlite:///{db}"
    print(f"MLflow UI on http://127.0.0.1:{args.port}  (store {uri}); Ctrl-C stops it")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--default-artifact-root",
           (out / "mlartifacts").as_uri(), "--host", "127.0.0.1", "--port", str(args.port)]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def _shared_options(p: argparse.ArgumentParser) -> None:
    from ffbench.workers import LEASE_S

    p.add_argument("--store", help="results store URL (default: SQLite in the output directory; "
                                   "postgresql://... for several machines)")
    p.add_argument("--optuna-storage", help="Optuna storage for tuning (default: the store's database if it is "
                                            "PostgreSQL, else journal:<out>/optuna.journal)")
    p.add_argument("--lease", type=float, default=LEASE_S,
                   help=f"seconds without a heartbeat after which a run is taken over (default {LEASE_S:g})")
    p.add_argument("--no-tracking", action="store_true", help="do not mirror runs to MLflow")


def cmd_report(args: argparse.Namespace) -> int:
    """Build the reports, then attach them (and fresh cell aggregates) to the suite's MLflow experiment."""
    from ffbench.report import main_report, report_files, report_dir, parse_rope

    code = main_report(args)
    if code or args.list_kinds:
        return code
    from ffbench import runner

    try:
        suite, design, paths = runner.prepare(args.suite, args.out)
    except Exception as exc:  # the suite file is gone: the reports stand, MLflow is left as it was
        print(f"(MLflow not updated: {exc})")
        return 0
    uri = args.tracking_uri or (f"sqlite:///{paths.mlflow_db.resolve()}" if paths.mlflow_db.exists() else None)
    if uri is None:
        return 0
    from ffbench.store import Store

    tracker = runner.open_tracker(suite, paths, uri)
    store = Store(args.store or paths.store)
    runner.summarize_cells(suite, design, store, tracker, control=args.control, rope=parse_rope(args.rope_pp))
    root = report_dir(paths.out, suite.name)
    files = report_files(paths.out, suite.name)
    for folder in sorted({f.parent for f in files}):
        rel = folder.relative_to(root)
        tracker.log_artifacts([f for f in files if f.parent == folder],
                              "report" + ("" if str(rel) == "." else f"/{rel}"))
    print(f"attached {len(files)} report files to MLflow experiment {suite.name!r} ({uri})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ffbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a suite (a name from suites/ or a path to a .toml file)")
    p.add_argument("suite")
    p.add_argument("--out", help="output directory (default: ffbench-out/<suite>)")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite file in the output directory)")
    p.add_argument("--dry-run", action="store_true", help="list the cells, runs and budget; run nothing")
    p.add_argument("--no-progress", action="store_true")
    _shared_options(p)
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine (one device each, round-robin over cuda:i)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("worker", help="a worker on a suite's shared store (start one per machine / device)")
    p.add_argument("suite")
    p.add_argument("--out", help="output directory for local files (default: ffbench-out/<suite>)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (a shared server for several machines)")
    _shared_options(p)
    p.add_argument("--workers", type=int, default=1, help="start this many local worker processes")
    p.add_argument("--poll", type=float, help="seconds between looks while other workers hold runs")
    p.add_argument("--no-init", action="store_true",
                   help="do not initialise the store, studies and MLflow parents (the launcher did)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_worker)

    from ffbench.report import add_report_arguments

    p = sub.add_parser("report", help="statistical comparison reports (HTML + markdown) from a suite's results")
    add_report_arguments(p)
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the sqlite file in the output directory)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("list", help="list registered methods, datasets, backbones or axes")
    p.add_argument("kind", choices=["methods", "datasets", "backbones", "axes"])
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch wildcard, e.g. 'ff*'")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("data", help="datasets: `ffbench data fetch fashion-mnist mnist` installs the offline ones")
    p.add_argument("action", choices=["fetch"])
    p.add_argument("names", nargs="+")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("ui", help="start the MLflow UI on a suite's output directory (127.0.0.1)")
    p.add_argument("--out", required=True, help="the output directory given to `ffbench run`")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)

    args = parser.parse_args(argv)
    from ffbench.suite import SuiteError

    try:
        return args.func(args)
    except SuiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
