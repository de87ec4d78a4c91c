"""Benchmark SFF against BP and BP-DeepSup (goodness heads) on ResNet18 and MobileNetV3 with a class-balanced
1000-sample Fashion-MNIST training subset, and ASGE against CwC on Fashion-MNIST next to the published numbers.

    .venv/bin/python benchmarks/bench_sff_asge.py                       # both parts, 2 epochs, 3 seeds
    .venv/bin/python benchmarks/bench_sff_asge.py --part sff --epochs 4 --seeds 3
    .venv/bin/python benchmarks/bench_sff_asge.py --part asge --asge-epochs 3 --asge-subset 6000

Accuracy is the harness's: test accuracy at the best-validation epoch. To keep CPU runs short, validation
and test are class-balanced subsets of --eval-size samples each (the same test subset for every method and
seed; 0 = the full test set). Time per epoch is training only (evaluation excluded), from the harness.
"saved" is the peak saved-for-backward activation bytes per training step (the harness's meter); the
analytic limits come from measuring each SFF unit's step alone (unit + aux head + loss): step-and-free
should equal their max, one backward over everything keeps roughly their sum.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

PUBLISHED = {"asge": "93.41% (ASGE abstract, v1/v2)", "cwc": "92.31% (CwC-FF abstract, 7.69% error)"}


def balanced_head(y: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the first n // K samples of each class after a fixed shuffle (seed 0)."""
    perm = torch.as_tensor(np.random.default_rng(0).permutation(len(y)))
    k = int(y.max()) + 1
    return torch.cat([perm[y[perm] == c][: n // k] for c in range(k)]).sort().values


def load(seed: int, subset: int | None, eval_size: int, device: torch.device):
    from ffbench.core.seeds import Streams
    from ffbench.data.data import Split, prepare

    val_size = eval_size if eval_size else 0.1
    data = prepare("fashion-mnist", Streams(seed), device, val_size=val_size, train_subset=subset)
    if eval_size:
        idx = balanced_head(data.test.y.cpu(), eval_size).to(device)
        data.test = Split(data.test.x[idx], data.test.y[idx])
    return data


def run(cfg, data, device, label):
    from ffbench.training.train import fit

    t0 = time.perf_counter()
    res = fit(cfg, device, data=data)
    m, c = res.metrics, res.compute
    rules = {k[9:]: v for k, v in m.items() if k.startswith("test_acc.") and not k[9:].startswith("unit")}
    print(
        f"  {label:<26} seed {cfg.seed}: {res.status}, test {m['test_acc'] * 100:6.2f}% (ep {m['best_epoch']}) "
        f"[{', '.join(f'{k} {v * 100:.2f}' for k, v in rules.items())}]  {c['epoch_time_s']:.1f} s/epoch  "
        f"saved {c['saved_bytes_per_step'] / 2**20:.2f} MiB/step  wall {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return res


def ms(values, scale=1.0, fmt="{:.2f}"):
    v = [x * scale for x in values]
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return (fmt + " ± " + fmt).format(statistics.mean(v), sd)


def part_sff(args, device):
    from ffbench.core.config import RunConfig
    from ffbench.core.seeds import Streams
    from ffbench.training.train import build, unit_saved_bytes

    arms = [("bp", {}), ("bp.deepsup", {"head": "goodness"}), ("sff", {})]
    table = []
    for backbone in ("resnet18", "mobilenetv3"):
        print(
            f"== SFF vs BP on {backbone}: fashion-mnist, train_subset={args.subset}, {args.epochs} epochs, "
            f"batch {args.batch_size}, adam lr {args.lr}",
            flush=True,
        )
        results = {name: [] for name, _ in arms}
        for seed in range(args.seeds):
            data = load(seed, args.subset, args.eval_size, device)
            for name, mopts in arms:
                cfg = RunConfig(
                    method=name,
                    dataset="fashion-mnist",
                    backbone=backbone,
                    seed=seed,
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    lr=args.lr,
                    train_subset=args.subset,
                    val_size=args.eval_size or 0.1,
                    method_options=mopts,
                )
                results[name].append(run(cfg, data, device, f"{name} {backbone}"))
        # analytic limits from one SFF step at the same batch size (an untrained model: sizes do not depend on it)
        cfg = RunConfig(method="sff", dataset="fashion-mnist", backbone=backbone, seed=0)
        method = build(cfg, data, Streams(0), device)
        per_unit = unit_saved_bytes(method, data.train.x[: args.batch_size], data.train.y[: args.batch_size])
        table.append((backbone, results, per_unit))

    print(
        f"\nSFF vs BP, fashion-mnist 1000-sample subset, {args.epochs} epochs, {args.seeds} seeds, "
        f"mean ± sd; eval on {args.eval_size or 'full'} test samples; device {device}, {args.threads} threads"
    )
    print(f"{'backbone':<12} {'method':<28} {'test acc %':>14} {'s/epoch':>14} {'saved MiB/step':>15} {'vs BP':>7}")
    for backbone, results, per_unit in table:
        bp_saved = statistics.mean(r.compute["saved_bytes_per_step"] for r in results["bp"])
        for name, rs in results.items():
            saved = [r.compute["saved_bytes_per_step"] for r in rs]
            label = name + (" (goodness heads)" if name == "bp.deepsup" else "")
            print(
                f"{backbone:<12} {label:<28} {ms([r.metrics['test_acc'] for r in rs], 100):>14} "
                f"{ms([r.compute['epoch_time_s'] for r in rs]):>14} {ms(saved, 2**-20):>15} "
                f"{statistics.mean(saved) / bp_saved:>6.2f}x"
            )
        print(
            f"{backbone:<12} analytic: largest SFF unit step {max(per_unit) / 2**20:.2f} MiB "
            f"(unit {per_unit.index(max(per_unit)) + 1} of {len(per_unit)}), sum over units "
            f"{sum(per_unit) / 2**20:.2f} MiB; per unit MiB: " + " ".join(f"{b / 2**20:.2f}" for b in per_unit)
        )


def part_asge(args, device):
    from ffbench.core.config import RunConfig
    from ffbench.core.registry import METHODS

    arms = [(f"asge lr={lr:g}", "vgg.asge", {}, {}, {"lr": lr}) for lr in args.asge_lr]
    if args.no_cwc:
        pass
    elif "cwc" not in METHODS:
        try:
            import ffbench.methods.cwc  # noqa: F401  (registers it when the entry point is not installed yet)
        except ImportError as exc:
            print(f"!! cwc is not available ({exc}); running ASGE alone", flush=True)
    if (
        "cwc" in METHODS and not args.no_cwc
    ):  # the CwComp recipe: CFSE CNN [20,80,240,480], Adam 0.01, ILT windows for FMNIST
        arms.append(("cwc", "cnn.cfse", {"ilt_table": "fashion-mnist"}, {"channels": [20, 80, 240, 480]}, {"lr": 0.01}))
    print(
        f"== ASGE vs CwC: fashion-mnist, train_subset={args.asge_subset or 'all'}, {args.asge_epochs} epochs, "
        f"batch {args.batch_size}, {args.asge_seeds} seed(s)",
        flush=True,
    )
    results = {a[0]: [] for a in arms}
    for seed in range(args.asge_seeds):
        data = load(seed, args.asge_subset, args.eval_size, device)
        for name, backbone, mopts, bopts, train in arms:
            cfg = RunConfig(
                method=name.split()[0],
                dataset="fashion-mnist",
                backbone=backbone,
                seed=seed,
                epochs=args.asge_epochs,
                batch_size=args.batch_size,
                lr=train.get("lr", args.lr),
                train_subset=args.asge_subset,
                val_size=args.eval_size or 0.1,
                method_options=mopts,
                backbone_options=bopts,
            )
            results[name].append(run(cfg, data, device, f"{name} {backbone}"))
    print(
        f"\nASGE vs CwC, fashion-mnist, train_subset={args.asge_subset or 'all'}, {args.asge_epochs} epochs, "
        f"{args.asge_seeds} seed(s); eval on {args.eval_size or 'full'} test samples; device {device}"
    )
    print(
        f"{'method':<14} {'backbone':<10} {'test acc % (default rule)':>26} {'best rule':>22} {'s/epoch':>14} "
        f"{'saved MiB/step':>15}  published (full budget)"
    )
    for name, rs in results.items():
        rules = [k for k in rs[0].metrics if k.startswith("test_acc.") and not k[9:].startswith("unit")]
        best = max(rules, key=lambda k: statistics.mean(r.metrics[k] for r in rs))
        print(
            f"{name:<14} {dict((a[0], a[1]) for a in arms)[name]:<10} "
            f"{ms([r.metrics['test_acc'] for r in rs], 100):>26} "
            f"{best[9:] + ' ' + ms([r.metrics[best] for r in rs], 100):>22} "
            f"{ms([r.compute['epoch_time_s'] for r in rs]):>14} "
            f"{ms([r.compute['saved_bytes_per_step'] for r in rs], 2**-20):>15}  {PUBLISHED[name.split()[0]]}"
        )
    if "cwc" not in results:
        print("(cwc did not run: ASGE ran alone)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("all", "sff", "asge"), default="all")
    ap.add_argument("--epochs", type=int, default=2, help="SFF part: epochs per run (default 2)")
    ap.add_argument("--seeds", type=int, default=3, help="SFF part: seeds 0..n-1 (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--subset", type=int, default=1000, help="SFF part: class-balanced training subset")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (CwC keeps its own 0.01)")
    ap.add_argument(
        "--eval-size",
        type=int,
        default=1000,
        help="class-balanced validation and test subsets (0: 10%% validation, full test)",
    )
    ap.add_argument("--asge-epochs", type=int, default=2, help="ASGE part: epochs (default 2)")
    ap.add_argument("--asge-subset", type=int, default=6000, help="ASGE part: training subset (0: all)")
    ap.add_argument("--asge-seeds", type=int, default=1, help="ASGE part: seeds (default 1)")
    ap.add_argument(
        "--asge-lr",
        type=float,
        nargs="+",
        default=[1e-3],
        help="ASGE part: Adam learning rate(s), one ASGE arm each (no published recipe; default 1e-3)",
    )
    ap.add_argument("--no-cwc", action="store_true", help="ASGE part: skip the CwC arm")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    args.asge_subset = args.asge_subset or None
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.part in ("all", "sff"):
        part_sff(args, device)
    if args.part in ("all", "asge"):
        part_asge(args, device)


if __name__ == "__main__":
    main()
