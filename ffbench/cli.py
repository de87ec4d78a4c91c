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
                               progress=not args.no_progress)
    suite, design, paths, store = summary["suite"], summary["design"], summary["paths"], summary["store"]
    table, frame = runner.results_table(store, suite, design)
    text = runner.format_table(table)
    out = paths.out.resolve()
    (out / "table.md").write_text(f"# {suite.name} (version {suite.version})\n\n{text}\n")
    frame.drop(columns=["curves"], errors="ignore").to_csv(out / "results.csv", index=False)
    for factors, reason in design.dropped:
        print(f"skipped {'/'.join(factors.values())}: {reason}")
    print(text)
    print(f"\nran {summary['executed']} of {len(design.runs)} runs "
          f"({len(design.runs) - summary['executed']} already finished or held by other workers)")
    print(f"results store: {out / 'results.db'}")
    print(f"results table: {out / 'table.md'} and {out / 'results.csv'}")
    print(f"MLflow store:  {args.tracking_uri or 'sqlite:///' + str(out / 'mlflow.db')}  "
          f"(browse: ffbench ui --out {args.out or paths.out})")
    return 0


def dry_run(args: argparse.Namespace) -> int:
    from ffbench import runner

    suite, design, paths = runner.prepare(args.suite, args.out)
    print(f"suite {suite.name} (version {suite.version}) from {suite.path}")
    print(f"{len(design.cells)} cells x {len(suite.seeds)} seeds = {len(design.runs)} evaluation runs")
    for cell in design.cells:
        c = cell.config
        print(f"  {cell.cell_id}  {'/'.join(str(v) for v in cell.factors.values())}  "
              f"epochs={c.epochs} batch={c.batch_size} {c.optimizer} lr={c.lr}")
    for factors, reason in design.dropped:
        print(f"  dropped {'/'.join(factors.values())}: {reason}")
    print(f"output directory: {paths.out}")
    return 0


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ffbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a suite (a name from suites/ or a path to a .toml file)")
    p.add_argument("suite")
    p.add_argument("--out", help="output directory (default: ffbench-out/<suite>)")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite file in the output directory)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and runs, run nothing")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_run)

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
