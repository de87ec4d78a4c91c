"""ffbench compares forward-forward training methods against backpropagation on equal terms: a suite (a TOML
file, or the name of one in suites/) declares methods x datasets x backbones x axis levels x seeds; `run`
trains what is missing into a results store, mirrors it into MLflow live, and prints the table with each
cell's interval and verdict against the control; `report` writes the statistical reports."""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ffbench.cli.locate import locate


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
        print(_estimate_line(runner.estimate(suite, design, paths, args.store, args.device)))
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


def cmd_list(args: argparse.Namespace) -> int:
    from ffbench.analysis.report import REPORTS
    from ffbench.core.registry import REGISTRIES

    reg = {**REGISTRIES, "reports": REPORTS}[args.kind]
    cards = reg.list(args.pattern)
    if not cards:
        from ffbench.plan.suite import did_you_mean

        print(
            f"no {args.kind} match {args.pattern!r}{did_you_mean(args.pattern, reg.names())}; registered: "
            f"{', '.join(reg.names())}"
        )
        return 1
    print("\n\n".join(c.describe() + _adapt_line(args.kind, reg, c.name) for c in cards))
    return 0


def _adapt_line(kind: str, reg, name: str) -> str:
    """For a method: the transfer modes it offers (declared on its class, not its card)."""
    if kind != "methods":
        return ""
    cls = reg.get(name).obj
    probe = f"; linear-probe reports rule {cls.probe_rule}" if cls.probe_rule else ""
    return f"\n    adapt modes: {', '.join(cls.adapt_modes)}{probe}"


def cmd_data(args: argparse.Namespace) -> int:
    from ffbench.data.datasets import FETCHABLE, NO_FETCH, cache_dir, fetch
    from ffbench.plan.suite import did_you_mean

    unknown = [n for n in args.names if n not in FETCHABLE and n not in NO_FETCH]
    if unknown:  # before fetching anything
        hint = "".join(did_you_mean(n, [*FETCHABLE, *NO_FETCH]) for n in unknown)
        print(
            f"error: cannot fetch {', '.join(map(repr, unknown))}{hint}; fetchable: {', '.join(FETCHABLE)} "
            f"(nothing to fetch for {', '.join(NO_FETCH)})",
            file=sys.stderr,
        )
        return 2
    for name in args.names:
        if name in NO_FETCH:
            print(f"{name}: nothing to fetch ({NO_FETCH[name].format(cache=cache_dir(name))})")
        else:
            print(f"{name}: {fetch(name)}")
    return 0


def experiment_id(db: Path, name: str | None) -> str | None:
    """The ID of suite ``name``'s experiment in an MLflow SQLite file (read directly: no MLflow import);
    without a name, the one ffbench experiment there."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            rows = con.execute(
                "SELECT e.experiment_id, e.name FROM experiments e JOIN experiment_tags t ON "
                "t.experiment_id = e.experiment_id WHERE t.key = 'ffbench.suite' AND "
                "e.lifecycle_stage = 'active'"
            ).fetchall()
    except sqlite3.Error:
        return None
    found = [str(i) for i, n in rows if name is None or n == name]
    return found[0] if len(found) == 1 else None


UI_START_S = 120.0  # how long `ffbench ui` waits for the MLflow server to answer (it takes about 25 s)


def cmd_ui(args: argparse.Namespace) -> int:
    """The MLflow UI on a suite's output folder: refuses a busy port, prints the address once the server
    answers, and stops the server's whole process group on Ctrl-C or SIGTERM."""
    if args.suite is None and args.out is None:
        print(
            "error: ffbench ui: give a SUITE (its output folder is ffbench-out/<suite>, as for `ffbench run`) "
            "or --out DIR",
            file=sys.stderr,
        )
        return 2
    if args.suite is None:
        name, out = None, Path(args.out)
    else:
        name, out, _ = locate(args.suite, args.out)
    db = out.resolve() / "mlflow.db"
    if not db.exists():
        print(f"error: no MLflow store at {db}; run the suite first (ffbench run SUITE --out {out})", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536:
        print(f"error: --port {args.port}: allowed: 1..65535", file=sys.stderr)
        return 2
    if port_busy(args.port):
        print(
            f"error: port {args.port} on 127.0.0.1 is in use (another MLflow UI?); stop what uses it or choose "
            f"another with --port",
            file=sys.stderr,
        )
        return 2
    uri = f"sqlite:///{db}"
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--default-artifact-root",
        (db.parent / "mlartifacts").as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
    ]
    print(f"starting the MLflow server on {uri} (about 25 s) ...", file=sys.stderr, flush=True)
    base = f"http://127.0.0.1:{args.port}"
    eid = experiment_id(db, name)
    from ffbench.record.tracking import experiment_url

    return serve(cmd, base, "MLflow UI", UI_START_S, show=experiment_url(base, eid) if eid else None)


def port_busy(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True  # an HTTP error is an answer
    except (OSError, ValueError):
        return False
    return True


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def serve(cmd: list[str], url: str, what: str, start_s: float, show: str | None = None) -> int:
    """Run server ``cmd`` in its own process group; print ``url`` (or the page ``show``) once it answers; on
    Ctrl-C, SIGTERM or SIGHUP (or when it exits) stop the whole group, so none of its worker processes is
    left behind."""
    proc = subprocess.Popen(cmd, start_new_session=True)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        deadline = time.monotonic() + start_s
        while not _answers(url):
            if proc.poll() is not None:
                print(
                    f"error: the {what} server exited with code {proc.returncode} before answering (its output "
                    f"is above)",
                    file=sys.stderr,
                )
                return 1
            if time.monotonic() > deadline:
                print(
                    f"error: the {what} server did not answer on {url} within {start_s:g} s; stopped it",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.25)
        print(f"{what} on {show or url}  (Ctrl-C stops it)", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_group(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM to ``proc``'s process group (it leads one), then SIGKILL to whatever is left after ``grace_s``."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    while time.monotonic() < deadline and _group_alive(proc.pid):
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written, and every option's default shown (unless its help states it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.default in (None, False, argparse.SUPPRESS)
            or action.nargs == 0
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


EXAMPLES = {
    "run": """examples:
  ffbench run quick                           # the bundled quick suite, into ffbench-out/quick
  ffbench run my-suite.toml --out results/    # a suite file, into results/
  ffbench run quick --dry-run                 # cells, runs, budget and a time estimate; trains nothing
  ffbench run quick --workers 2 --device cuda # two worker processes, one GPU each
  ffbench run quick --rerun 'ff*'             # train the ff* cells again (old results kept as superseded)
  ffbench run repro-cwc --cells 'cwc/mnist/*' --seeds 0-2  # part of a suite now, the rest later""",
    "worker": """examples:
  ffbench worker quick --store postgresql://host/db --optuna-storage postgresql://host/db \\
      --tracking-uri http://host:5000         # on each further machine of a shared suite
  ffbench worker quick --workers 4            # four local workers on the default store""",
    "report": """examples:
  ffbench report quick                        # every report kind; prints the headline
  ffbench report quick --kind comparison --rope-pp 0.2
  ffbench report my-study                     # a suite stored under ffbench-out/my-study, file or not
  ffbench report --out results/               # the one suite stored in results/""",
    "sync": """examples:
  ffbench sync quick                          # copy into MLflow what a kill or an outage left out
  ffbench sync quick --tracking-uri http://host:5000""",
    "list": """examples:
  ffbench list methods                        # every method card
  ffbench list methods 'ff*'                  # wildcards
  ffbench list axes""",
    "data": """examples:
  ffbench data fetch fashion-mnist mnist      # the offline datasets on machines without internet""",
    "ui": """examples:
  ffbench ui quick                            # MLflow on ffbench-out/quick, at http://127.0.0.1:5000
  ffbench ui my-study --port 5001             # a stored suite, another port
  ffbench ui --out results/""",
}


def _data_epilog() -> str:
    from ffbench.data.datasets import FETCHABLE, NO_FETCH, cache_dir

    lines = ["datasets and where each is looked for:"]
    lines += [f"  {n:14s} {how.format(cache=cache_dir(n))}" for n, how in FETCHABLE.items()]
    lines += [f"  {n:14s} nothing to fetch: {how.format(cache=cache_dir(n))}" for n, how in NO_FETCH.items()]
    lines.append("  (a suite's [datasets.NAME] root is then the only place looked at; $FFBENCH_DATA moves the cache)")
    return "\n".join(lines) + "\n\n" + EXAMPLES["data"]


def build_parser() -> argparse.ArgumentParser:
    from ffbench import __version__

    parser = argparse.ArgumentParser(
        prog="ffbench",
        description=__doc__,
        formatter_class=HelpFormatter,
        epilog="examples:\n  ffbench run quick\n  ffbench report quick\n  ffbench ui quick"
        "\n\n`ffbench COMMAND --help` explains each command.",
    )
    parser.add_argument("--version", action="version", version=f"ffbench {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, epilog: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=help[0].upper() + help[1:] + ".",
            epilog=epilog or EXAMPLES[name],
            formatter_class=HelpFormatter,
        )

    suite_help = "a suite: a name from suites/ (e.g. quick) or the path of a .toml file"
    out_help = "output directory (results store, MLflow store, tables)"
    p = command("run", "run a suite: train every run not finished yet, then print the results table")
    p.add_argument("suite", help=suite_help)
    p.add_argument("--out", help=f"{out_help} (default: ffbench-out/<suite name>)")
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
    from ffbench.execution.ray_executor import add_ray_arguments

    add_ray_arguments(p)
    p.set_defaults(func=cmd_run)

    p = command("worker", "a worker on a suite's shared store (start one per machine or device)")
    p.add_argument("suite", help=suite_help)
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
    p.set_defaults(func=cmd_worker)

    p = command("report", "statistical reports (HTML + markdown) of a suite's results, and their headline")
    add_report_arguments(p)
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: OUT/mlflow.db when it exists)")
    p.set_defaults(func=cmd_report)

    p = command("sync", "copy into MLflow the finished runs a kill or an outage left out")
    p.add_argument("suite", help=suite_help)
    p.add_argument("--out", help=f"{out_help} (default: ffbench-out/<suite name>)")
    p.add_argument("--store", help="results store URL (default: OUT/results.db)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: OUT/mlflow.db)")
    p.set_defaults(func=cmd_sync)

    p = command("list", "list registered methods, datasets, backbones, axes or report kinds, with their cards")
    p.add_argument("kind", choices=["methods", "datasets", "backbones", "axes", "reports"], help="what to list")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch wildcard, e.g. 'ff*' (default: every one)")
    p.set_defaults(func=cmd_list)

    p = command("data", "datasets: fetch the offline ones (nothing else needs fetching)", epilog=_data_epilog())
    p.add_argument("action", choices=["fetch"], help="fetch: put the named datasets where the loaders find them")
    p.add_argument("names", nargs="+", metavar="NAME", help="fashion-mnist, mnist (the others need nothing)")
    p.set_defaults(func=cmd_data)

    p = command("ui", "start the MLflow UI on a suite's output folder (127.0.0.1), opened on its run table")
    p.add_argument(
        "suite", nargs="?", help="a suite file or name, or the name of a suite stored under ffbench-out/<name>"
    )
    p.add_argument("--out", help="the output directory given to `ffbench run` (default: ffbench-out/<suite name>)")
    p.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1")
    p.set_defaults(func=cmd_ui)

    from ffbench.record.export import add_export_arguments, main_export

    p = command(
        "export",
        "tidy tables of a suite's results (runs, per-epoch curves, per-unit curves) as CSV or Parquet",
        epilog="examples:\n  ffbench export quick\n  ffbench export quick --format parquet --to tables/ --percent",
    )
    add_export_arguments(p)
    p.set_defaults(func=main_export)

    from ffbench.cli.prune import add_prune_arguments, main_prune

    p = command(
        "prune",
        "delete the runs of superseded cells (settings or code changed since) from the store and MLflow",
        epilog="examples:\n  ffbench prune quick          # lists what it would delete"
        "\n  ffbench prune quick --yes    # deletes it",
    )
    add_prune_arguments(p)
    p.set_defaults(func=main_prune)

    from ffbench.analysis.merge import add_merge_arguments, main_merge

    p = command(
        "merge",
        "combine the results stores of one suite run on several machines or folders into one",
        epilog="examples:\n  ffbench merge all/ laptop-out/ cluster-out/   # every run once; conflicts refused"
        "\n  ffbench merge all/results.db a/ b/ --no-tracking",
    )
    add_merge_arguments(p)
    p.set_defaults(func=main_merge)

    from ffbench.analysis.compare_runs import add_compare_arguments, main_compare

    p = command(
        "compare",
        "two sets of a suite's results side by side: per cell the difference with its interval, "
        "the verdict, and what changed (settings, code, libraries, machine)",
        epilog="examples:\n  ffbench compare before/ after/             # two output folders"
        "\n  ffbench compare quick@2 quick@3 --out ffbench-out/quick --to diff.md",
    )
    add_compare_arguments(p)
    p.set_defaults(func=main_compare)

    from ffbench.analysis.board import add_board_arguments, main_board

    p = command(
        "board",
        "one leaderboard page (HTML, markdown, CSV) across suites and datasets: method × task with "
        "intervals, verdicts against bp and bp.deepsup, budget and cost",
        epilog="examples:\n  ffbench board ffbench-out/quick ffbench-out/small-data --to board/"
        "\n  ffbench board benchmarks/studies/*.csv benchmarks/reproduction/*.csv --to board/",
    )
    add_board_arguments(p)
    p.set_defaults(func=main_board)

    # further commands register here, before the shared flags below are added to every one
    for p in sub.choices.values():  # `ffbench run --debug ...` as well as `ffbench --debug run ...`
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ffbench.core.log import show_on_stderr
    from ffbench.record.tracking import configure_environment, quiet_logging

    show_on_stderr()  # the library's warnings and notes, as plain lines on stderr
    args = build_parser().parse_args(argv)
    quiet_logging(args.verbose)
    configure_environment()  # MLflow telemetry and timeouts are decided when MLflow is first imported
    try:
        problem = value_problem(args)
        if problem:  # before any suite is read or any run claimed
            print(f"error: {problem}", file=sys.stderr)
            return 2
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        from ffbench.record.store import disk_full_line, is_disk_full

        if not args.debug and is_disk_full(exc):  # the infrastructure's, not the input's: exit 3
            print(f"error: {disk_full_line(exc)}", file=sys.stderr)
            return 3
        message = None if args.debug else user_error(exc)
        if message is None:
            raise  # a bug, or --debug: the traceback
        print(f"error: {message}", file=sys.stderr)
        return 2


MAX_WORKERS = 256
RESAMPLES = (100, 1_000_000)  # bootstrap resamples a report may ask for


def value_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with a command-line value that needs no suite or store to judge (one line naming the option
    and what it allows), or None."""
    if getattr(args, "device", None) is not None:
        from ffbench.execution.pool import device_problem

        problem = device_problem(args.device)
        if problem:
            return problem
    if getattr(args, "workers", None) is not None and not 1 <= args.workers <= MAX_WORKERS:
        return f"--workers {args.workers}: allowed: 1..{MAX_WORKERS}"
    if args.command != "report":
        return None
    if not 0 < args.alpha < 1:
        return f"--alpha {args.alpha:g}: allowed: a significance level strictly between 0 and 1 (e.g. 0.05)"
    if not RESAMPLES[0] <= args.resamples <= RESAMPLES[1]:
        return f"--resamples {args.resamples}: allowed: {RESAMPLES[0]}..{RESAMPLES[1]:,} bootstrap resamples"
    if args.seed < 0:
        return f"--seed {args.seed}: allowed: a non-negative integer"
    for v in args.rope_pp or []:
        name, _, num = v.rpartition("=")
        try:
            pp = float(num)
        except ValueError:
            pp = math.nan
        if not 0 <= pp < 100:
            return (
                f"--rope-pp {v!r}: allowed: a number of percentage points in [0, 100), for every dataset or "
                f"as DATASET=NUMBER"
            )
    return None


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


DEBUG_HELP = "show the traceback of an error"
VERBOSE_HELP = "show MLflow's own log lines (INFO and up; by default only its warnings)"


def user_error(exc: BaseException) -> str | None:
    """The message for an error the user can fix (bad input, a file, a folder, a full disk, a database that
    cannot be opened), or None for anything else (a bug: its traceback is shown)."""
    from ffbench.core.options import OptionError
    from ffbench.core.paths import OutsideError
    from ffbench.core.registry import DuplicateNameError, UnknownNameError
    from ffbench.data.datasets import DataError
    from ffbench.plan.suite import SuiteError

    if isinstance(exc, (SuiteError, DataError, OptionError, UnknownNameError, DuplicateNameError, OutsideError)):
        return str(exc)
    if isinstance(exc, OSError):
        return _os_message(exc)
    cause = getattr(exc, "orig", None)  # SQLAlchemy's wrapper around the database driver's error
    if type(exc).__module__.startswith("sqlalchemy") and type(exc).__name__ in ("OperationalError", "ArgumentError"):
        detail = cause if cause is not None else str(exc).splitlines()[0]
        return (
            f"results store: {detail}; check that the output folder (--out) is writable, or that the --store URL "
            f"is right and its server reachable"
        )
    return None


def _os_message(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename is not None else ""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where}{exc.strerror}; choose a folder you can write (--out) or fix its permissions"
    if where and exc.strerror:
        return f"{where}{exc.strerror}"
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
