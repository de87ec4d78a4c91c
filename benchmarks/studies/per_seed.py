"""Write a finished study's per-seed results as a small CSV (``<suite>.csv`` beside this script, or in ``--dest``):
one row per evaluation run with its factors, seed, status, test accuracy of every inference rule and validation
accuracy (%), best epoch and training time, and for each rule its best test accuracy over the evaluated epochs
(``best_test.<rule>``: the test-set selection some reference code makes, never ffbench's number).

    .venv/bin/ffbench run small-data --workers 2 && .venv/bin/python benchmarks/studies/per_seed.py small-data
    .venv/bin/ffbench run transfer --workers 2 && .venv/bin/python benchmarks/studies/per_seed.py transfer
    .venv/bin/python benchmarks/studies/per_seed.py repro-ff-mnist --out ffbench-out/reproduction/repro-ff-mnist \
        --dest benchmarks/reproduction

The output folder defaults to ffbench-out/<suite> (``--out`` to change it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ffbench.record.export import load

KEEP = ["status", "test_acc", "val_acc", "best_epoch", "train_time_s", "n_train"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suite")
    ap.add_argument("--out", default=None)
    ap.add_argument("--dest", default=None, help="folder of the CSV (default: beside this script)")
    args = ap.parse_args(argv)
    tables = load(args.out or f"ffbench-out/{args.suite}", args.suite, percent=True)
    runs, curves = tables["runs"], tables["curves"]
    runs = runs[runs["status"].isin(["done", "failed", "pruned"])]  # finished runs (failures kept)
    factors = [c for c in ("method", "dataset", "backbone", "train_size", "adapt") if c in runs]
    rules = [c for c in runs if c.startswith("test_acc.") and not c.startswith("test_acc.unit")]
    table = runs[["run_id", *factors, "seed", "suite_version", *[c for c in KEEP if c in runs], *rules]]
    test = curves[curves["metric"].str.match(r"test_acc(\.|$)") & ~curves["metric"].str.startswith("test_acc.unit")]
    best = test.pivot_table(index="run_id", columns="metric", values="value", aggfunc="max")
    best.columns = [
        f"best_test.{c.removeprefix('test_acc.')}" if c != "test_acc" else "best_test" for c in best.columns
    ]
    table = table.join(best, on="run_id").drop(columns="run_id").sort_values([*factors, "seed"])
    path = (Path(args.dest) if args.dest else Path(__file__).parent) / f"{args.suite}.csv"
    table.to_csv(path, index=False, float_format="%.4f")
    print(f"{path} ({len(table)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
