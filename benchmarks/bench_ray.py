"""The Ray executor's cost: a suite run locally (one worker in this process) against the same suite through a
Ray cluster of two nodes started on this machine (``ray start``, one CPU each, one torch thread per run).

Prints both wall times (the cluster's start-up excluded, the driver's connection included), the ratio, and
the executor's overhead per run: the Ray wall time times the runs it executes at once, minus the local wall
time, divided by the number of runs (0 would be a perfect split over the nodes). By default a subset of the
quick suite (bp and sff on the MLP, 3 seeds, 4 epochs); ``--full`` runs the quick suite as it is.

    python benchmarks/bench_ray.py                       # the subset
    python benchmarks/bench_ray.py --full                # the whole quick suite (minutes per side)
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).with_name("ray")
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}  # a loopback-only cluster


def subset_suite(folder: Path, methods: list[str], epochs: int, full: bool) -> Path:
    """The quick suite, or its subset: the given methods on the MLP, at ``epochs`` epochs."""
    text = (ROOT / "ffbench" / "suites" / "quick.toml").read_text()
    if full:
        path = folder / "quick.toml"
        path.write_text(text)
        return path
    quick = tomllib.loads(text)
    lines = [
        '[suite]\nname = "bench-ray"\nversion = 1\n',
        "[design]",
        f"methods = {methods!r}".replace("'", '"'),
        'datasets = ["digits"]',
        'backbones = ["mlp"]',
        f"seeds = {quick['design']['seeds']}",
        "",
        "[train]",
        f"epochs = {epochs}",
        f"batch_size = {quick['train']['batch_size']}",
        f"val_size = {quick['train']['val_size']}",
        "",
    ]
    for m in methods:  # the quick suite's per-method settings
        settings = quick.get("methods", {}).get(m, {})
        if settings:
            lines.append(f'[methods."{m}"]')
            lines += [f"{k} = {v!r}" for k, v in settings.items()]
    lines += ["", "[backbones.mlp]", f"widths = {quick['backbones']['mlp']['widths']}"]
    path = folder / "bench-ray.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["bp", "sff"])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--full", action="store_true", help="the whole quick suite instead of the subset")
    ap.add_argument("--nodes", type=int, default=2)
    args = ap.parse_args()
    os.environ.update(RAY_ENV)

    import torch

    torch.set_num_threads(1)
    from ffbench.execution import ray_executor, runner

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    suite = subset_suite(work, args.methods, args.epochs, args.full)

    t0 = time.perf_counter()
    local = runner.run_suite(str(suite), work / "local", device="cpu", progress=False)
    t_local = time.perf_counter() - t0
    n = local["executed"]

    port = free_port()
    address = f"127.0.0.1:{port}"
    groups = []
    t0 = time.perf_counter()
    try:
        for i in range(args.nodes):
            role = ["--head", "--port", str(port), "--include-dashboard=false"] if i == 0 else ["--address", address]
            p = subprocess.Popen(
                [
                    str(RAY),
                    "start",
                    *role,
                    "--node-ip-address",
                    "127.0.0.1",
                    "--num-cpus",
                    "1",
                    "--disable-usage-stats",
                ],
                env={**os.environ, **RAY_ENV},
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
            p.wait(timeout=180)
            groups.append(p.pid)
        t_cluster = time.perf_counter() - t0
        t0 = time.perf_counter()
        remote = ray_executor.run_suite(str(suite), work / "ray", device="cpu", progress=False, address=address)
        t_ray = time.perf_counter() - t0
    finally:
        for g in reversed(groups):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(g, sig)
                except ProcessLookupError:
                    break
                time.sleep(2)
        current = Path("/tmp/ray/ray_current_cluster")
        if current.exists() and current.read_text().strip().endswith(f":{port}"):
            current.unlink(missing_ok=True)

    same = all(
        a["metrics"] == b["metrics"]
        for a, b in zip(local["store"].rows(local["suite"].name), remote["store"].rows(remote["suite"].name))
    )
    parallel = args.nodes
    print(
        f"suite: {suite.stem} ({'the quick suite' if args.full else 'subset: ' + ', '.join(args.methods) + ' on mlp'}"
        f", {n} runs, {args.epochs if not args.full else 'the suite'} epochs), CPU, one torch thread per run"
    )
    print(f"local (1 worker):              {t_local:7.1f} s")
    print(f"ray ({parallel} nodes x 1 CPU):         {t_ray:7.1f} s   (+ {t_cluster:.1f} s to start the cluster)")
    print(f"ratio ray / local:             {t_ray / t_local:7.2f}   (ideal with {parallel} nodes: {1 / parallel:.2f})")
    print(
        f"executor overhead per run:     {(t_ray * parallel - t_local) / n:7.2f} s "
        f"(= (ray wall x {parallel} - local wall) / {n} runs)"
    )
    print(f"same metrics run for run:      {same}")


if __name__ == "__main__":
    main()
