"""Start-up time of the command line: each light command run N times in fresh processes, through the installed
``ffbench`` console script and through ``python -m ffbench`` (from a checkout), with the median wall time; then
``python -X importtime``'s top offenders for ``ffbench --version``. It prints and asserts nothing: the times
depend on the machine and its load (the load average is printed with them). Give several scripts or checkouts
to compare them: their runs alternate, so a change in the machine's load falls on each alike.

    python benchmarks/bench_cli.py                                  # 5 runs each, this interpreter's ffbench
    python benchmarks/bench_cli.py --repeat 9 --ffbench /tmp/new/bin/ffbench --ffbench /tmp/old/bin/ffbench \
        --root . --root /tmp/old-checkout
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [
    ["--version"],
    ["--help"],
    ["list", "methods"],
    ["list", "backbones"],
    ["list", "datasets"],
    ["list", "axes"],
    ["list", "reports"],
    ["run", "--help"],
]


def wall(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} exited with {p.returncode}:\n{p.stderr}")
    return took


def origin(python: str, cwd: Path, env: dict[str, str]) -> str:
    """Where ``import ffbench`` finds the package for this interpreter, started in ``cwd``."""
    code = "import ffbench.cli, sys; print(ffbench.cli.__file__)"
    return subprocess.run([python, "-c", code], cwd=cwd, env=env, capture_output=True, text=True).stdout.strip()


def interpreter(script: str) -> str:
    """The Python of a console script (its #! line)."""
    first = Path(script).read_text().splitlines()[0]
    return first[2:].strip() if first.startswith("#!") else sys.executable


def import_offenders(python: str, cwd: Path, env: dict[str, str], top: int) -> list[tuple[int, int, str]]:
    """(cumulative µs, self µs, module) of the imports ``ffbench --version`` makes directly (not nested in
    another import), the slowest first."""
    p = subprocess.run(
        [python, "-X", "importtime", "-m", "ffbench", "--version"], cwd=cwd, env=env, capture_output=True, text=True
    )
    rows = []
    for line in p.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cumulative, name = line[len("import time:") :].split("|")
        if not name[1:].startswith(" "):  # nested imports are indented under their importer
            rows.append((int(cumulative), int(own), name.strip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="fresh processes per command and way (default 5)")
    ap.add_argument("--python", default=sys.executable, help="interpreter for `python -m ffbench` (default: this one)")
    ap.add_argument(
        "--ffbench",
        action="append",
        help="a console script to time (repeatable; default: the one beside this interpreter)",
    )
    ap.add_argument(
        "--root",
        type=Path,
        action="append",
        help="a checkout to run `python -m ffbench` in (repeatable; default: this)",
    )
    ap.add_argument("--top", type=int, default=12, help="import offenders shown (default 12)")
    args = ap.parse_args()
    scripts = args.ffbench or [
        s for s in [shutil.which("ffbench", path=str(Path(sys.executable).parent)) or shutil.which("ffbench")] if s
    ]
    roots = args.root or [ROOT]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    neutral = Path("/")  # a console script must import its installed copy, not a checkout in the cwd
    ways = [([s], neutral, interpreter(s)) for s in scripts] + [
        ([args.python, "-m", "ffbench"], r, args.python) for r in roots
    ]
    print(f"{os.cpu_count()} CPUs; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for i, (head, cwd, python) in enumerate(ways, 1):
        print(f"[{i}] {' '.join(head)} (in {cwd}) imports {origin(python, cwd, env)}")
    width = max(len(" ".join(c)) for c in COMMANDS)
    print(f"\nmedian wall time of {args.repeat} fresh processes, seconds (min-max)")
    print(f"{'command':{width}s}  " + "  ".join(f"{f'[{i}]':>18s}" for i in range(1, len(ways) + 1)))
    for command in COMMANDS:
        for head, cwd, _ in ways:
            wall(head + command, cwd, env)  # one untimed run: the file cache, .pyc files
        times: list[list[float]] = [[] for _ in ways]
        for _ in range(args.repeat):  # the ways alternate: a change of load falls on each alike
            for t, (head, cwd, _) in zip(times, ways):
                t.append(wall(head + command, cwd, env))
        cells = [f"{statistics.median(t):.2f} ({min(t):.2f}-{max(t):.2f})" for t in times]
        print(f"{' '.join(command):{width}s}  " + "  ".join(f"{c:>18s}" for c in cells))
    for root in roots:
        print(f"\n`python -X importtime -m ffbench --version` in {root}: the slowest direct imports")
        print(f"{'cumulative ms':>14s} {'self ms':>8s}  module")
        for cumulative, own, name in import_offenders(args.python, root, env, args.top):
            print(f"{cumulative / 1000:14.1f} {own / 1000:8.1f}  {name}")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
