"""Bad inputs against real `ffbench` processes: every hostile case of the test corpus (tests/test_bad_input.py:
suite values, files that are not plain suites, command-line values), each in a fresh folder, and what came of
it: refused before anything was claimed (exit 2, one line naming the file, the field and what is allowed), a
traceback, accepted (runs claimed or trained), or a hang.

    .venv/bin/python benchmarks/bench_bad_inputs.py [--root CHECKOUT] [--limit-s 60]

--root runs another checkout's ffbench on the same cases (e.g. before a change) for comparison. Each process
runs under `timeout` and a 6 GB address-space limit, so a case that hangs or reads without end is reported,
not suffered.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import test_bad_input as corpus  # noqa: E402  (the cases are defined once, in the test corpus)


def outcome(r, claimed: int, done: int, expected: list[str], limit_s: int) -> tuple[str, str]:
    """(verdict, what the process said) of one case."""
    err = r.stderr.strip()
    if r.returncode in (124, 137):
        return "HANG", f"killed after {limit_s} s"
    if "Traceback" in err or "MemoryError" in err:
        return "TRACEBACK", f"exit {r.returncode}: {err.splitlines()[-1][:150] if err else ''}"
    lines = err.splitlines()
    said = next((line for line in lines if line.startswith("error: ")), lines[-1] if lines else "")
    if r.returncode == 2 and claimed == 0 and len(lines) <= 2:
        named = all(e in err for e in expected)
        return ("refused" if named else "refused (message differs)"), said[:300]
    return "ACCEPTED", f"exit {r.returncode}, {claimed} run(s) claimed, {done} finished; {said[:150]}"


def row(n: int, case: str, verdict: str, r, claimed: int, said: str) -> str:
    return f"| {n} | {case} | {verdict} | {r.returncode} | {claimed} | {said.replace('|', '/')} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose ffbench runs (default: this one)")
    parser.add_argument("--limit-s", type=int, default=60, help="seconds before a case counts as a hang")
    args = parser.parse_args()
    rows, verdicts = [], []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ffbench-bad-") as tmp:
        tmp = Path(tmp)

        def case(n: int, label: str, make, argv: tuple, expected: list[str]) -> None:
            folder = tmp / f"case{n}"
            folder.mkdir()
            path = folder / "s.toml"
            make(path)
            out = folder / "out"
            if argv[:1] == ("report",):
                cmd = ["report", str(store_suite), "--out", str(store_out), *argv[1:]]
            else:
                cmd = ["run", str(path), "--out", str(out), "--no-tracking", "--no-progress", *argv[1:]]
            r = corpus.ffbench_process(*cmd, cwd=folder, root=args.root, limit_s=args.limit_s)
            claimed = corpus.claimed(out)
            verdict, said = outcome(r, claimed, corpus.claimed(out, finished=True), expected, args.limit_s)
            verdicts.append(verdict)
            rows.append(row(n, label, verdict, r, claimed, said))
            print(rows[-1], flush=True)

        store_suite = corpus.suite_file(tmp)
        store_out = tmp / "store"
        made = corpus.ffbench_process(
            "run",
            str(store_suite),
            "--out",
            str(store_out),
            "--no-tracking",
            "--no-progress",
            cwd=tmp,
            root=args.root,
            limit_s=300,
        )
        if made.returncode != 0:
            print(f"the store for the report cases could not be made: {made.stderr[-500:]}", file=sys.stderr)
            return 1
        print("| # | case | outcome | exit | claimed | what ffbench said |\n|---|---|---|---|---|---|")
        n = 0
        for label, extra, edit, expected in corpus.HOSTILE:
            n += 1
            case(
                n, label, lambda p, e=extra, d=edit: corpus.suite_file(p.parent, e, d, name=p.name), ("run",), expected
            )
        for label, make, expected in corpus.SUITE_FILES:
            n += 1
            case(n, label, make, ("run",), expected)
        for argv, expected in corpus.OPTIONS:
            n += 1
            case(n, f"`{' '.join(argv)}`", lambda p: corpus.suite_file(p.parent, name=p.name), argv, expected)
    counts = {v: verdicts.count(v) for v in dict.fromkeys(verdicts)}
    print(
        f"\n{len(verdicts)} cases in {time.monotonic() - started:.0f} s: "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + f" (ffbench of {args.root})"
    )
    return 0 if counts.get("refused", 0) == len(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
