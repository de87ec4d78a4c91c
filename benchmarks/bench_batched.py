"""Seeds trained together (``ffbench.training.batched``) against the same seeds one after another, on the quick suite's
cells (their configurations come from ``suites/quick.toml`` through ``ffbench.plan.design.expand``).

    .venv/bin/python benchmarks/bench_batched.py                              # 3 epochs, N = 1, 3, 10 seeds
    .venv/bin/python benchmarks/bench_batched.py --methods bp,sff --seeds 1,3 --epochs 1 --threads 1
    .venv/bin/python benchmarks/bench_batched.py --parts ops                  # the op counts alone
    .venv/bin/python benchmarks/bench_batched.py --parts - --suite quick      # the whole suite, twice

Three tables:
1. Training time per epoch (evaluation excluded) of N seeds: one after another (the sum over N ``train.fit``
   runs of train_time_s / epochs; seeds 0..N-1, each trained once, so N = 3's runs are N = 10's first three)
   and batched (``fit_seeds`` gives each seed its share, so the batch's time is N x a seed's epoch_time_s);
   their ratio; and "batched / 1 seed", batched N seeds against one seed alone (the target: 10 seeds of a
   digits MLP cell in at most 3x one seed's time). Wall is seconds around the whole fit calls, evaluation
   included. |dacc| is the largest test-accuracy difference between a seed batched and the same seed alone.
2. Dispatched ops per training step: aten ops not called from inside another aten op (one dispatch from
   Python or autograd each), counted with torch.profiler on one ``train_step`` after 3 warm-up steps, for one
   seed and for one step of N seeds stacked (per seed: that / N). "before" is
   ``--before FILE`` (default ``benchmarks/ops_per_step_36a83fa.json``: one seed's ops per step at commit
   36a83fa, before the forward-forward step was reduced, counted the same way).
3. With --suite NAME|PATH: ``ffbench run`` of the whole suite twice in subprocesses, with batch_seeds = false
   and with "auto", timed end to end, and whether the two stores' per-run test accuracies agree.

The numbers mean something only on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from ffbench.core.config import RunConfig
from ffbench.core.seeds import Streams
from ffbench.training.batched import Unbatchable, fit_seeds, stack
from ffbench.training.train import build, fit, lr_factor, resolve_device, run_data, run_loader

BEFORE = Path(__file__).resolve().parent / "ops_per_step_36a83fa.json"


def cell_configs(suite_name: str, methods: list[str] | None) -> dict[str, RunConfig]:
    """'method/backbone' -> the cell's resolved configuration (seed 0), as the suite runs it."""
    from ffbench.plan import design, suite

    cells = design.expand(suite.load(suite_name)).cells
    out = {
        f"{c.config.method}/{c.config.backbone}": c.config
        for c in cells
        if methods is None or c.config.method in methods
    }
    if methods is not None and (missing := set(methods) - {k.split("/")[0] for k in out}):
        raise SystemExit(f"not in suite {suite_name}: {', '.join(sorted(missing))}")
    return out


# ---------------------------------------------------------------- 1. time per epoch
def timed(call):
    t0 = time.perf_counter()
    out = call()
    return out, time.perf_counter() - t0


def time_cell(config: RunConfig, ns: list[int], device: torch.device) -> list[dict]:
    alone, walls = [], []
    for seed in range(max(ns)):
        res, wall = timed(lambda seed=seed: fit(replace(config, seed=seed), device))
        if res.status != "done":
            raise RuntimeError(f"{config.method} seed {seed} alone: {res.status} {res.error}")
        alone.append(res)
        walls.append(wall)
    one = alone[0].compute["train_time_s"] / config.epochs
    rows = []
    for n in ns:
        seq = sum(r.compute["train_time_s"] for r in alone[:n]) / config.epochs
        row = {"n": n, "seq": seq, "seq_wall": sum(walls[:n]), "one": one}
        if n > 1:
            try:
                batch, wall = timed(lambda n=n: fit_seeds([replace(config, seed=s) for s in range(n)], device))
            except Unbatchable as exc:  # not exact here (or not stackable): the runner trains them alone
                row["why"] = str(exc)
                rows.append(row)
                continue
            if any(r.status != "done" for r in batch):
                raise RuntimeError(f"{config.method} batched {n}: {[(r.status, r.error) for r in batch]}")
            row.update(
                bat=n * batch[0].compute["epoch_time_s"],
                bat_wall=wall,
                dacc=max(abs(b.metrics["test_acc"] - a.metrics["test_acc"]) for a, b in zip(alone, batch)),
            )
        rows.append(row)
    return rows


def print_times(results: dict[str, list[dict]], epochs: int) -> None:
    print(f"\n1. Training seconds per epoch of N seeds ({epochs} epochs; wall: whole fit calls, evaluation included)")
    head = (
        f"{'cell':<22} {'N':>3} {'alone s/ep':>11} {'batched s/ep':>13} {'alone/batched':>14} "
        f"{'batched/1 seed':>15} {'alone wall s':>13} {'batched wall s':>15} {'|dacc|':>8}"
    )
    print(head)
    print("-" * len(head))
    for cell, rows in results.items():
        for r in rows:
            if "bat" in r:
                bat = f"{r['bat']:13.3f} {r['seq'] / r['bat']:13.2f}x {r['bat'] / r['one']:14.2f}x"
                tail = f"{r['bat_wall']:15.2f} {r['dacc']:8.1e}"
            else:
                bat, tail = f"{'(alone)':>13} {'':>14} {r['seq'] / r['one']:14.2f}x", f"{'-':>15} {'-':>8}"
            print(f"{cell:<22} {r['n']:>3} {r['seq']:11.3f} {bat} {r['seq_wall']:13.2f} {tail}")
            if "why" in r:
                print(f"{'':<22}     not batched here: {r['why']}")


# ---------------------------------------------------------------- 2. dispatched ops per step
def outer_aten_ops(step) -> int:
    """Aten ops of one call of ``step()`` not called from inside another aten op: one dispatch each."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()

    def outer(e):
        p = e.cpu_parent
        while p is not None:
            if p.name.startswith("aten::"):
                return False
            p = p.cpu_parent
        return True

    return sum(1 for e in prof.events() if e.name.startswith("aten::") and outer(e))


def ops_per_step(config: RunConfig, n: int, device: torch.device, warmup: int = 3) -> int:
    """Ops of one training step of seeds 0..n-1, stacked as ``fit_seeds`` stacks them (n = 1: the run alone)."""
    configs = [replace(config, seed=s) for s in range(n)]
    streams = [Streams(c.seed) for c in configs]
    datas = [run_data(c, s, device) for c, s in zip(configs, streams)]
    copies = [build(c, d, s, device) for c, d, s in zip(configs, datas, streams)]
    method = copies[0] if n == 1 else stack(copies)
    loaders = [iter(run_loader(c, d, s, device)) for c, d, s in zip(configs, datas, streams)]
    method.train()
    method.ctx.set_lr_factor(lr_factor(config.schedule, 0, config.epochs))
    method.start_epoch(0)

    def batch():
        parts = [next(it) for it in loaders]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    for _ in range(warmup):
        method.train_step(*batch())
    x, y = batch()
    return outer_aten_ops(lambda: method.train_step(x, y))


def print_ops(results: dict[str, dict[int, int]], ns: list[int], before_file: Path = BEFORE) -> None:
    before = json.loads(before_file.read_text()) if before_file.exists() else {}
    batched = [n for n in ns if n > 1]
    print(
        "\n2. Dispatched aten ops per training step (outer ops, after 3 warm-up steps)"
        + (f"; before: {before_file.name}, one seed" if before else "")
    )
    head = (
        f"{'cell':<22}"
        + (f" {'before (1 seed)':>16}" if before else "")
        + f" {'1 seed':>8}"
        + "".join(f" {f'{n} seeds/step':>14} {'per seed':>9}" for n in batched)
    )
    print(head)
    print("-" * len(head))
    for cell, counts in results.items():
        line = f"{cell:<22}" + (f" {before.get(cell, '-'):>16}" if before else "") + f" {counts[1]:>8}"
        line += "".join(f" {counts[n]:>14} {counts[n] / n:>9.1f}" for n in batched)
        print(line)


# ---------------------------------------------------------------- 3. the whole suite
def suite_copy(src: Path, folder: Path, mode: str) -> Path:
    """The suite's TOML with [suite].batch_seeds set to ``mode`` (a TOML value)."""
    lines = [line for line in src.read_text().splitlines() if not re.match(r"\s*batch_seeds\s*=", line)]
    at = next(i for i, line in enumerate(lines) if re.match(r"\s*\[suite\]\s*(#.*)?$", line))
    lines.insert(at + 1, f"batch_seeds = {mode}")
    folder.mkdir(parents=True)
    dest = folder / src.name
    dest.write_text("\n".join(lines) + "\n")
    return dest


def run_suite(name_or_path: str, device: str, threads: int | None) -> None:
    from ffbench.plan.suite import find_suite, load
    from ffbench.record.store import Store

    src = find_suite(name_or_path)
    name = load(str(src)).name
    exe = Path(sys.executable).parent / "ffbench"
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), FFBENCH_THREADS=str(threads))
    with tempfile.TemporaryDirectory(prefix="bench_batched_") as tmp:
        walls, stores = {}, {}
        for label, mode in (("one after another", "false"), ("batched (auto)", '"auto"')):
            folder = Path(tmp) / mode.strip('"')
            path = suite_copy(src, folder / "suite", mode)
            out = folder / "out"
            cmd = [str(exe), "run", str(path), "--out", str(out), "--no-progress", "--no-tracking", "--device", device]
            print(f"  {label}: {' '.join(cmd[1:])}", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            walls[label] = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(
                    f"ffbench run ({label}) exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
                )
            stores[label] = {r["run_id"]: r for r in Store(out / "results.db").rows(name)}
        seq, bat = stores.values()
        batched = sum(1 for r in bat.values() if (r.get("manifest") or {}).get("batched"))
        common = sorted(set(seq) & set(bat))
        diffs = [
            abs(seq[k]["metrics"]["test_acc"] - bat[k]["metrics"]["test_acc"])
            for k in common
            if seq[k]["status"] == bat[k]["status"] == "done"
        ]
        (l1, w1), (l2, w2) = walls.items()
        print(f"\n3. Whole suite {name} ({src}), end to end, device {device}")
        print(f"  {l1:<20} {w1:8.1f} s   ({len(seq)} runs)")
        print(f"  {l2:<20} {w2:8.1f} s   ({len(bat)} runs, {batched} of them batched)")
        print(f"  ratio {l1} / {l2}: {w1 / w2:.2f}x")
        print(
            f"  test accuracy per run: {sum(d == 0 for d in diffs)} identical, {sum(d != 0 for d in diffs)} differ, "
            f"max |difference| {max(diffs, default=float('nan')):.2e}; {len(common) - len(diffs)} not done in both; "
            f"{len(set(seq) ^ set(bat))} in one store only"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", help="comma-separated methods of the quick suite (default: all)")
    ap.add_argument("--seeds", default="1,3,10", help="the values of N (comma-separated)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    ap.add_argument("--parts", default="time,ops", help="time, ops (comma-separated; '-' for neither)")
    ap.add_argument("--before", type=Path, default=BEFORE, help="ops per step to show as 'before' (JSON)")
    ap.add_argument("--suite", help="also run this suite (name or path) whole, one after another and batched")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ns = sorted({int(n) for n in args.seeds.split(",")})
    parts = set(args.parts.split(","))
    print(
        f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
        f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    configs = cell_configs("quick", args.methods.split(",") if args.methods else None)
    if "time" in parts:
        fit(replace(next(iter(configs.values())), epochs=1), device)  # warm-up: imports, thread pool, data cache
        times = {}
        for cell, config in configs.items():
            times[cell] = time_cell(replace(config, epochs=args.epochs), ns, device)
            print(f"  timed {cell}", flush=True)
        print_times(times, args.epochs)
    if "ops" in parts:
        counts = {
            cell: {n: ops_per_step(config, n, device) for n in sorted({1, *ns})} for cell, config in configs.items()
        }
        print_ops(counts, ns, args.before)
    if args.suite:
        print(flush=True)
        run_suite(args.suite, args.device, args.threads)


if __name__ == "__main__":
    main()
