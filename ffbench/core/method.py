"""The method contract, and the parts local methods share (heads, goodness, the unit loop).

The harness owns data, seeds, evaluation, timing and logging. A method owns only:
  * ``__init__``: how it builds its trainable parts around a backbone, with optimizers from ``ctx``;
  * ``train_step(x, y)``: one mini-batch, returning tensors to log (``loss`` at least): scalars, or one
    value per seed when seeds train together (below);
  * ``evaluate(x)``: ``({rule: class scores}, [class scores per unit])``, the one inference hook; the
    harness puts the card's default rule first;
  * optionally ``start_epoch(epoch)`` (layer schedules) and the class method ``skip(config)`` (why a
    configuration cannot run, decided before anything trains).
It never sees the validation or test labels, the clock or the tracker.

``LocalMethod`` owns the unit loop of every method trained unit by unit (one optimizer per unit,
forward -> head -> loss -> backward -> step -> hand-off, one unit's graph alive at a time; or, with
``joint_step``, one optimizer and one step of the summed losses per batch); a local method supplies its
head per unit, its unit loss, its hand-off and its inference rules.

Seeds trained together (``ffbench.training.batched``): the harness stacks ``ctx.seeds`` copies of a method, each
built from its own seed, into one model whose layers hold a leading seed dimension, and folds their
mini-batches into one (seed 0's rows, then seed 1's, ...). Code that is row-wise needs nothing; what
reduces over rows or draws random numbers goes through ``ctx.per_seed`` (a loss or statistic: one value
per seed, each computed on that seed's rows alone) and ``ctx.per_seed_rows`` (draws from each seed's own
stream), and ``step`` back-propagates the sum of the seeds' losses, so every seed gets the gradient it
would get alone. With one seed both helpers are exactly the plain call.
"""

from __future__ import annotations

import dataclasses
import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffbench.core.registry import Card

if TYPE_CHECKING:  # the contract names the backbone's type; the backbones sit a layer above
    from ffbench.training.backbones import Backbone


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
    seeds: int = 1  # seeds trained together in one stacked model (ffbench.training.batched); 1: the run alone
    generators: list[torch.Generator] = field(default_factory=list)  # each seed's `method` stream

    def __post_init__(self):
        if not self.generators:
            self.generators = [self.generator]

    def per_seed(self, fn: Callable[..., torch.Tensor], *rows: torch.Tensor, **kw: Any) -> torch.Tensor:
        """``fn`` reduces over the batch's rows (a mean loss, an accuracy): its value for each seed, computed
        on that seed's block of rows alone, shape (seeds,), so each value and its gradient are the ones the
        seed would get alone. With one seed, ``fn(*rows, **kw)`` itself."""
        if self.seeds == 1:
            return fn(*rows, **kw)
        return torch.stack([fn(*block, **kw) for block in self._blocks(rows)])

    def per_seed_rows(self, fn: Callable[..., torch.Tensor], *rows: torch.Tensor | None) -> torch.Tensor:
        """Row-wise random draws: ``fn(generator, *rows)`` on each seed's rows with that seed's stream,
        concatenated (rows may include None). With one seed, ``fn(self.generator, *rows)``."""
        if self.seeds == 1:
            return fn(self.generator, *rows)
        return torch.cat([fn(g, *block) for g, block in zip(self.generators, self._blocks(rows))])

    def _blocks(self, rows) -> list[tuple]:
        split = [r.chunk(self.seeds) if r is not None else [None] * self.seeds for r in rows]
        return list(zip(*split))

    def make_optimizer(
        self, params: Iterable[nn.Parameter] | Iterable[dict[str, Any]], **overrides: Any
    ) -> torch.optim.Optimizer:
        """The run's optimizer over ``params``: parameters, or parameter groups (dicts of ``params`` and
        the group's own lr, weight_decay or momentum); ``overrides`` (lr, weight_decay, momentum,
        optimizer) are for parts the method's paper trains differently (e.g. a softmax read-out). The
        harness applies the learning-rate schedule to every group of every optimizer made here."""
        kind = overrides.pop("optimizer", self.optimizer)
        lr = overrides.pop("lr", self.lr)
        wd = overrides.pop("weight_decay", self.weight_decay)
        momentum = overrides.pop("momentum", self.momentum)
        params = list(params)
        if params and isinstance(params[0], dict):
            params = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in params]
        else:
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
    """Base class of every method plugin, registered with ``@method_card``.

    ``card`` is set by the decorator; ``options`` holds the card's defaults updated with the suite's
    values, validated against ``card.options`` before the method is built (a method never re-checks them).
    """

    card: ClassVar[Card]

    def __init__(self, backbone: Backbone, num_classes: int, options: dict[str, Any], ctx: Context):
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.options = options
        self.ctx = ctx

    @classmethod
    def skip(cls, config: Any) -> str | None:
        """Why a resolved configuration (a ``RunConfig``) cannot run, or None; the design drops the cell
        with this reason before anything trains."""
        return None

    @property
    def default_rule(self) -> str:
        """The rule reported as the run's accuracy: the card's ``rule_option`` value, else its first rule."""
        card = self.card
        return (
            self.report_rule or (self.options.get(card.rule_option) if card.rule_option else None) or card.rules[0]
        )  # unset: first

    max_eval_batch: int | None = None  # a cap on the harness's evaluation batch (e.g. one row per label)
    report_rule: str | None = None  # set by adapt(): the rule a mode reports instead of the card's default

    # ------------------------------------------------------------ transfer (a suite's [transfer] source)
    adapt_modes: ClassVar[tuple[str, ...]] = ("linear-probe", "last-k-units", "fine-tune")
    probe_rule: ClassVar[str | None] = None  # the rule of the final read-out, reported under linear-probe

    def fixed_in(self, mode: str, k: int) -> list[nn.Module]:
        """What adaptation ``mode`` keeps as the source trained it: linear-probe the backbone (the method's own
        parts, fresh, train on it), last-k-units all but the last k units, fine-tune nothing."""
        units = list(self.backbone.units)
        if mode == "fine-tune":
            return []
        if mode == "last-k-units":
            return units[: max(0, len(units) - k)]
        return [self.backbone]

    def adapt(self, mode: str, k: int) -> None:
        """Enter adaptation ``mode`` after the source weights are loaded: ``fixed_in`` stops training (no
        gradient, BatchNorm statistics held) and linear-probe reports ``probe_rule``."""
        for module in self.fixed_in(mode, k):
            freeze(module)
        if mode == "linear-probe" and self.probe_rule:
            self.report_rule = self.probe_rule

    def start_epoch(self, epoch: int) -> None:
        """Called before each training epoch (0-based): layer schedules such as CwC's ILT windows."""

    @abstractmethod
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Train on one batch. Return detached scalar tensors; ``loss`` is checked for NaN/inf."""

    @abstractmethod
    def evaluate(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        """Class scores (B, K) per inference rule, and per unit (empty if it has none)."""


class LocalMethod(Method):
    """A method trained unit by unit, step-and-free (unless ``joint_step``): no gradient crosses a unit boundary.

    Per batch, for each unit k the harness-owned loop runs ``forward_unit`` (unit -> head: class scores
    and the hand-off), ``unit_loss``, backward and the unit's optimizer step (its graph is freed before
    unit k+1 runs), then ``train_readouts`` trains any read-out on the detached per-unit features.
    A subclass supplies ``make_head``, ``unit_loss``, ``rules`` and where it differs ``pass_on`` (the
    hand-off's transformation, which an architecture-matched BP baseline runs inside its graph; ``hand_off``
    applies it to the detached output without a graph), ``unit_outputs``, ``unit_params``, ``windows`` (a
    layer schedule) and ``train_readouts``.

    With ``joint_step`` the units' losses and the read-outs' (``train_readouts`` then returns them with
    their graphs and does not step) are summed and stepped once per batch by one optimizer, ``self.opt``,
    which the subclass makes with ``make_joint_optimizer`` once its read-outs exist. Each unit's input is
    still detached, so each unit's gradient is its own loss's; every graph is alive until the step. A unit
    that does not train (outside its window, or frozen) runs without a graph and gets no gradient, so the
    optimizer leaves it as it is.
    """

    joint_step: ClassVar[bool] = False  # one optimizer step of the summed losses per batch (above)

    def __init__(self, backbone: Backbone, num_classes: int, options: dict[str, Any], ctx: Context):
        super().__init__(backbone, num_classes, options, ctx)
        self.heads = nn.ModuleList(self.make_head(k, shape) for k, shape in enumerate(self.head_shapes()))
        if not self.joint_step:
            self.opts = [ctx.make_optimizer(self.unit_params(k)) for k in range(len(backbone.units))]
        self.windows = [(0, ctx.epochs)] * len(backbone.units)  # the epochs [start, end) each unit trains in
        self.active = [True] * len(backbone.units)  # which units train this epoch (frozen ones run without grad)

    # ------------------------------------------------------------ what a local method supplies
    def head_shapes(self) -> list[tuple[int, ...]]:
        """The shape each head reads (default: the units' output shapes)."""
        return list(self.backbone.out_shapes)

    def make_head(self, k: int, shape: tuple[int, ...]) -> nn.Module:
        """Unit k's head: the unit's features -> class scores (B, K)."""
        raise NotImplementedError

    def unit_params(self, k: int) -> list[nn.Parameter]:
        """What unit k's optimizer trains (default: the unit and its head)."""
        return [*self.backbone.units[k].parameters(), *self.heads[k].parameters()]

    def make_joint_optimizer(self, *readouts: dict[str, Any]) -> None:
        """Under ``joint_step``: ``self.opt``, one parameter group of every unit's parameters (the run's
        settings), then ``readouts`` (parameter groups with their own settings, ``Context.make_optimizer``)."""
        units = [p for k in range(len(self.backbone.units)) for p in self.unit_params(k)]
        self.opt = self.ctx.make_optimizer([{"params": units}, *readouts])

    def unit_outputs(self, k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what the head reads, what is handed on) for unit k on its input; both the unit output by default."""
        h = self.backbone.units[k](x)
        return h, h

    def pass_on(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """What unit k hands on (e.g. a LayerNorm), inside the graph: the forward pass between units that an
        architecture-matched BP baseline back-propagates through (default: unchanged)."""
        return h

    def hand_off(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """Unit k's output -> unit k+1's input, cut from the graph: ``pass_on`` on the detached output,
        computed without recording a graph no loss reaches."""
        with torch.no_grad():
            return self.pass_on(k, h.detach())

    @abstractmethod
    def unit_loss(self, k: int, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Unit k's loss on its class scores: a mean over the rows (with seeds trained together the loop
        calls it on each seed's rows, ``unit_losses``)."""

    def unit_losses(self, k: int, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Unit k's loss, one per seed (a scalar for one seed): ``unit_loss`` on each seed's rows."""
        return self.ctx.per_seed(lambda s, t: self.unit_loss(k, s, t), scores, y)

    def train_readouts(self, features: list[torch.Tensor], y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Train read-outs on the detached per-unit features (head inputs); return their losses (under
        ``joint_step`` with their graphs: the loop steps them)."""
        return {}

    @abstractmethod
    def rules(self, scores: list[torch.Tensor], features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inference rules from the per-unit class scores (and head inputs)."""

    # ------------------------------------------------------------ the loop the base owns
    def forward_unit(self, k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unit k on its (detached) input: (class scores, head input, hand-off to unit k+1)."""
        feat, out = self.unit_outputs(k, x)
        return self.heads[k](feat), feat, self.hand_off(k, out)

    def start_epoch(self, epoch: int) -> None:
        """A layer schedule: unit k trains in the epochs of ``windows[k]``."""
        self.active = [s <= epoch < e for s, e in self.windows]

    readouts_read_all: ClassVar[bool] = False  # train_readouts reads every unit's features (run them all)

    def units_to_run(self) -> int:
        """How many units a training step runs: up to the last one that trains (all with readouts_read_all)."""
        if self.readouts_read_all:
            return len(self.active)
        return 1 + max((k for k, on in enumerate(self.active) if on), default=-1)

    adapt_modes: ClassVar[tuple[str, ...]] = ("linear-probe", "local-heads-only", "last-k-units", "fine-tune")

    def fixed_in(self, mode: str, k: int) -> list[nn.Module]:
        """linear-probe: the backbone and every head but the last (the final head and the read-outs train);
        local-heads-only: the backbone (every head trains); otherwise as ``Method``."""
        if mode == "linear-probe":
            return [self.backbone, *self.heads[:-1]]
        return super().fixed_in(mode, k)

    def adapt(self, mode: str, k: int) -> None:
        """A unit with nothing left to train leaves the layer schedule (it runs without a graph)."""
        super().adapt(mode, k)
        for u in range(len(self.windows)):
            if not any(p.requires_grad for p in self.unit_params(u)):
                self.windows[u] = (0, 0)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        stats: dict[str, torch.Tensor] = {}
        # every unit's head input stays alive until the read-outs only when there are read-outs to train
        keep = type(self).train_readouts is not LocalMethod.train_readouts
        features = []
        for k in range(self.units_to_run()):
            if not self.active[k]:
                with torch.no_grad():
                    _, feat, x = self.forward_unit(k, x)
                features.append(feat if keep else None)
                continue
            scores, feat, x = self.forward_unit(k, x)
            loss = self.unit_losses(k, scores, y)
            if not self.joint_step:
                step(self.opts[k], loss)  # unit k's graph is freed before unit k+1 runs
                loss = loss.detach()
            features.append(feat.detach() if keep else None)
            stats[f"loss.unit{k + 1}"] = loss
        stats.update(self.train_readouts(features, y))
        parts = list(stats.values())
        total = parts[0] if parts else torch.zeros(() if self.ctx.seeds == 1 else self.ctx.seeds, device=y.device)
        for part in parts[1:]:
            total = total + part
        if self.joint_step:  # the logged total is the stepped sum
            if total.requires_grad:
                step(self.opt, total)
            total, stats = total.detach(), {k: v.detach() for k, v in stats.items()}
        return {"loss": total, **stats}

    def evaluate(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        scores, features = [], []
        for k in range(len(self.backbone.units)):
            s, feat, x = self.forward_unit(k, x)
            scores.append(s)
            features.append(feat)
        return self.rules(scores, features), scores


# What a method card's capabilities mean. Placement (where it runs; one is required): the design drops
# a (method, backbone) pair the placement rules out, with the reason. Description: shown on the card.
PLACEMENT = {
    "any-backbone": "runs on every backbone",
    "conv": "needs a backbone with convolutional units (cnn, cnn.cfse, resnet18, mobilenetv3, vgg.asge)",
    "flat": "needs a fully connected backbone (mlp)",
    "cfse": "needs class-grouped convolutions (cnn.cfse)",
    "torchvision": "needs a torchvision model (resnet18, mobilenetv3)",
    "backbones:A|B": "runs on the named backbones only",
}
DESCRIPTION = {
    "unit-heads": "a head on every unit (per-unit accuracy)",
    "unit-scores": "per-unit class scores without heads (per-unit accuracy)",
    "step-and-free": "each unit steps and frees its graph before the next runs",
    "negatives": "trains on negative data",
    "label-in-input": "writes the label into the input",
    "fixed-projection": "uses a fixed random projection (never trained)",
}


def check_capabilities(name: str, caps: frozenset[str]) -> None:
    """A card's capabilities are known words, and say where the method runs (see PLACEMENT)."""
    known = set(PLACEMENT) - {"backbones:A|B"} | set(DESCRIPTION)
    unknown = sorted(c for c in caps if c not in known and not c.startswith(("backbones:", "needs-")))
    if unknown:
        raise TypeError(
            f"method {name}: unknown capabilities {unknown}; allowed: {', '.join(sorted(known))}, "
            f"backbones:A|B, needs-conv, needs-flat"
        )
    if not any(c in PLACEMENT or c.startswith(("backbones:", "needs-")) for c in caps):
        raise TypeError(
            f"method {name}: its capabilities must say where it runs: 'any-backbone', a backbone "
            f"capability ({', '.join(k for k in PLACEMENT if k not in ('any-backbone', 'backbones:A|B'))})"
            f" or 'backbones:A|B'"
        )


def method_card(**fields: Any) -> Callable[[type[Method]], type[Method]]:
    """Register a Method subclass under ``fields['name']`` with its card (``Card`` fields)."""
    from ffbench.core.registry import METHODS

    def wrap(cls: type[Method]) -> type[Method]:
        card = Card(**fields)
        check_capabilities(card.name, card.capabilities)
        cls.card = card
        METHODS.add(card, cls)
        return cls

    return wrap


def variant(base: type[Method], **fields: Any) -> type[Method]:
    """Register ``base`` again under another name (a ``family.variant`` builder): the card's fields are
    inherited, ``fields`` replace them, and ``defaults`` overrides the base's defaults key by key."""
    card = base.card
    inherited = {f.name: getattr(card, f.name) for f in dataclasses.fields(Card)}
    recipe = {k: v for k, v in card.defaults.items() if k not in card.options}
    fields = {**inherited, **fields, "defaults": {**recipe, **fields.get("defaults", {})}}
    cls = type(base.__name__ + "_" + fields["name"].replace(".", "_"), (base,), {"__module__": base.__module__})
    return method_card(**fields)(cls)


# ---------------------------------------------------------------- heads and goodness
def freeze(module: nn.Module) -> None:
    """No parameter of ``module`` trains, and its BatchNorm layers keep their running statistics (eval mode,
    whatever ``train()`` the method calls later)."""
    for p in module.parameters():
        p.requires_grad_(False)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train = types.MethodType(lambda self, mode=True: nn.Module.train(self, False), m)
            m.eval()


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
    """Class logits from a unit's output: global average pooling (conv) or flatten, then a linear layer."""

    def __init__(self, shape: tuple[int, ...], num_classes: int, pool: str | None = "avg"):
        super().__init__()
        self.pool = (pool or "avg") if len(shape) == 3 else "flatten"
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
POOLS = ("avg", "flatten")


def make_head(
    kind: str, shape: tuple[int, ...], num_classes: int, kernel: int = 1, pool: str | None = None
) -> nn.Module:
    if kind == "linear":
        return LinearHead(shape, num_classes, pool)
    if kind == "goodness":
        return GoodnessHead(shape, num_classes, kernel)
    raise ValueError(f"unknown head {kind!r}; allowed: {', '.join(HEADS)}")


def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """Backward and update; the graph behind ``loss`` is freed here (step-and-free). A loss per seed
    (seeds trained together) back-propagates its sum: each seed's parameters get their own loss's gradient."""
    optimizer.zero_grad(set_to_none=True)
    (loss if loss.dim() == 0 else loss.sum()).backward()
    optimizer.step()


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
