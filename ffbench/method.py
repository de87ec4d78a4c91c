"""The method contract, and the parts local methods share (heads, goodness, step-and-free).

The harness owns data, seeds, evaluation, timing and logging. A method owns only:
  * ``__init__``: how it builds its trainable parts around a backbone, with optimizers from ``ctx``;
  * ``train_step(x, y)``: one mini-batch, returning scalar tensors to log (``loss`` at least);
  * ``predict(x)``: its inference rules, ``{rule name: class scores}``, the default rule first;
  * ``unit_scores(x)``: per-unit class scores for diagnostics (empty if it has none).
It never sees the validation or test labels, the clock or the tracker.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffbench.backbones import Backbone
from ffbench.registry import Card


@dataclass
class Context:
    """What the harness hands a method: the device, its random stream, and the optimizer factory."""

    device: torch.device
    generator: torch.Generator  # the run's `method` stream (negatives, sampling), on the device
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    epochs: int = 1
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)

    def make_optimizer(self, params: Iterable[nn.Parameter], **overrides: Any) -> torch.optim.Optimizer:
        """The run's optimizer over ``params``; ``overrides`` (lr, weight_decay, momentum, optimizer) are
        for parts the method's paper trains differently (e.g. a softmax read-out). The harness applies the
        learning-rate schedule to every optimizer made here."""
        kind = overrides.pop("optimizer", self.optimizer)
        lr = overrides.pop("lr", self.lr)
        wd = overrides.pop("weight_decay", self.weight_decay)
        momentum = overrides.pop("momentum", self.momentum)
        params = [p for p in params if p.requires_grad]
        if kind == "sgd":
            opt = torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=momentum, **overrides)
        elif kind == "adam":
            opt = torch.optim.Adam(params, lr=lr, weight_decay=wd, **overrides)
        elif kind == "adamw":
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd, **overrides)
        else:
            raise ValueError(f"unknown optimizer {kind!r}; allowed: sgd, adam, adamw")
        for group in opt.param_groups:
            group["base_lr"] = group["lr"]
        self.optimizers.append(opt)
        return opt

    def set_lr_factor(self, factor: float) -> None:
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * factor


class Method(nn.Module, ABC):
    """Base class of every method plugin. Subclasses are registered with ``METHODS.register``.

    ``card`` is set by the registry decorator below; ``options`` holds the card's defaults updated with
    the suite's values, already validated against ``card.options``.
    """

    card: ClassVar[Card]

    def __init__(self, backbone: Backbone, num_classes: int, options: dict[str, Any], ctx: Context):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.options = options
        self.ctx = ctx

    def start_epoch(self, epoch: int) -> None:
        """Called before each training epoch (0-based): layer schedules such as CwC's ILT windows."""

    @abstractmethod
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Train on one batch. Return detached scalar tensors; ``loss`` is checked for NaN/inf."""

    @abstractmethod
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Class scores (B, K) per inference rule; the first rule is the method's default."""

    def unit_scores(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Class scores (B, K) of each unit, for per-unit accuracy. Default: none."""
        return []

    def evaluate(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        """Both of the above; override when one forward pass can give both."""
        return self.predict(x), self.unit_scores(x)


def method_card(**fields: Any) -> Callable[[type[Method]], type[Method]]:
    """Register a Method subclass under ``fields['name']`` with its card (``Card`` fields)."""
    from ffbench.registry import METHODS

    def wrap(cls: type[Method]) -> type[Method]:
        card = Card(**fields)
        cls.card = card
        METHODS.add(card, cls)
        return cls

    return wrap


def variant(base: type[Method], **fields: Any) -> type[Method]:
    """Register ``base`` again under another name with other defaults (a ``family.variant`` builder)."""
    cls = type(base.__name__ + "_" + fields["name"].replace(".", "_"), (base,), {"__module__": base.__module__})
    return method_card(**fields)(cls)


# ---------------------------------------------------------------- heads and goodness
def class_goodness(a: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) or (B, K) -> (B, K): mean over positions of each class channel squared."""
    return a.pow(2).flatten(2).mean(2) if a.dim() > 2 else a.pow(2)


def grouped_goodness(h: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, K): mean square over each of K consecutive channel groups (C divisible by K)."""
    b, c = h.shape[:2]
    if c % num_classes:
        raise ValueError(f"{c} channels cannot be split into {num_classes} class groups")
    return h.reshape(b, num_classes, -1).pow(2).mean(2)


class LinearHead(nn.Module):
    """Class logits from a unit's output: global average pooling (conv) or flatten, then a linear layer."""

    def __init__(self, shape: tuple[int, ...], num_classes: int, pool: str = "avg"):
        super().__init__()
        self.pool = pool if len(shape) == 3 else "flatten"
        width = shape[0] if self.pool == "avg" else int(torch.tensor(shape).prod())
        self.fc = nn.Linear(width, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h.mean((2, 3)) if self.pool == "avg" else h.flatten(1)
        return self.fc(h)


class GoodnessHead(nn.Module):
    """SFF-style head: a k x k convolution with one output channel per class; scores = class goodness."""

    def __init__(self, shape: tuple[int, ...], num_classes: int, kernel: int = 1):
        super().__init__()
        if len(shape) == 3:
            self.proj: nn.Module = nn.Conv2d(shape[0], num_classes, kernel, padding=kernel // 2)
        else:
            self.proj = nn.Linear(shape[0], num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return class_goodness(self.proj(h))


HEADS = ("linear", "goodness")


def make_head(kind: str, shape: tuple[int, ...], num_classes: int, kernel: int = 1) -> nn.Module:
    if kind == "linear":
        return LinearHead(shape, num_classes)
    if kind == "goodness":
        return GoodnessHead(shape, num_classes, kernel)
    raise ValueError(f"unknown head {kind!r}; allowed: {', '.join(HEADS)}")


def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """Backward and update; the graph behind ``loss`` is freed here (step-and-free)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def accuracy_of(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (scores.argmax(1) == y).float().mean()


def layer_norm_detached(h: torch.Tensor) -> torch.Tensor:
    """Per-sample layer normalisation over all non-batch dims, cut from the graph (unit hand-off)."""
    return F.layer_norm(h.detach(), h.shape[1:])
