"""Run the reproduction suites (``suites/repro-*.toml``) and build their ``reproduction`` report: each published
number next to ffbench's mean and 95% CI over seeds, the budget run and seconds per epoch.

    .venv/bin/python benchmarks/reproduction/run.py --dry-run                 # every suite's cells and budget
    .venv/bin/python benchmarks/reproduction/run.py repro-ff-mnist repro-cwc  # run (resumes), then report
    .venv/bin/python benchmarks/reproduction/run.py repro-cwc-cifar --device cuda

Results go to ``<out>/<suite>/`` (default ``ffbench-out/reproduction``); the report to
``<out>/<suite>/reports/<suite>/reproduction.{html,md}``. Running again executes only what is missing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUITES = sorted(p.stem for p in (ROOT / "ffbench" / "suites").glob("repro-*.toml"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suites", nargs="*", default=SUITES, help=f"default: all ({', '.join(SUITES)})")
    ap.add_argument("--out", default="ffbench-out/reproduction")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    exe = Path(sys.executable).with_name("ffbench")  # the console script of this environment
    if not exe.exists():
        ap.error(f"no ffbench command next to {sys.executable}; run with the environment's python (.venv/bin/python)")
    ffbench = [str(exe)]
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        ap.error(f"unknown reproduction suite(s) {', '.join(unknown)}; allowed: {', '.join(SUITES)}")
    code = 0
    for name in args.suites:
        out = Path(args.out) / name
        suite = str(ROOT / "ffbench" / "suites" / f"{name}.toml")
        run = [*ffbench, "run", suite, "--out", str(out), "--device", args.device]
        code |= subprocess.call(run + (["--dry-run"] if args.dry_run else []))
        if not args.dry_run:
            code |= subprocess.call([*ffbench, "report", name, "--out", str(out), "--kind", "reproduction"])
    return code


if __name__ == "__main__":
    sys.exit(main())
