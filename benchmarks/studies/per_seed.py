"""Write a finished study's per-seed results as a small CSV beside this script (``<suite>.csv``): one row per
evaluation run with its factors, seed, status, test and validation accuracy (%), best epoch and training time.

    .venv/bin/ffbench run small-data --workers 2 && .venv/bin/python benchmarks/studies/per_seed.py small-data
    .venv/bin/ffbench run transfer --workers 2 && .venv/bin/python benchmarks/studies/per_seed.py transfer

The output folder defaults to ffbench-out/<suite> (``--out`` to change it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ffbench.export import load

KEEP = ["status", "test_acc", "val_acc", "best_epoch", "train_time_s", "n_train"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suite")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    runs = load(args.out or f"ffbench-out/{args.suite}", args.suite, percent=True)["runs"]
    factors = [c for c in ("method", "dataset", "backbone", "train_size", "adapt") if c in runs]
    table = runs[[*factors, "seed", "suite_version", *[c for c in KEEP if c in runs]]].sort_values([*factors, "seed"])
    path = Path(__file__).with_name(f"{args.suite}.csv")
    table.to_csv(path, index=False, float_format="%.4f")
    print(f"{path} ({len(table)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
