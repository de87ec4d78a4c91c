"""Seeds of a cell trained together: N copies of a method stacked into one model (a leading seed dimension).

Each seed's copy is built exactly as its run alone builds it (its own data splits, initialisation, order,
augmentation and method streams), then the copies are stacked: every layer with parameters or buffers is
replaced by one that holds the N copies' tensors and applies seed i's weights to seed i's rows. The N
mini-batches are folded into one, seed-major (seed 0's rows, then seed 1's, ...), so one kernel serves N
seeds: linear layers as batched matrix products, convolutions as grouped convolutions, BatchNorm as one
BatchNorm over N x C channels (each seed keeps its own batch statistics and running averages); any other
layer with tensors runs its own code seed by seed. The optimizers keep their settings and get the stacked
parameters; Adam and SGD are elementwise, so each seed's update is its own. Losses and logged values are
per seed (a local method's loop computes each on its seed's rows, ``core.method.reduce_per_seed``), and
``step`` back-propagates their sum, so each seed's gradient is the one it gets alone; a seed whose loss
diverges fails alone, the others go on. A whole-network method trains its seeds together only where its
class sets ``seed_batching`` (its losses then come from ``ctx.per_seed``).

Bit for bit: kernels sum in an order that depends on their shapes, memory layout and the processor, and
chaotic training (FF on the quick suite) turns a last-bit difference at one step into other accuracies a few
epochs later. So a batched kernel is used only for shapes where it gives each seed's result exactly (checked
on its first call, ``exact``; in the layout the seed alone gets), else the layer computes seed by seed;
weight gradients are always summed seed by seed. And since what is exact depends on the machine (oneDNN's
AVX-512 convolutions sum otherwise than its AVX2 ones), the first training step of a configuration is run
stacked and alone on fresh copies and compared bit for bit before its seeds train together
(``first_step_problem``). A seed trained with others then equals its run alone bit for bit at the same thread
count (tested per method, at each oneDNN instruction-set level). Each is stored as its own run, with
``batched`` in its manifest. Not batched: runs that adapt a pretrained source, a method or layer the stacking
cannot express, a first step that is not exact here, or copies that do not fit in memory together
(``Unbatchable``, raised before anything is stored): the caller runs those seeds one after another. Batched
runs keep no checkpoint: a killed batch starts again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffbench.core.config import RunConfig
from ffbench.core.method import Method
from ffbench.core.registry import METHODS
from ffbench.core.seeds import Streams
from ffbench.data.data import Data
from ffbench.training.train import (
    Record,
    RunResult,
    SavedTensorMeter,
    TrainingPeak,
    build,
    describe,
    lr_factor,
    resolve_device,
    run_data,
    run_epochs,
    run_loader,
)


class Unbatchable(Exception):
    """These seeds cannot train as one stacked model; the message says why."""


# ---------------------------------------------------------------- stacked layers
def _fold(x: torch.Tensor, n: int) -> torch.Tensor:
    """(N*B, C, ...) seed-major rows -> (B, N*C, ...): each seed's channels side by side."""
    b = x.shape[0] // n
    return x.reshape(n, b, *x.shape[1:]).transpose(0, 1).reshape(b, n * x.shape[1], *x.shape[2:])


def _unfold(x: torch.Tensor, n: int) -> torch.Tensor:
    b, c = x.shape[0], x.shape[1] // n
    return x.reshape(b, n, c, *x.shape[2:]).transpose(0, 1).reshape(n * b, c, *x.shape[2:])


def _stack(tensors: list[torch.Tensor], param: bool) -> torch.Tensor:
    t = torch.stack([t.detach() for t in tensors])
    return nn.Parameter(t, requires_grad=tensors[0].requires_grad) if param else t


_EXACT: dict[tuple, bool | tuple[int, ...]] = {}  # (kernel, shapes) -> batched kernel exact (True), exact in
# values but laid out otherwise (the seed-by-seed result's strides), or not exact (False)


def exact(key: tuple, batched: Callable[[], torch.Tensor], alone: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The batched kernel's result where, for these shapes, it equals the seed-by-seed one bit for bit (checked
    on the first call, then remembered), else the seed-by-seed one. Kernels sum in an order that depends on
    the shapes (e.g. 10 output channels): a seed trained with others must compute what it computes alone, or
    chaotic training (FF) turns the last bits into other results. Equal values in another memory layout (a
    grouped convolution's NCHW output where the seed alone gets channels-last) are copied into the seed-by-seed
    layout: the next kernels (a pooling, a convolution's backward) sum in a layout-dependent order too."""
    mode = _EXACT.get(key)
    if mode is None:
        out, ref = batched(), alone()
        _EXACT[key] = mode = (
            (True if out.stride() == ref.stride() else ref.stride()) if torch.equal(out, ref) else False
        )
        return ref
    if mode is False:
        return alone()
    out = batched()
    return out if mode is True else torch.empty_strided(out.shape, mode, dtype=out.dtype, device=out.device).copy_(out)


class _SeedLinear(torch.autograd.Function):
    """Seed i's rows (N, B, in) through seed i's weight (N, out, in) and bias (N, out), as ``F.linear`` and
    its backward compute them for the seed alone: batched products where they give the same bits, the
    weight's and bias's gradients always seed by seed (a batched product sums them in another order)."""

    @staticmethod
    def forward(ctx, rows, weight, bias):
        ctx.save_for_backward(rows, weight)
        ctx.has_bias = bias is not None
        key = ("linear", rows.shape, weight.shape, ctx.has_bias, rows.dtype, rows.device)
        if bias is not None:
            return exact(
                key,
                lambda: torch.baddbmm(bias.unsqueeze(1), rows, weight.transpose(1, 2)),
                lambda: torch.stack([F.linear(r, w, b) for r, w, b in zip(rows, weight, bias)]),
            )
        return exact(
            key,
            lambda: torch.bmm(rows, weight.transpose(1, 2)),
            lambda: torch.stack([F.linear(r, w) for r, w in zip(rows, weight)]),
        )

    @staticmethod
    def backward(ctx, grad):
        rows, weight = ctx.saved_tensors
        grad_rows = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            key = ("linear-input-grad", grad.shape, weight.shape, grad.dtype, grad.device)
            grad_rows = exact(
                key, lambda: torch.bmm(grad, weight), lambda: torch.stack([g.mm(w) for g, w in zip(grad, weight)])
            )
        if ctx.needs_input_grad[1]:
            grad_weight = torch.stack([g.t().mm(r) for g, r in zip(grad, rows)])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = torch.stack([g.sum(0) for g in grad])
        return grad_rows, grad_weight, grad_bias


class SeedLinear(nn.Module):
    def __init__(self, mods: list[nn.Linear]):
        super().__init__()
        self.n, self.in_features, self.out_features = len(mods), mods[0].in_features, mods[0].out_features
        self.weight = _stack([m.weight for m in mods], True)  # (N, out, in)
        self.bias = _stack([m.bias for m in mods], True) if mods[0].bias is not None else None

    def forward(self, x):
        y = _SeedLinear.apply(x.reshape(self.n, -1, self.in_features), self.weight, self.bias)
        return y.reshape(*x.shape[:-1], self.out_features)


class _SeedConv(torch.autograd.Function):
    """Seed i's rows through seed i's filters, as the seed alone computes them: one grouped convolution over
    the seeds' channels side by side (and one for the input's gradient) where that gives the same bits, else
    seed by seed; the filters' and bias's gradients always seed by seed. Seed by seed means on each seed's
    block of rows as it arrives (dim 0), in the memory layout its run alone has (e.g. channels-last after a
    LayerNorm over channels), since kernels sum in a layout-dependent order."""

    @staticmethod
    def forward(ctx, rows, weight, bias, conv):
        n, stride, padding, dilation, groups = conv
        ctx.save_for_backward(rows, weight)
        ctx.conv, ctx.has_bias = conv, bias is not None
        key = ("conv", rows.shape, rows.stride(), weight.shape, conv, ctx.has_bias, rows.dtype, rows.device)
        biases = bias if bias is not None else [None] * n
        return exact(
            key,
            lambda: _unfold(
                F.conv2d(
                    _fold(rows, n),
                    weight.flatten(0, 1),
                    bias.flatten() if bias is not None else None,
                    stride,
                    padding,
                    dilation,
                    groups * n,
                ),
                n,
            ),
            lambda: torch.cat(
                [F.conv2d(r, w, b, stride, padding, dilation, groups) for r, w, b in zip(rows.chunk(n), weight, biases)]
            ),
        )

    @staticmethod
    def backward(ctx, grad):
        rows, weight = ctx.saved_tensors
        n, stride, padding, dilation, groups = ctx.conv
        conv_backward = torch.ops.aten.convolution_backward
        blocks = list(zip(grad.chunk(n), rows.chunk(n), weight))
        grad_rows = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            key = (
                "conv-input-grad",
                grad.shape,
                grad.stride(),
                rows.shape,
                rows.stride(),
                weight.shape,
                ctx.conv,
                grad.dtype,
                grad.device,
            )
            grad_rows = exact(
                key,
                lambda: _unfold(
                    conv_backward(
                        _fold(grad, n),
                        _fold(rows, n),
                        weight.flatten(0, 1),
                        None,
                        stride,
                        padding,
                        dilation,
                        False,
                        [0, 0],
                        groups * n,
                        [True, False, False],
                    )[0],
                    n,
                ),
                lambda: torch.cat(
                    [
                        conv_backward(
                            g, r, w, None, stride, padding, dilation, False, [0, 0], groups, [True, False, False]
                        )[0]
                        for g, r, w in blocks
                    ]
                ),
            )
        want_w, want_b = ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]
        if want_w or want_b:
            out = weight.shape[1]
            parts = [
                conv_backward(
                    g,
                    r,
                    w,
                    [out] if want_b else None,
                    stride,
                    padding,
                    dilation,
                    False,
                    [0, 0],
                    groups,
                    [False, want_w, want_b],
                )
                for g, r, w in blocks
            ]
            grad_w = torch.stack([p[1] for p in parts]) if want_w else None
            grad_b = torch.stack([p[2] for p in parts]) if want_b else None
        return grad_rows, grad_w, grad_b, None


class SeedConv2d(nn.Module):
    def __init__(self, mods: list[nn.Conv2d]):
        super().__init__()
        m = mods[0]
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise Unbatchable(f"Conv2d with padding {m.padding!r} / {m.padding_mode!r}")
        self.n = len(mods)
        self.conv = (self.n, m.stride, m.padding, m.dilation, m.groups)
        self.weight = _stack([c.weight for c in mods], True)  # (N, out, in/g, kh, kw)
        self.bias = _stack([c.bias for c in mods], True) if m.bias is not None else None

    def forward(self, x):
        return _SeedConv.apply(x, self.weight, self.bias, self.conv)


class SeedBatchNorm(nn.Module):
    """BatchNorm1d/2d of N seeds as one over N x C channels: per seed batch statistics and running stats."""

    def __init__(self, mods: list[nn.modules.batchnorm._BatchNorm]):
        super().__init__()
        m = mods[0]
        self.n, self.eps, self.momentum = len(mods), m.eps, m.momentum
        self.affine, self.track_running_stats = m.affine, m.track_running_stats
        if m.affine:
            self.weight, self.bias = _stack([b.weight for b in mods], True), _stack([b.bias for b in mods], True)
        if m.track_running_stats:
            self.register_buffer("running_mean", _stack([b.running_mean for b in mods], False))
            self.register_buffer("running_var", _stack([b.running_var for b in mods], False))
            self.register_buffer("num_batches_tracked", _stack([b.num_batches_tracked for b in mods], False))

    def forward(self, x):
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm
                factor = 1.0 / float(self.num_batches_tracked[0])
        use_batch = self.training or not self.track_running_stats
        stats = (self.running_mean.view(-1), self.running_var.view(-1)) if self.track_running_stats else (None, None)
        w = self.weight.flatten() if self.affine else None
        b = self.bias.flatten() if self.affine else None
        y = F.batch_norm(_fold(x, self.n), *stats, w, b, use_batch, factor, self.eps)
        return _unfold(y, self.n)


class SeedLoop(nn.Module):
    """Any other layer with parameters or buffers (a LayerNorm, a fixed projection): its own code on each
    seed's rows with that seed's tensors (views of the stacked ones, so in-place buffer updates land there),
    exactly as the seed alone runs it."""

    def __init__(self, mods: list[nn.Module]):
        super().__init__()
        self.n = len(mods)
        object.__setattr__(self, "template", mods[0])  # not a child: its tensors are the stacked ones below
        self.param_names = [k for k, _ in mods[0].named_parameters()]
        self.buffer_names = [k for k, _ in mods[0].named_buffers()]
        for i, k in enumerate(self.param_names):
            self.register_parameter(f"p{i}", _stack([dict(m.named_parameters())[k] for m in mods], True))
        for i, k in enumerate(self.buffer_names):
            self.register_buffer(f"b{i}", _stack([dict(m.named_buffers())[k] for m in mods], False))

    def forward(self, *args):
        tensors = {
            **{k: getattr(self, f"p{i}") for i, k in enumerate(self.param_names)},
            **{k: getattr(self, f"b{i}") for i, k in enumerate(self.buffer_names)},
        }
        self.template.train(self.training)
        blocks = list(zip(*(a.chunk(self.n) for a in args)))
        return torch.cat(
            [
                torch.func.functional_call(self.template, {k: v[i] for k, v in tensors.items()}, block)
                for i, block in enumerate(blocks)
            ]
        )


def _stacked(mods: list[nn.Module]) -> nn.Module:
    m = mods[0]
    if type(m) is nn.Linear:
        return SeedLinear(mods)
    if type(m) is nn.Conv2d:
        return SeedConv2d(mods)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return SeedBatchNorm(mods)
    if any(True for _ in m.children()):
        raise Unbatchable(f"{type(m).__name__} holds its own tensors and sub-layers")
    return SeedLoop(mods)


def stack(methods: list[Method]) -> Method:
    """One method training ``len(methods)`` seeds: the first copy, its layers replaced by stacked ones that
    hold every copy's tensors, its optimizers given the stacked parameters, its context the seeds' streams."""
    n, template = len(methods), methods[0]
    if any(type(m) is not type(template) for m in methods):
        raise Unbatchable("the copies are not the same method")
    if any(opt.state for opt in template.ctx.optimizers):
        raise Unbatchable("an optimizer already has state")
    names = {id(mod): name for name, mod in template.named_modules()}
    replaced: dict[int, nn.Module] = {}  # id(old module) -> its stacked module
    params: dict[int, nn.Parameter] = {}  # id(old parameter) -> the stacked parameter holding it
    for name, mod in template.named_modules():
        if isinstance(mod, Method) or any(name.startswith(p + ".") for p in map(names.get, replaced)):
            continue
        if not any(True for _ in mod.parameters(recurse=False)) and not any(True for _ in mod.buffers(recurse=False)):
            continue
        copies = [m.get_submodule(name) for m in methods]
        new = _stacked(copies)
        replaced[id(mod)] = new
        new_params = dict(new.named_parameters())
        for k, p in mod.named_parameters():
            params[id(p)] = _find(new, new_params, k)
    for mod in template.modules():  # every parent, also where a module is shared (a matched local method)
        for child_name, child in list(mod._modules.items()):
            if child is not None and id(child) in replaced:
                mod._modules[child_name] = replaced[id(child)]
    for mod in [m for m in template.modules() if isinstance(m, Method)]:
        copies = [c.get_submodule(_path(template, mod)) for c in methods]
        for k, p in list(mod._parameters.items()):
            if p is not None:
                new = _stack([c._parameters[k] for c in copies], True)
                mod._parameters[k], params[id(p)] = new, new
        for k, b in list(mod._buffers.items()):
            if b is not None:
                mod._buffers[k] = _stack([c._buffers[k] for c in copies], False)
    for opt in template.ctx.optimizers:
        for group in opt.param_groups:
            try:
                group["params"] = [params[id(p)] for p in group["params"]]
            except KeyError:
                raise Unbatchable("an optimizer trains a tensor outside the method's layers") from None
    template.ctx.seeds = n
    template.ctx.generators = [m.ctx.generator for m in methods]
    return template


def _find(new: nn.Module, new_params: dict[str, nn.Parameter], old_name: str) -> nn.Parameter:
    if isinstance(new, SeedLoop):
        return getattr(new, f"p{new.param_names.index(old_name)}")
    return new_params[old_name]


def _path(root: nn.Module, target: nn.Module) -> str:
    return next(name for name, m in root.named_modules() if m is target)


# ---------------------------------------------------------------- the loop
def why_not(configs: list[RunConfig]) -> str | None:
    """Why these runs cannot train as one batch (decided before anything is built), or None."""
    if len(configs) < 2:
        return "one seed"
    base = configs[0].without_seed()
    if any(c.without_seed() != base for c in configs[1:]):
        return "the runs differ in more than their seed"
    if len({c.seed for c in configs}) != len(configs):
        return "a seed appears twice"
    return config_problem(configs[0])


def config_problem(config: RunConfig) -> str | None:
    """Why runs of this configuration cannot train together, whatever their seeds, or None."""
    if config.adapt is not None:
        return "runs that adapt a pretrained source train one at a time"
    if not METHODS.get(config.method).obj.seed_batching:
        return f"{config.method} does not declare seed_batching"
    return None


_VERIFIED: dict[str, str | None] = {}  # a configuration (seed aside) -> why its batched step is not exact here


def first_step_problem(configs: list[RunConfig], datas: list[Data], device: torch.device) -> str | None:
    """Why, on this machine, one training step of these seeds stacked differs from their steps alone, or None.

    Kernels choose their code by the processor and the memory layout (oneDNN's AVX2 and AVX-512 convolutions
    sum in other orders), so exactness is verified where the seeds train, not assumed: the first step
    (forward, backward, optimizer step) runs both ways on fresh copies, and every logged value, parameter,
    buffer and optimizer state is compared bit for bit. The copies are built from the runs' own streams and
    the global random state is restored, so the runs that follow are untouched. A verdict holds for the
    configuration (its shapes and kernels) for the rest of the process."""
    key = json.dumps(configs[0].without_seed(), sort_keys=True, default=str)
    if key in _VERIFIED:
        return _VERIFIED[key]
    n = len(configs)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        methods, batches = [], []
        for c, d in zip(configs, datas):
            streams = Streams(c.seed)
            methods.append(build(c, d, streams, device))
            batches.append(next(iter(run_loader(c, d, streams, device))))
        together = stack(methods)
        stats = _first_step(
            together, configs[0], torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        )
        why = _mixed_loss(stats, n)
        if why:
            _VERIFIED[key] = why
            return why
        for s, (c, d, (x, y)) in enumerate(zip(configs, datas, batches)):
            alone = build(c, d, Streams(c.seed), device)
            why = _first_difference(alone, _first_step(alone, c, x, y), together, stats, s, n)
            if why:
                why = (
                    f"on this machine a stacked training step differs from seed {c.seed}'s step alone in {why} "
                    f"(the kernels chosen here sum in another order)"
                )
                break
    _VERIFIED[key] = why
    return why


def _mixed_loss(stats: dict[str, torch.Tensor], n: int) -> str | None:
    if "loss" in stats and stats["loss"].numel() != n:  # one loss over every seed's rows: their gradients mix
        return "the method's loss is not one value per seed"
    return None


def _first_step(method: Method, config: RunConfig, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The first training step as ``train_epoch`` takes it."""
    method.train()
    method.ctx.set_lr_factor(lr_factor(config.schedule, 0, config.epochs))
    method.start_epoch(0)
    return method.train_step(x, y)


def _first_difference(
    alone: Method,
    stats_alone: dict[str, torch.Tensor],
    together: Method,
    stats_together: dict[str, torch.Tensor],
    s: int,
    n: int,
) -> str | None:
    """Where seed ``s`` of ``together`` differs from ``alone`` after the same step: a logged value, a tensor
    of the state (parameters and buffers, matched in order: the stacking keeps it), or optimizer state."""
    if stats_alone.keys() != stats_together.keys():
        return "the logged values' names"
    for k, v in stats_alone.items():
        if not _same(v, stats_together[k].reshape(-1).expand(n)[s].reshape(v.shape)):
            return f"the logged value {k!r}"
    mine, ours = alone.state_dict(), list(together.state_dict().values())
    if len(mine) != len(ours):
        return "the number of state tensors"
    for (name, a), b in zip(mine.items(), ours):
        if b.shape != (n, *a.shape) or not _same(a, b[s]):
            return f"{name!r}"
    for i, (opt_a, opt_b) in enumerate(zip(alone.ctx.optimizers, together.ctx.optimizers, strict=True)):
        for j, (state_a, state_b) in enumerate(
            zip(opt_a.state_dict()["state"].values(), opt_b.state_dict()["state"].values(), strict=True)
        ):
            for k, a in state_a.items():
                b = state_b[k]
                if isinstance(a, torch.Tensor) and a.dim() and not _same(a, b[s]):
                    return f"optimizer {i}'s state {k!r} of its parameter {j}"
    return None


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit as values (NaN equal to NaN), shapes and dtypes included."""
    return a.shape == b.shape and a.dtype == b.dtype and bool(((a == b) | (a != a) & (b != b)).all())


def fit_seeds(
    configs: list[RunConfig],
    device: torch.device | str = "auto",
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[RunResult]:
    """Train and evaluate runs that differ only in their seed as one stacked model; one result per seed, in
    ``configs``' order. ``on_epoch(i, row)`` gets seed i's rows. Raises ``Unbatchable`` before training when
    the stacking cannot express them (the caller then runs them alone)."""
    why = why_not(configs)
    if why:
        raise Unbatchable(why)
    device = resolve_device(device) if isinstance(device, str) else device
    n = len(configs)
    streams = [Streams(c.seed) for c in configs]
    datas: list[Data] = [run_data(c, s, device) for c, s in zip(configs, streams)]
    for split in ("train", "val", "test"):
        if len({len(getattr(d, split)) for d in datas}) > 1:
            raise Unbatchable(f"the seeds' {split} splits differ in size")
    if len({d.num_classes for d in datas}) > 1:
        raise Unbatchable("the seeds keep different numbers of classes")
    why = first_step_problem(configs, datas, device)
    if why:
        raise Unbatchable(why)
    copies = [build(c, d, s, device) for c, d, s in zip(configs, datas, streams)]
    results = [
        RunResult(
            status="done", manifest={"batched": {"seeds": [c.seed for c in configs]}}, compute=describe(m, d, device)
        )
        for m, d in zip(copies, datas)
    ]
    method = stack(copies)
    loaders = [run_loader(c, d, s, device) for c, d, s in zip(configs, datas, streams)]
    records = [Record(c, r) for c, r in zip(configs, results)]
    meter = SavedTensorMeter(list(method.parameters()))
    memory = TrainingPeak.for_cuda(device) if device.type == "cuda" else None

    def first_losses(stats: dict[str, torch.Tensor]) -> None:
        if "loss" not in stats:
            return
        why = _mixed_loss(stats, n)
        if why:
            raise Unbatchable(why)
        for s in range(n):
            records[s].initial_loss = float(stats["loss"].reshape(n)[s])

    try:
        run_epochs(method, datas, loaders, records, meter, memory, device, first_losses, on_epoch=on_epoch)
    except torch.OutOfMemoryError as exc:  # nothing is stored yet: the seeds train alone instead
        raise Unbatchable(f"{n} stacked copies do not fit in memory ({str(exc).splitlines()[0][:200]})") from None
    return results
