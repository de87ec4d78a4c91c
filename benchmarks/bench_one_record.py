"""One suite, one set of results everywhere: the end-of-run table, the report's headline, the export and the
MLflow parents' aggregates count the same runs, with real processes, a real store and a real MLflow.

The scenario: a suite (bp, bp.deepsup and a plugin method on `synthetic`, 3 seeds, 2 epochs, version 1) is
run; then `lr = 0.1` is added under [train] without changing the version, and it is run again; then the
plugin's code is edited, and it is run again. After each run the script prints, per cell, n and the verdict
as each reader sees them, and whether they agree. Usage: python benchmarks/bench_one_record.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = """
[suite]
name = "onerecord"
version = 1
control = "bp"

[design]
methods = ["bp", "bp.deepsup", "myplug"]
datasets = ["synthetic"]
backbones = ["mlp"]
seeds = [0, 1, 2]

[train]
epochs = 2
batch_size = 32
{extra}
[backbones.mlp]
widths = [32, 32]
"""
PLUGIN = """
from ffbench.core.method import method_card
from ffbench.methods.bp import BP


@method_card(name="myplug", family="myplug", summary="backprop under another name (a plugin)",
             defaults={**BP.card.defaults, "lr": 0.01}, options=dict(BP.card.options), rules=BP.card.rules,
             capabilities=BP.card.capabilities)
class MyPlug(BP):
    pass
"""


def ffbench(args: list[str], env: dict) -> str:
    p = subprocess.run([sys.executable, "-m", "ffbench.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode not in (0, 1):
        raise SystemExit(f"ffbench {' '.join(args)} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout


def table_view(out: Path) -> dict[str, tuple[int, str]]:
    """method -> (n, verdict) from table.md, as `ffbench run` printed it."""
    got = {}
    for line in (out / "table.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 8 and cells[0] == "synthetic":
            got[cells[2]] = (int(cells[3]), cells[8])
    return got


def report_view(out: Path, stdout: str) -> dict[str, tuple[int, str]]:
    """method -> (n, verdict): n from the report's cell table, the verdict from the headline it printed."""
    verdicts = {m: v for m, v in re.findall(r"^  (\S+) on [^:]+: ([a-z ]+?)(?: \(|,)", stdout, re.M)}
    with open(out / "reports" / "onerecord" / "tables" / "comparison" / "cells.csv") as fh:
        n = {r["method"]: int(float(r["n"])) for r in csv.DictReader(fh)}
    return {m: (k, verdicts.get(m, "control")) for m, k in n.items()}


def export_view(out: Path, env: dict) -> dict[str, tuple[int, str]]:
    """method -> (n done runs, '') from `ffbench export`'s runs.csv (an export carries no verdict)."""
    ffbench(["export", "onerecord", "--out", str(out), "--to", str(out / "export")], env)
    n: dict[str, int] = {}
    with open(out / "export" / "runs.csv") as fh:
        for r in csv.DictReader(fh):
            assert r["superseded"] == "False", r
            n[r["method"]] = n.get(r["method"], 0) + (r["status"] == "done")
    return {m: (k, "") for m, k in n.items()}


def mlflow_view(out: Path) -> dict[str, tuple[int, str]]:
    """method -> (n, verdict_vs_control) from the parents of the current cells in MLflow."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("onerecord")
    got = {}
    for r in client.search_runs([exp.experiment_id], "tags.`ffbench.kind` = 'cell'", max_results=1000):
        if r.data.tags.get("ffbench.superseded") == "true":
            continue
        got[r.data.tags["method"]] = (int(r.data.metrics.get("n", 0)), r.data.tags.get("verdict_vs_control", ""))
    return got


def stage(title: str, out: Path, env: dict, run_stdout: str) -> bool:
    report = ffbench(["report", "onerecord", "--out", str(out), "--kind", "comparison"], env)
    views = {
        "table": table_view(out),
        "report": report_view(out, report),
        "export": export_view(out, env),
        "mlflow": mlflow_view(out),
    }
    notes = [ln for ln in run_stdout.splitlines() if " new: " in ln]
    notes += [ln for ln in report.splitlines() if "superseded" in ln]
    print(f"\n== {title}")
    for ln in notes:
        print(f"   {ln}")
    print(
        f"   {'cell':<12} {'table n / verdict':<32} {'report n / verdict':<32} {'export n':<9} "
        f"{'MLflow parent n / verdict':<32} agree"
    )
    ok = True
    for m in sorted(views["table"]):
        t, r, e, f = (views[k].get(m, (None, None)) for k in ("table", "report", "export", "mlflow"))
        same = t[0] == r[0] == e[0] == f[0] and t[1] == r[1] == f[1]
        ok &= same
        print(
            f"   {m:<12} {f'{t[0]} / {t[1]}':<32} {f'{r[0]} / {r[1]}':<32} {str(e[0]):<9} {f'{f[0]} / {f[1]}':<32} "
            f"{'yes' if same else 'NO'}"
        )
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="work in this folder (kept) instead of a temporary one")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-one-record-"))
    work.mkdir(parents=True, exist_ok=True)
    plugins = work / "plugins"
    info = plugins / "myplug-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (plugins / "myplug.py").write_text(PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ffbench.methods]\nmyplug = myplug\n")
    (info / "top_level.txt").write_text("myplug\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(plugins)]),
        "OMP_NUM_THREADS": "1",
        "FFBENCH_THREADS": "1",
    }
    suite, out = work / "onerecord.toml", work / "out"
    run = ["run", str(suite), "--out", str(out), "--no-progress", "--device", "cpu"]
    ok = True
    suite.write_text(SUITE.format(extra=""))
    ok &= stage("1. version 1 as written", out, env, ffbench(run, env))
    suite.write_text(SUITE.format(extra="lr = 0.1\n"))
    ok &= stage("2. lr = 0.1 added under [train], version unchanged", out, env, ffbench(run, env))
    (plugins / "myplug.py").write_text(PLUGIN + "\n# edited\n")
    ok &= stage("3. the plugin's code edited, version unchanged", out, env, ffbench(run, env))
    print(f"\nevery reader agrees on every cell at every stage: {'yes' if ok else 'NO'}  (work folder: {work})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
