"""Harness overhead: BP epoch time through ffbench against a minimal hand-written PyTorch loop.

Same model (the `mlp` backbone + linear head, same initialisation), same device-resident data, same
optimizer, batch size and device. Only the training phase is timed in both (evaluation excluded).
Prints the ratio of median epoch times; the target is at most 1.05.

    python benchmarks/bench_overhead.py --dataset mnist --epochs 3 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ffbench.core.config import RunConfig
from ffbench.core.seeds import Streams
from ffbench.data.data import prepare
from ffbench.training.train import build, fit, resolve_device, sync


def bare_loop(config: RunConfig, device: torch.device) -> list[float]:
    streams = Streams(config.seed)
    data = prepare(config.dataset, streams, device, val_size=config.val_size)
    method = build(config, data, streams, device)  # the same modules and init; only its parts are used
    model = torch.nn.Sequential(method.backbone, method.head)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = streams.torch("order", device)
    x_all, y_all = data.train.x, data.train.y
    n, bs = len(y_all), config.batch_size
    times = []
    for _ in range(config.epochs):
        sync(device)
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen, device=device)
        x, y = x_all[perm], y_all[perm]
        for i in range(n // bs):
            loss = F.cross_entropy(model(x[i * bs : (i + 1) * bs]), y[i * bs : (i + 1) * bs])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--widths", default="1000,1000,1000")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2, help="alternating repeats of both loops")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = RunConfig(
        method="bp",
        dataset=args.dataset,
        backbone="mlp",
        epochs=args.epochs,
        batch_size=args.batch_size,
        backbone_options={"widths": [int(w) for w in args.widths.split(",")]},
    )
    harness, bare = [], []
    for _ in range(args.repeats):  # alternate, so drifts in machine load hit both alike
        bare += bare_loop(config, device)
        harness += [row["epoch_time_s"] for row in fit(config, device).curves]
    h, b = statistics.median(harness), statistics.median(bare)
    print(
        f"device {device}, threads {args.threads}, {args.dataset}, MLP {args.widths}, batch {args.batch_size}, "
        f"{args.epochs} epochs x {args.repeats} repeats"
    )
    print(f"bare PyTorch loop : median {b:.3f} s/epoch  (all: {', '.join(f'{t:.2f}' for t in bare)})")
    print(f"ffbench fit       : median {h:.3f} s/epoch  (all: {', '.join(f'{t:.2f}' for t in harness)})")
    print(f"overhead ratio    : {h / b:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
