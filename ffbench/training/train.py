"""Fit one run: the training loop the harness owns.

Per epoch: the method's training steps over the device-resident loader (timed with device
synchronisation, evaluation excluded), then evaluation on validation and test with every inference
rule and every unit. The reported test accuracy is the one at the epoch with the best validation
accuracy; test accuracy never selects anything.

Divergence ends the run as a recorded failure (status "failed", error "diverged: ..."): an epoch's mean
training loss that is non-finite, or whose magnitude is above both ``DIVERGED_FACTOR`` (1e3) times the
loss of the first training step (the loss at initialisation) and ``DIVERGED_FLOOR`` (1e3). The first step is
the reference, not the first epoch, because a learning rate far too high explodes within the first epoch.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from ffbench.core.config import TRAIN_FIELDS, RunConfig
from ffbench.core.correctness import encode_correct
from ffbench.core.method import Context, Method
from ffbench.core.options import check_options
from ffbench.core.registry import METHODS
from ffbench.core.seeds import Streams
from ffbench.data.data import Data, DeviceLoader, Split, prepare
from ffbench.training import backbones
from ffbench.training.checkpoint import Checkpoint, generator_states, global_rng_state, restore_global_rng


class Diverged(RuntimeError):
    pass


DIVERGED_FACTOR = 1e3  # an epoch's mean training loss this many times the initial loss ...
DIVERGED_FLOOR = 1e3  # ... and above this in magnitude: the run diverged
DIVERGED = "diverged: "  # how a diverged run's error text starts (its status is "failed", counted as one)


def divergence(loss: float | None, initial: float | None) -> str | None:
    """Why an epoch's mean training loss means the run diverged (see the module docstring), or None."""
    if loss is None:
        return None
    if not math.isfinite(loss):
        return f"non-finite training loss ({loss})"
    if initial is not None and abs(loss) > DIVERGED_FLOOR and abs(loss) > DIVERGED_FACTOR * abs(initial):
        return (
            f"training loss {loss:.3g} is above {DIVERGED_FACTOR:g} x the initial loss {initial:.3g} "
            f"(and above {DIVERGED_FLOOR:g})"
        )
    return None


@dataclass
class RunResult:
    status: str  # "done" or "failed" (a diverged run too: its error starts with DIVERGED)
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    curves: list[dict[str, Any]] = field(default_factory=list)
    compute: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)  # what the run's manifest adds (its transfer source)
    model: Any = None  # the trained method, with fit(keep_model=True) (a source run: its backbone is saved)


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


def unit_saved_bytes(method: Method, x: torch.Tensor, y: torch.Tensor) -> list[int]:
    """Saved-for-backward bytes of each unit's step on its own (unit + aux head + loss), measured with the
    harness's meter. Step-and-free should peak at their max; one backward over all units keeps their sum.
    No update is made and the BatchNorm running statistics are restored."""
    sizes, params = [], list(method.parameters())
    buffers = [b.clone() for b in method.buffers()]
    for k in range(len(method.heads)):
        meter = SavedTensorMeter(params)
        with meter.hooks():
            g, h, x_next = method.forward_unit(k, x)
            loss = method.unit_loss(k, g, y, h)
        sizes.append(meter.peak)
        del g, loss
        x = x_next
    with torch.no_grad():
        for b, saved in zip(method.buffers(), buffers):
            b.copy_(saved)
    return sizes


class TrainingPeak:
    """Peak device memory of the training steps above what is held before training starts (the resident
    data splits, the parameters): the peak is reset before each epoch's steps and read after them, so
    evaluation is left out. The three memory functions are injected (CUDA's in ``for_cuda``)."""

    def __init__(self, allocated: Callable[[], int], max_allocated: Callable[[], int], reset: Callable[[], None]):
        self.max_allocated, self.reset = max_allocated, reset
        self.base = allocated()
        self.peak = 0

    @classmethod
    def for_cuda(cls, device: torch.device) -> TrainingPeak:
        return cls(
            lambda: torch.cuda.memory_allocated(device),
            lambda: torch.cuda.max_memory_allocated(device),
            lambda: torch.cuda.reset_peak_memory_stats(device),
        )

    def start(self) -> None:
        self.reset()

    def stop(self) -> None:
        self.peak = max(self.peak, self.max_allocated() - self.base)


def method_options(config: RunConfig) -> dict[str, Any]:
    """The card's option defaults updated with the run's, checked against the card (the one place)."""
    card = METHODS.get(config.method).card
    defaults = {k: v for k, v in card.defaults.items() if k not in TRAIN_FIELDS}
    return check_options(card.options, {**defaults, **config.method_options}, f"method {config.method}")


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    if schedule == "cooldown":  # constant, then linear decay to 0 over the second half (loeweX FF)
        half = epochs / 2
        return 1.0 if epoch < half else max(0.0, (epochs - epoch) / (epochs - half))
    if schedule == "cooldown-loewex":  # loeweX FF utils: 2 (1 + E - e) / E after the first half (0-based e)
        return 1.0 if epoch <= epochs // 2 else 2 * (1 + epochs - epoch) / epochs
    return 1.0


def evaluate(
    method: Method, split: Split, batch_size: int, correct: list[torch.Tensor] | None = None
) -> tuple[dict[str, float], list[float]]:
    """Accuracy of every inference rule and of every unit's scores on ``split``; ``correct``, when given,
    receives the default rule's per-example correctness, batch by batch."""
    return evaluate_seeds(method, [split], batch_size, None if correct is None else [correct])[0]


@torch.no_grad()
def evaluate_seeds(
    method: Method, splits: list[Split], batch_size: int, correct: list[list[torch.Tensor]] | None = None
) -> list[tuple[dict[str, float], list[float]]]:
    """``evaluate`` for seeds trained together (``ffbench.training.batched``): seed i scored on ``splits[i]`` (equal
    lengths), their batches folded into one pass; one seed is the run alone."""
    n = len(splits)
    method.eval()
    rule_hits: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
    unit_hits: list[list[torch.Tensor]] = [[] for _ in range(n)]
    batch_size = max(1, min(batch_size, (method.max_eval_batch or batch_size * n) // n))
    size = len(splits[0])
    for i in range(0, size, batch_size):
        x = splits[0].x[i : i + batch_size] if n == 1 else torch.cat([s.x[i : i + batch_size] for s in splits])
        ys = [s.y[i : i + batch_size] for s in splits]
        rules, units = method.evaluate(x)
        for name, scores in rules.items():
            for s, (part, y) in enumerate(zip(scores.chunk(n), ys)):
                hit = part.argmax(1) == y
                rule_hits[s][name] = rule_hits[s].get(name, 0) + hit.sum()
                if correct is not None and name == method.default_rule:
                    correct[s].append(hit)
        for k, scores in enumerate(units):
            for s, (part, y) in enumerate(zip(scores.chunk(n), ys)):
                if k == len(unit_hits[s]):
                    unit_hits[s].append(torch.zeros((), device=y.device))
                unit_hits[s][k] += (part.argmax(1) == y).sum()
    method.train()
    first = method.default_rule  # the harness puts the card's default rule first
    out = []
    for s in range(n):
        order = [first, *(r for r in rule_hits[s] if r != first)]
        out.append(({k: rule_hits[s][k].item() / size for k in order}, [v.item() / size for v in unit_hits[s]]))
    return out


def run_data(config: RunConfig, streams: Streams, device: torch.device) -> Data:
    """The run's train / validation / test splits on the device, as its configuration asks."""
    return prepare(
        config.dataset,
        streams,
        device,
        val_size=config.val_size,
        train_subset=config.train_subset,
        classes=config.classes,
        root=config.dataset_options.get("root"),
        normalize=config.dataset_options.get("normalize"),
        val_split=config.dataset_options.get("val_split"),
        keep_classes=config.keep_classes,
    )


def run_loader(config: RunConfig, data: Data, streams: Streams, device: torch.device) -> DeviceLoader:
    """The run's training batches: its order and augmentation streams over its training split."""
    return DeviceLoader(
        data.train,
        config.batch_size,
        order_gen=streams.torch("order", device),
        augment_gen=streams.torch("augment", device),
        crop_padding=config.crop_padding,
        flip=config.flip,
    )


def train_epoch(
    method: Method,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    config: RunConfig,
    epoch: int,
    meter: SavedTensorMeter,
    memory: TrainingPeak | None,
    device: torch.device,
    first: Callable[[dict[str, torch.Tensor]], None],
) -> tuple[float, StepSums]:
    """One epoch's training steps: (their seconds, timed with the device synchronised; their logged sums).
    Activation memory is metered on epoch 0's first two steps, and ``first`` sees the run's first step's
    values (the divergence reference)."""
    method.ctx.set_lr_factor(lr_factor(config.schedule, epoch, config.epochs))
    method.start_epoch(epoch)
    sums = StepSums()
    sync(device)
    if memory:
        memory.start()
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(batches):
        if epoch == 0 and i < 2:  # measure activation memory on the first steps only
            with meter.hooks():
                stats = method.train_step(x, y)
            if i == 0:
                first(stats)
        else:
            stats = method.train_step(x, y)
        sums.add(stats)
    sync(device)
    seconds = time.perf_counter() - t0
    if memory:
        memory.stop()
    return seconds, sums


def describe(method: Method, data: Data, device: torch.device) -> dict[str, Any]:
    """A run's compute record before training: device, sizes, units."""
    return {
        "device": str(device),
        "n_params": sum(p.numel() for p in method.parameters()),
        "n_train": len(data.train),
        "n_val": len(data.val),
        "n_test": len(data.test),
        "num_classes": data.num_classes,
        "units": list(method.backbone.unit_names),
    }


class StepSums:
    """The epoch's sums of the steps' logged values, float64 on the device (no host sync per step). While
    every step logs the same keys, shapes and dtypes, a step's values are stacked and added at once (a few
    kernels, not one per key); each sum equals adding its key's values one by one."""

    def __init__(self):
        self.layout: tuple | None = None  # the steps' (key, shape, dtype) while they stay the same
        self.groups: list[tuple[list[str], torch.Tensor]] = []  # keys of one shape and dtype, their stacked sums
        self.each: dict[str, torch.Tensor] = {}  # per key, once the steps differ

    @torch.no_grad()
    def add(self, stats: dict[str, torch.Tensor]) -> None:
        layout = tuple((k, v.shape, v.dtype) for k, v in stats.items())
        if layout == self.layout:
            for keys, total in self.groups:
                total.add_(torch.stack([stats[k] for k in keys]))
        elif self.layout is None and not self.each:  # the first step
            self.layout, kinds = layout, {}
            for k, shape, dtype in layout:
                kinds.setdefault((shape, dtype), []).append(k)
            self.groups = [(keys, torch.stack([stats[k] for k in keys]).double()) for keys in kinds.values()]
        else:  # the keys changed: each is summed alone from here on
            self.each, self.layout, self.groups = dict(self.totals()), None, []
            for k, v in stats.items():
                if k in self.each:
                    self.each[k].add_(v)
                else:
                    self.each[k] = v.detach().clone().double()

    def totals(self) -> dict[str, torch.Tensor]:
        """Each key's sum, in the order the keys were first logged."""
        if self.layout is None:
            return self.each
        sums = {k: total[i] for keys, total in self.groups for i, k in enumerate(keys)}
        return {k: sums[k] for k, _, _ in self.layout}


class Record:
    """What one run writes as it trains: a row per epoch, the metrics of the epoch with the best validation
    accuracy, its training time and the divergence reference (the first step's loss)."""

    def __init__(self, config: RunConfig, result: RunResult):
        self.config, self.result = config, result
        self.best_val, self.train_time = -1.0, 0.0
        self.initial_loss: float | None = None

    def train_row(self, epoch: int, seconds: float, sums: dict[str, float], steps: int) -> dict[str, Any]:
        """The epoch's row from its training time and summed logged values; raises Diverged."""
        self.train_time += seconds
        row: dict[str, Any] = {"epoch": epoch + 1, "epoch_time_s": seconds}
        row.update({f"train_{k}": v / steps for k, v in sums.items()})
        why = divergence(row.get("train_loss"), self.initial_loss)
        if why:
            raise Diverged(f"{why} in epoch {epoch + 1}")
        return row

    def evaluates(self, epoch: int) -> bool:
        return not (epoch + 1) % self.config.eval_every or epoch + 1 == self.config.epochs

    def evaluated(
        self,
        row: dict[str, Any],
        epoch: int,
        scored: dict[str, tuple[dict[str, float], list[float]]],
        test_correct: list[torch.Tensor],
    ) -> None:
        """Add the splits' accuracies (every rule, every unit) to ``row``; keep the metrics if validation is best."""
        for split_name, (rules, units) in scored.items():
            default = next(iter(rules))
            row[f"{split_name}_acc"] = rules[default]
            row.update({f"{split_name}_acc.{k}": v for k, v in rules.items()})
            row.update({f"{split_name}_acc.unit{k + 1}": v for k, v in enumerate(units)})
        if row["val_acc"] > self.best_val:
            self.best_val = row["val_acc"]
            correct = torch.cat(test_correct)
            self.result.metrics = {
                "best_epoch": epoch + 1,
                **{k: v for k, v in row.items() if k.startswith(("val_acc", "test_acc"))},
                "test_correct_bits": encode_correct(correct.cpu().numpy()),
                "n_test": len(correct),
            }

    def close(self, steps: int, saved_bytes: int, memory_peak: int | None) -> None:
        result = self.result
        last = next((r for r in reversed(result.curves) if "val_acc" in r), {})
        result.metrics["test_acc_last"] = last.get("test_acc", float("nan"))
        result.metrics["val_acc_last"] = last.get("val_acc", float("nan"))
        n_epochs = len(result.curves)
        images = n_epochs * steps * self.config.batch_size
        result.compute.update(
            {
                "train_time_s": self.train_time,
                "epoch_time_s": self.train_time / n_epochs if n_epochs else float("nan"),
                "images_per_s": images / self.train_time if self.train_time else float("nan"),
                "saved_bytes_per_step": saved_bytes,
                "peak_mem_bytes": memory_peak,  # training steps, above the data and parameters
            }
        )


def build(config: RunConfig, data: Data, streams: Streams, device: torch.device) -> Method:
    entry = METHODS.get(config.method)
    why = entry.obj.skip(config)  # the design drops such cells; a run built directly is refused the same way
    if why:
        raise ValueError(why)
    with streams.torch_scope("init"):
        backbone = backbones.build(config.backbone, data.shape, data.num_classes, config.backbone_options)
        ctx = Context(
            device=device,
            generator=streams.torch("method", device),
            optimizer=config.optimizer,
            lr=config.lr,
            weight_decay=config.weight_decay,
            momentum=config.momentum,
            epochs=config.epochs,
        )
        backbone.to(device)
        method = entry.obj(backbone, data.num_classes, method_options(config), ctx)
    return method.to(device)


RESUMED_FIELDS = (
    "curves",
    "metrics",
    "best_val",
    "train_time",
    "initial_loss",
    "saved_bytes_peak",
    "memory_peak",
    "epoch",
    "resumed",
    "threads",
)


def restore(state: dict[str, Any], method, gens: dict[str, torch.Generator | None]) -> None:
    """Put a checkpoint's training state into a freshly built method, its optimizers and streams, all or
    nothing: a state that does not fit (a missing key, a wrong shape) raises with everything as it was."""
    import copy

    missing = [k for k in ("method", "optimizers", "generators", "global_rng", *RESUMED_FIELDS) if k not in state]
    if missing:
        raise KeyError(f"missing {', '.join(missing)}")
    if not isinstance(state["metrics"], dict) or set(state["generators"]) - {k for k, g in gens.items() if g}:
        raise ValueError("its metrics or streams are not this run's")
    before = (
        copy.deepcopy(method.state_dict()),
        [copy.deepcopy(o.state_dict()) for o in method.ctx.optimizers],
        generator_states(gens),
        global_rng_state(),
    )
    try:
        method.load_state_dict(state["method"])
        for opt, opt_state in zip(method.ctx.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        for name, g_state in state["generators"].items():
            gens[name].set_state(g_state)
        restore_global_rng(state["global_rng"])
    except Exception:
        method.load_state_dict(before[0])
        for opt, opt_state in zip(method.ctx.optimizers, before[1]):
            opt.load_state_dict(opt_state)
        for name, g_state in before[2].items():
            gens[name].set_state(g_state)
        restore_global_rng(before[3])
        raise


def run_epochs(
    method: Method,
    datas: list[Data],
    loaders: list[DeviceLoader],
    records: list[Record],
    meter: SavedTensorMeter,
    memory: TrainingPeak | None,
    device: torch.device,
    first: Callable[[dict[str, torch.Tensor]], None],
    start: int = 0,
    after_epoch: Callable[[int], None] | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> None:
    """The epoch loop of one run, or of seeds trained together (``method`` stacked over ``len(records)``
    seeds, their mini-batches folded seed-major, ``ffbench.training.batched``): train, log each seed's row,
    evaluate, then ``after_epoch(epoch)`` (a checkpoint) and ``on_epoch(seed, row)``. A seed whose loss
    diverges fails alone; the others go on. Closes every record."""
    config, n = records[0].config, len(records)
    steps = len(loaders[0])
    alive = list(range(n))
    method.train()
    for epoch in range(start, config.epochs):
        batches = (
            loaders[0]
            if n == 1
            else ((torch.cat([b[0] for b in folded]), torch.cat([b[1] for b in folded])) for folded in zip(*loaders))
        )
        seconds, sums = train_epoch(method, batches, config, epoch, meter, memory, device, first)
        seconds /= n  # each seed's share of the batch's time
        values = {k: v.reshape(-1).expand(n).tolist() for k, v in sums.totals().items()}
        rows = {}
        for s in list(alive):
            try:
                rows[s] = records[s].train_row(epoch, seconds, {k: v[s] for k, v in values.items()}, steps)
            except Diverged as exc:  # this seed fails; the others go on (its rows keep computing, unread)
                records[s].result.status, records[s].result.error = "failed", DIVERGED + str(exc)
                alive.remove(s)
        if not alive:
            break
        if records[0].evaluates(epoch):
            correct: list[list[torch.Tensor]] = [[] for _ in range(n)]
            val = evaluate_seeds(method, [d.val for d in datas], config.eval_batch_size)
            test = evaluate_seeds(method, [d.test for d in datas], config.eval_batch_size, correct)
            for s in alive:
                records[s].evaluated(rows[s], epoch, {"val": val[s], "test": test[s]}, correct[s])
        for s in alive:
            records[s].result.curves.append(rows[s])
        if after_epoch is not None:
            after_epoch(epoch)
        if on_epoch is not None:
            for s in alive:
                on_epoch(s, rows[s])
    for rec in records:
        rec.close(steps, meter.peak // n, memory.peak // n if memory else None)


def fit(
    config: RunConfig,
    device: torch.device | str = "auto",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    data: Data | None = None,
    weights_dir: str | None = None,
    keep_model: bool = False,
    checkpoint: str | None = None,
) -> RunResult:
    """Train and evaluate one run. Exceptions from bad input propagate; divergence is a failed result.
    A run that adapts from a source (``config.adapt``) starts from its pretrained backbone, trained first if
    ``weights_dir`` (default: ``transfer.default_weights_dir()``) does not hold it yet; that time is not the
    run's training time. With ``checkpoint`` (a file path) the run resumes from the state an earlier process
    saved there and saves its own at epoch ends (``ffbench.training.checkpoint``)."""
    device = resolve_device(device) if isinstance(device, str) else device
    pretrained = None
    if config.adapt is not None:  # first, so a run reads the same random state whether it trained its source or not
        from ffbench.training import transfer

        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            pretrained = transfer.pretrained(config, device, weights_dir)
    streams = Streams(config.seed)
    if data is None:
        data = run_data(config, streams, device)
    method = build(config, data, streams, device)
    source = None
    if pretrained:
        try:
            source = transfer.start(method, config, *pretrained)
        except transfer.DamagedSource as exc:  # a stored source's fault, not the method's: trained again
            print(f"warning: {exc}; the source is trained again", file=sys.stderr)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                pretrained = transfer.pretrained(config, device, weights_dir, rejected=pretrained[1]["sha256"])
            source = transfer.start(method, config, *pretrained)
    loader = run_loader(config, data, streams, device)
    meter = SavedTensorMeter(list(method.parameters()))
    memory = TrainingPeak.for_cuda(device) if device.type == "cuda" else None

    result = RunResult(status="done", manifest={"source": source} if source else {})
    result.compute = describe(method, data, device)
    rec = Record(config, result)
    gens = {"order": loader.order_gen, "augment": loader.augment_gen, "method": method.ctx.generator}
    saver = Checkpoint(checkpoint, config.to_dict()) if checkpoint else None
    state = saver.load() if saver else None
    first_epoch, resumed = 0, []
    if state is not None:
        try:
            restore(state, method, gens)
        except Exception as exc:  # verified, yet not this method's state: the run starts over
            saver.discard(f"its state does not fit the method ({type(exc).__name__}: {str(exc)[:200]})")
            state = None
    if state is not None:
        result.curves, result.metrics = state["curves"], state["metrics"]
        rec.best_val, rec.train_time, rec.initial_loss = state["best_val"], state["train_time"], state["initial_loss"]
        meter.peak = state["saved_bytes_peak"]
        if memory:
            memory.peak = state["memory_peak"] or 0
        first_epoch = state["epoch"]
        resumed = [
            *state["resumed"],
            {"after_epoch": first_epoch, "threads": torch.get_num_threads(), "saved_with_threads": state["threads"]},
        ]
        result.manifest["resumed"] = resumed

    def save(epoch: int) -> None:
        if saver is not None and epoch + 1 < config.epochs and saver.due():
            saver.save(
                {
                    "epoch": epoch + 1,
                    "method": method.state_dict(),
                    "optimizers": [opt.state_dict() for opt in method.ctx.optimizers],
                    "generators": generator_states(gens),
                    "global_rng": global_rng_state(),
                    "curves": result.curves,
                    "metrics": result.metrics,
                    "best_val": rec.best_val,
                    "train_time": rec.train_time,
                    "initial_loss": rec.initial_loss,
                    "saved_bytes_peak": meter.peak,
                    "memory_peak": memory.peak if memory else None,
                    "resumed": resumed,
                    "threads": torch.get_num_threads(),
                }
            )

    def first(stats: dict[str, torch.Tensor]) -> None:
        if "loss" in stats:
            rec.initial_loss = float(stats["loss"])

    run_epochs(
        method,
        [data],
        [loader],
        [rec],
        meter,
        memory,
        device,
        first,
        start=first_epoch,
        after_epoch=save,
        on_epoch=None if on_epoch is None else lambda s, row: on_epoch(row),
    )
    if source:
        result.compute["trainable_params"] = source["trainable_params"]
    if keep_model:
        result.model = method
    return result
