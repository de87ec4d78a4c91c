"""Heads and goodness: what turns a unit's features into class scores, shared by the built-in methods.

``make_head`` builds the plain heads by name (``linear``, ``goodness``); ``linear`` applies a weight that seeds
trained together may hold stacked (a method that reads a layer's weight itself)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def class_goodness(a: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) or (B, K) -> (B, K): mean over positions of each class channel squared."""
    return a.pow(2).flatten(2).mean(2) if a.dim() > 2 else a.pow(2)


def grouped_goodness(h: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, K): mean square over each of K consecutive channel groups (C divisible by K)."""
    b, c = h.shape[:2]
    if c % num_classes:
        raise ValueError(f"{c} channels cannot be split into {num_classes} class groups")
    return h.reshape(b, num_classes, -1).pow(2).mean(2)


class GroupedGoodnessHead(nn.Module):
    """CwC's class scores: the mean square of each of the channel groups of a unit's output (no parameters).

    ``groups`` (default K) may be a divisor of K: class-group layers (CwC's CIFAR-100 model, 20 groups of 5
    consecutive classes) score group y // (K / groups); each group's goodness is repeated over its classes so
    the scores stay (B, K), and ``group_view`` recovers (group scores, group targets) for the loss."""

    def __init__(self, num_classes: int, groups: int | None = None):
        super().__init__()
        self.num_classes, self.groups = num_classes, groups or num_classes
        if self.num_classes % self.groups:
            raise ValueError(f"{self.groups} class groups do not divide {num_classes} classes")
        self.ratio = self.num_classes // self.groups

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        g = grouped_goodness(h, self.groups)
        return g.repeat_interleave(self.ratio, 1) if self.ratio > 1 else g

    def group_view(self, scores: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (scores[:, :: self.ratio], y // self.ratio) if self.ratio > 1 else (scores, y)


class LinearHead(nn.Module):
    """Class logits from a unit's output: global average pooling (conv) or flatten, then a linear layer (with a
    bias unless ``bias`` is False)."""

    def __init__(self, shape: tuple[int, ...], num_classes: int, pool: str | None = "avg", bias: bool = True):
        super().__init__()
        self.pool = (pool or "avg") if len(shape) == 3 else "flatten"
        width = shape[0] if self.pool == "avg" else int(torch.tensor(shape).prod())
        self.fc = nn.Linear(width, num_classes, bias=bias)

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
POOLS = ("avg", "flatten")


def make_head(
    kind: str, shape: tuple[int, ...], num_classes: int, kernel: int = 1, pool: str | None = None
) -> nn.Module:
    if kind == "linear":
        return LinearHead(shape, num_classes, pool)
    if kind == "goodness":
        return GoodnessHead(shape, num_classes, kernel)
    raise ValueError(f"unknown head {kind!r}; allowed: {', '.join(HEADS)}")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` for a method that reads a layer's weight itself; a stacked weight (seeds, out, in)
    applies seed i's matrix to seed i's block of rows."""
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    n = weight.shape[0]
    y = torch.bmm(x.reshape(n, -1, x.shape[-1]), weight.transpose(1, 2))
    if bias is not None:
        y = y + bias.unsqueeze(1)
    return y.reshape(*x.shape[:-1], weight.shape[1])


def accuracy_of(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (scores.argmax(1) == y).float().mean()


def layer_norm_detached(h: torch.Tensor) -> torch.Tensor:
    """Per-sample layer normalisation over all non-batch dims, cut from the graph (unit hand-off)."""
    return F.layer_norm(h.detach(), h.shape[1:])
