"""Fit one run: the training loop the harness owns.

Per epoch: the method's training steps over the device-resident loader (timed with device
synchronisation, evaluation excluded), then evaluation on validation and test with every inference
rule and every unit. The reported test accuracy is the one at the epoch with the best validation
accuracy; test accuracy never selects anything. A non-finite loss ends the run as a recorded failure.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ffbench import backbones
from ffbench.config import RunConfig, TRAIN_FIELDS
from ffbench.data import Data, DeviceLoader, Split, prepare
from ffbench.method import Context, Method
from ffbench.registry import METHODS
from ffbench.seeds import Streams


class Diverged(RuntimeError):
    pass


@dataclass
class RunResult:
    status: str  # "done" or "failed"
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    curves: list[dict[str, Any]] = field(default_factory=list)
    compute: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SavedTensorMeter:
    """Peak bytes of activations held for backward, via autograd saved-tensor hooks.

    A tensor counts once however often it is saved, and stops counting when the last graph holding it
    is freed, so a method that steps and frees unit by unit shows one unit's activations, while
    end-to-end backprop shows the sum over units. Parameters are not activations and are left out.
    """

    def __init__(self, params: list[torch.Tensor]):
        self.param_ptrs = {p.untyped_storage().data_ptr() for p in params}
        self.live: dict[tuple[int, int], list[int]] = {}  # (data ptr, numel) -> [bytes, refcount]
        self.current = 0
        self.peak = 0

    def _pack(self, t: torch.Tensor):
        storage = t.untyped_storage()
        if storage.data_ptr() in self.param_ptrs or storage.nbytes() == 0:
            return _Held(t, None, None)
        # a view (a batch sliced from the resident dataset) costs its own bytes, not its storage's
        key = (t.data_ptr(), t.numel())
        rec = self.live.get(key)
        if rec is None:
            rec = self.live[key] = [min(storage.nbytes(), t.numel() * t.element_size()), 0]
            self.current += rec[0]
            self.peak = max(self.peak, self.current)
        rec[1] += 1
        return _Held(t, self, key)

    def _release(self, key: tuple[int, int]) -> None:
        rec = self.live[key]
        rec[1] -= 1
        if rec[1] == 0:
            self.current -= rec[0]
            del self.live[key]

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda held: held.tensor)


class _Held:
    __slots__ = ("tensor", "meter", "key")

    def __init__(self, tensor, meter, key):
        self.tensor, self.meter, self.key = tensor, meter, key

    def __del__(self):
        if self.meter is not None:
            self.meter._release(self.key)


def method_options(config: RunConfig) -> dict[str, Any]:
    card = METHODS.get(config.method).card
    defaults = {k: v for k, v in card.defaults.items() if k not in TRAIN_FIELDS}
    return {**defaults, **config.method_options}


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    if schedule == "cooldown":  # constant, then linear decay to 0 over the second half (loeweX FF)
        half = epochs / 2
        return 1.0 if epoch < half else max(0.0, (epochs - epoch) / (epochs - half))
    return 1.0


@torch.no_grad()
def evaluate(method: Method, split: Split, batch_size: int) -> tuple[dict[str, float], list[float]]:
    """Accuracy of every inference rule and of every unit's scores on ``split``."""
    method.eval()
    rule_hits: dict[str, torch.Tensor] = {}
    unit_hits: list[torch.Tensor] = []
    for i in range(0, len(split), batch_size):
        x, y = split.x[i:i + batch_size], split.y[i:i + batch_size]
        rules, units = method.evaluate(x)
        for name, scores in rules.items():
            rule_hits[name] = rule_hits.get(name, 0) + (scores.argmax(1) == y).sum()
        for k, scores in enumerate(units):
            if k == len(unit_hits):
                unit_hits.append(torch.zeros((), device=y.device))
            unit_hits[k] += (scores.argmax(1) == y).sum()
    n = len(split)
    method.train()
    return {k: v.item() / n for k, v in rule_hits.items()}, [v.item() / n for v in unit_hits]


def build(config: RunConfig, data: Data, streams: Streams, device: torch.device) -> Method:
    entry = METHODS.get(config.method)
    with streams.torch_scope("init"):
        backbone = backbones.build(config.backbone, data.shape, data.num_classes, config.backbone_options)
        ctx = Context(device=device, generator=streams.torch("method", device), optimizer=config.optimizer,
                      lr=config.lr, weight_decay=config.weight_decay, momentum=config.momentum,
                      epochs=config.epochs)
        backbone.to(device)
        method = entry.obj(backbone, data.num_classes, method_options(config), ctx)
    return method.to(device)


def fit(config: RunConfig, device: torch.device | str = "auto",
        on_epoch: Callable[[dict[str, Any]], None] | None = None, data: Data | None = None) -> RunResult:
    """Train and evaluate one run. Exceptions from bad input propagate; divergence is a failed result."""
    device = resolve_device(device) if isinstance(device, str) else device
    streams = Streams(config.seed)
    if data is None:
        data = prepare(config.dataset, streams, device, val_size=config.val_size,
                       train_subset=config.train_subset, classes=config.classes,
                       root=config.dataset_options.get("root"))
    method = build(config, data, streams, device)
    loader = DeviceLoader(data.train, config.batch_size, order_gen=streams.torch("order", device),
                          augment_gen=streams.torch("augment", device), crop_padding=config.crop_padding,
                          flip=config.flip)
    params = list(method.parameters())
    meter = SavedTensorMeter(params)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    result = RunResult(status="done")
    result.compute = {"device": str(device), "n_params": sum(p.numel() for p in params),
                      "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test),
                      "num_classes": data.num_classes, "units": list(method.backbone.unit_names)}
    best_val, train_time = -1.0, 0.0
    method.train()
    try:
        for epoch in range(config.epochs):
            method.ctx.set_lr_factor(lr_factor(config.schedule, epoch, config.epochs))
            method.start_epoch(epoch)
            sums: dict[str, torch.Tensor] = {}
            sync(device)
            t0 = time.perf_counter()
            for i, (x, y) in enumerate(loader):
                if epoch == 0 and i < 2:  # measure activation memory on the first steps only
                    with meter.hooks():
                        stats = method.train_step(x, y)
                else:
                    stats = method.train_step(x, y)
                for k, v in stats.items():
                    if k in sums:
                        sums[k].add_(v)
                    else:
                        sums[k] = v.detach().clone().double()
            sync(device)
            seconds = time.perf_counter() - t0
            train_time += seconds
            row: dict[str, Any] = {"epoch": epoch + 1, "epoch_time_s": seconds}
            row.update({f"train_{k}": v.item() / len(loader) for k, v in sums.items()})
            if not math.isfinite(row.get("train_loss", 0.0)):
                raise Diverged(f"non-finite training loss ({row['train_loss']}) in epoch {epoch + 1}")
            for split_name, split in (("val", data.val), ("test", data.test)):
                rules, units = evaluate(method, split, config.eval_batch_size)
                default = next(iter(rules))
                row[f"{split_name}_acc"] = rules[default]
                row.update({f"{split_name}_acc.{k}": v for k, v in rules.items()})
                row.update({f"{split_name}_acc.unit{k + 1}": v for k, v in enumerate(units)})
            result.curves.append(row)
            if row["val_acc"] > best_val:
                best_val = row["val_acc"]
                result.metrics = {"best_epoch": epoch + 1,
                                  **{k: v for k, v in row.items() if k.startswith(("val_acc", "test_acc"))}}
            if on_epoch is not None:
                on_epoch(row)
    except Diverged as exc:
        result.status, result.error = "failed", str(exc)

    last = result.curves[-1] if result.curves else {}
    result.metrics["test_acc_last"] = last.get("test_acc", float("nan"))
    result.metrics["val_acc_last"] = last.get("val_acc", float("nan"))
    n_epochs = len(result.curves)
    images = n_epochs * len(loader) * config.batch_size
    result.compute.update({
        "train_time_s": train_time,
        "epoch_time_s": train_time / n_epochs if n_epochs else float("nan"),
        "images_per_s": images / train_time if train_time else float("nan"),
        "saved_bytes_per_step": meter.peak,
        "peak_mem_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    })
    return result
