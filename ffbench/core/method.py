"""The method contract: what a method writes, and the unit loop the harness runs for it.

A **local method** (``LocalMethod``) trains a backbone unit by unit. It writes:

* ``make_head(k, shape)``: unit k's head, features -> class scores (None: the unit has no loss);
* ``unit_loss(k, scores, y, h)``: unit k's loss on the rows it is given, reduced over them (a mean), from
  its class scores, the labels and the features the head read; or a dict with that ``loss`` and other values
  to log (``<name>.unit<k>``);
* ``rules(scores, features)``: the inference rules, class scores per rule;
* where it differs from the default: ``pass_on(k, h)`` (the hand-off), ``unit_outputs(k, x)`` (what the head
  reads and what is handed on), ``readouts(features)`` (read-outs trained on the detached features, with the
  optimizer ``readout_opt``), ``windows`` (a layer schedule), ``update`` (below) and ``grad_window``
  (overlapping local updates: a unit's loss reaches back over the units before it, ``LocalMethod``);
* and on its card (``@method_card``), its options (``Option``), rules and capabilities; ``skip(config)``
  says why a configuration cannot run, before anything trains.

The harness owns the rest: the optimizers per unit, the step-and-free loop (forward -> head -> loss ->
backward -> step, one unit's graph alive at a time), detaching between units, device placement, seeds
trained together (each seed's loss computed on its own rows, the method's buffers its own), checkpoints and
timing. ``update`` chooses how the loop steps: ``local`` (each unit its own optimizer, step-and-free),
``joint`` (inputs still detached, every loss summed and stepped once by ``self.opt``), or ``end-to-end``
(nothing detached: backpropagation, the baselines).

A **whole-network method** (``Method``) writes ``train_step(x, y)`` (one mini-batch, returning the values to
log, ``loss`` at least) and ``evaluate(x)`` (``({rule: class scores}, [class scores per unit])``) itself, with
optimizers from ``ctx.make_optimizer``. The harness trains its seeds one at a time unless the class sets
``seed_batching = True`` (it then reduces its losses with ``ctx.per_seed``).

Random draws (negatives, sampling) come from ``ctx.draw(fn, *rows)``: ``fn(generator, *rows)`` with the run's
stream, so that seeds trained together each draw from their own. A method never sees the validation or test
labels, the clock or the tracker.
"""

from __future__ import annotations

import dataclasses
import inspect
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

UPDATES = ("local", "joint", "end-to-end")


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

    def draw(self, fn: Callable[..., torch.Tensor], *rows: torch.Tensor | None) -> torch.Tensor:
        """Row-wise random draws: ``fn(generator, *rows)`` with the run's stream (rows may include None).
        Seeds trained together each draw on their own rows from their own stream."""
        if self.seeds == 1:
            return fn(self.generator, *rows)
        return torch.cat([fn(g, *block) for g, block in zip(self.generators, seed_blocks(rows, self.seeds))])

    def per_seed(self, fn: Callable[..., torch.Tensor], *rows: torch.Tensor, **kw: Any) -> torch.Tensor:
        """For a whole-network method that sets ``seed_batching``: ``fn`` reduced over each seed's rows alone,
        shape (seeds,); with one seed ``fn(*rows, **kw)`` itself. A local method never needs it."""
        if self.seeds == 1:
            return fn(*rows, **kw)
        return torch.stack([fn(*block, **kw) for block in seed_blocks(rows, self.seeds)])

    per_seed_rows = draw  # the 0.1 name

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


def seed_blocks(rows: Iterable[torch.Tensor | None], seeds: int) -> list[tuple]:
    """Each seed's block of every tensor of ``rows`` (seed-major rows; None stays None)."""
    split = [r.chunk(seeds) if r is not None else [None] * seeds for r in rows]
    return list(zip(*split))


def greedy_windows(units: int, epochs: int) -> list[tuple[int, int]]:
    """A greedy layer schedule (``LocalMethod.windows``): unit k trains alone in epochs [k*E/U, (k+1)*E/U)."""
    return [(k * epochs // units, (k + 1) * epochs // units) for k in range(units)]


def reduce_per_seed(method: nn.Module, fn: Callable[..., Any], *rows: torch.Tensor | None) -> Any:
    """``fn`` on each seed's rows alone, its results stacked per seed (a tensor, or a dict of tensors); with
    one seed ``fn(*rows)`` itself. While seed i's block runs, the method's own buffers (stacked by
    ``ffbench.training.batched``) are seed i's, so a running statistic updated in place lands in its row."""
    seeds = method.ctx.seeds
    if seeds == 1:
        return fn(*rows)
    owners = method.__dict__.get("_seed_owners")
    if owners is None:  # the Method modules whose own buffers are stacked (found once)
        owners = method.__dict__["_seed_owners"] = [m for m in method.modules() if isinstance(m, Method) and m._buffers]
    stacked = [(m, dict(m._buffers)) for m in owners]
    out = []
    try:
        for i, block in enumerate(seed_blocks(rows, seeds)):
            for m, buffers in stacked:
                m._buffers.update({k: b[i] for k, b in buffers.items() if b is not None})
            out.append(fn(*block))
    finally:
        for m, buffers in stacked:
            m._buffers.update(buffers)
    if isinstance(out[0], dict):
        return {k: torch.stack([o[k] for o in out]) for k in out[0]}
    return torch.stack(out)


class Method(nn.Module, ABC):
    """Base class of every method plugin, registered with ``@method_card``: a whole-network method writes
    ``train_step`` and ``evaluate`` itself (a local method inherits them from ``LocalMethod``).

    ``card`` is set by the decorator; ``options`` holds the card's defaults updated with the suite's
    values, validated against ``card.options`` before the method is built (a method never re-checks them).
    """

    card: ClassVar[Card]
    seed_batching: ClassVar[bool] = False  # seeds may train stacked: its losses are one per seed (ctx.per_seed)

    def __init__(self, backbone: Backbone, num_classes: int, options: dict[str, Any], ctx: Context):
        super().__init__()
        card = getattr(type(self), "card", None)
        why = card and placement_problem(card.name, card.capabilities, backbone.is_conv)
        if why:
            raise ValueError(why)
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
        chosen = self.options.get(card.rule_option) if card.rule_option else None
        return self.report_rule or chosen or card.rules[0]

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
    """A method trained unit by unit: the module docstring lists what it writes; this class runs the loop.

    Per batch, for each unit k that trains this epoch (``windows[k]``), the loop runs ``unit_outputs``, the
    head, ``unit_loss`` on each seed's rows, then (``update = "local"``) backward and unit k's optimizer
    step, freeing its graph before unit k+1 runs; the hand-off to unit k+1 is ``pass_on`` on the detached
    output (inside the graph under ``end-to-end``). A unit outside its window runs without a graph. Then
    each read-out of ``readouts`` gets its cross-entropy per seed, stepped by ``readout_opt``. Under ``joint``
    and ``end-to-end`` every loss is summed and stepped once by ``self.opt`` (``make_joint_optimizer``).
    Logged: ``loss`` (the sum), ``loss.unit<k>``, ``loss.<read-out>`` and what ``unit_loss`` adds.

    Overlapping local updates (``grad_window`` W > 1, ``update = "local"`` only): the units take turns, unit k
    stepping on the batches t (counted from each epoch's start) with (k + t + 1) % W == 0. A unit off its turn
    logs its loss without stepping and hands on inside the graph, so the next unit on its turn back-propagates
    through up to W units; ``unit_params(k)`` says which of them unit k's optimizer updates (a parameter may be
    in several optimizers, each with its own state). At most W units' graphs are alive at a time.
    """

    update: ClassVar[str] = "local"  # how the loop steps: local, joint or end-to-end (module docstring)
    seed_batching = True  # the loop computes every loss per seed
    readouts_read_all: ClassVar[bool] = False  # the read-outs read every unit's features (run them all)
    grad_window: int = 1  # units a unit's loss reaches back over (overlapping local updates, above)

    # the 0.1 contract's hooks, and what replaces each (CHANGELOG.md: porting a 0.1 plugin)
    _PORTED: ClassVar[dict[str, str]] = {
        "train_readouts": "readouts(features) returning {name: class scores}; the loop trains them",
        "unit_losses": "unit_loss only: the loop calls it on each seed's rows",
        "joint_step": 'update = "joint"',
    }

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        for old, new in LocalMethod._PORTED.items():
            if old in cls.__dict__:
                raise TypeError(
                    f"{cls.__module__}.{cls.__name__} defines {old!r}, a hook of the ffbench 0.1 method "
                    f"contract; in 0.2 write {new} (CHANGELOG.md, 'Porting a 0.1 plugin')"
                )
        if cls.update not in UPDATES:
            raise TypeError(f"{cls.__module__}.{cls.__name__}: update = {cls.update!r}; allowed: {', '.join(UPDATES)}")
        # unit_loss(k, scores, y) of 0.1 still works: the features are passed where it takes them
        params = inspect.signature(cls.unit_loss).parameters
        cls._loss_reads_h = len(params) >= 5 or any(p.kind is p.VAR_POSITIONAL for p in params.values())

    def __init__(self, backbone: Backbone, num_classes: int, options: dict[str, Any], ctx: Context):
        super().__init__(backbone, num_classes, options, ctx)
        if self.grad_window != 1 and (self.update != "local" or self.grad_window < 1):
            raise ValueError(f"grad_window {self.grad_window}: an integer >= 1, above 1 under update 'local' only")
        self.turn = 0  # the batch's index in its epoch (overlapping local updates)
        self.heads = nn.ModuleList(self.make_head(k, shape) for k, shape in enumerate(self.head_shapes()))
        if self.update == "local":
            self.opts = [ctx.make_optimizer(self.unit_params(k)) for k in range(len(backbone.units))]
        self.windows = [(0, ctx.epochs)] * len(backbone.units)  # the epochs [start, end) each unit trains in
        self.active = [True] * len(backbone.units)  # which units train this epoch (the others run without grad)

    # ------------------------------------------------------------ what a local method writes
    def make_head(self, k: int, shape: tuple[int, ...]) -> nn.Module | None:
        """Unit k's head: the unit's features (of ``shape``) -> class scores (B, K); None: no loss on unit k."""
        raise NotImplementedError

    @abstractmethod
    def unit_loss(self, k: int, scores: torch.Tensor, y: torch.Tensor, h: torch.Tensor) -> Any:
        """Unit k's loss on the rows given (one seed's): a scalar reduced over them, or a dict of it (``loss``)
        and other scalars to log. ``h``: the features the head read (for a term on the activity)."""

    @abstractmethod
    def rules(self, scores: list[torch.Tensor], features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inference rules from the per-unit class scores (and head inputs)."""

    def head_shapes(self) -> list[tuple[int, ...]]:
        """The shape each head reads (default: the units' output shapes)."""
        return list(self.backbone.out_shapes)

    def unit_params(self, k: int) -> list[nn.Parameter]:
        """What unit k's optimizer trains (default: the unit and its head)."""
        head = self.heads[k]
        return [*self.backbone.units[k].parameters(), *(head.parameters() if head is not None else ())]

    def unit_outputs(self, k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what the head reads, what is handed on) for unit k on its input; both the unit output by default."""
        h = self.backbone.units[k](x)
        return h, h

    def pass_on(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """What unit k hands on (e.g. a LayerNorm), inside the graph: the forward pass between units that an
        architecture-matched BP baseline back-propagates through (default: unchanged)."""
        return h

    def readouts(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Class scores of each read-out trained on the detached per-unit features (head inputs), by name; the
        loop trains them with cross-entropy and ``readout_opt`` (under ``joint``: with ``self.opt``)."""
        return {}

    # ------------------------------------------------------------ what the harness runs
    def make_joint_optimizer(self, *readouts: dict[str, Any]) -> None:
        """Under ``joint`` or ``end-to-end``: ``self.opt``, one parameter group of every unit's parameters (the
        run's settings), then ``readouts`` (parameter groups with their own settings, ``Context.make_optimizer``)."""
        units = [p for k in range(len(self.backbone.units)) for p in self.unit_params(k)]
        self.opt = self.ctx.make_optimizer([{"params": units}, *readouts])

    def forward_unit(self, k: int, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, Any]:
        """Unit k on its input: (class scores or None, head input, hand-off to unit k+1; None after the last)."""
        feat, out = self.unit_outputs(k, x)
        head = self.heads[k]
        if k + 1 == len(self.backbone.units):
            hand = None
        elif self.update == "end-to-end" or not self.steps_now(k):
            hand = self.pass_on(k, out)
        else:  # cut from the graph: computed without recording a graph no loss reaches
            with torch.no_grad():
                hand = self.pass_on(k, out.detach())
        return (head(feat) if head is not None else None), feat, hand

    def steps_now(self, k: int) -> bool:
        """Whether unit k steps on this batch: always, but in turns under overlapping local updates."""
        return (k + self.turn + 1) % self.grad_window == 0

    frozen_bn: str = "eval"  # a unit outside its window keeps BatchNorm's statistics ("train": updates them)

    def start_epoch(self, epoch: int) -> None:
        """A layer schedule: unit k trains in the epochs of ``windows[k]``."""
        self.active = [s <= epoch < e for s, e in self.windows]
        self.turn = 0
        self.train(self.training)

    def train(self, mode: bool = True) -> LocalMethod:
        """A unit outside its window runs with BatchNorm in eval mode (its statistics held), unless
        ``frozen_bn = "train"``."""
        super().train(mode)
        if mode and self.frozen_bn == "eval" and hasattr(self, "active"):
            for unit, on in zip(self.backbone.units, self.active):
                if not on:
                    unit.eval()
        return self

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
            return [self.backbone, *(h for h in self.heads[:-1] if h is not None)]
        return super().fixed_in(mode, k)

    def adapt(self, mode: str, k: int) -> None:
        """A unit with nothing left to train leaves the layer schedule (it runs without a graph)."""
        super().adapt(mode, k)
        for u in range(len(self.windows)):
            if not any(p.requires_grad for p in self.unit_params(u)):
                self.windows[u] = (0, 0)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        stats: dict[str, torch.Tensor] = {}
        logged: dict[str, torch.Tensor] = {}
        # every unit's head input stays alive until the read-outs only when there are read-outs to train
        keep = type(self).readouts is not LocalMethod.readouts
        features = []
        for k in range(self.units_to_run()):
            if not self.active[k]:
                with torch.no_grad():
                    _, feat, x = self.forward_unit(k, x)
                features.append(feat if keep else None)
                continue
            scores, feat, x = self.forward_unit(k, x)
            if scores is not None:
                if self._loss_reads_h:
                    loss = reduce_per_seed(self, lambda s, t, h, k=k: self.unit_loss(k, s, t, h), scores, y, feat)
                else:
                    loss = reduce_per_seed(self, lambda s, t, k=k: self.unit_loss(k, s, t), scores, y)
                if isinstance(loss, dict):
                    logged.update({f"{name}.unit{k + 1}": v for name, v in loss.items() if name != "loss"})
                    loss = loss["loss"]
                if self.update == "local":
                    if self.steps_now(k):
                        step(self.opts[k], loss)  # unit k's graph is freed before unit k+1 runs
                    loss = loss.detach()
                stats[f"loss.unit{k + 1}"] = loss
            features.append(feat.detach() if keep else None)
        for name, scores in self.readouts(features).items():
            loss = reduce_per_seed(self, F.cross_entropy, scores, y)
            if self.update != "joint":
                if getattr(self, "readout_opt", None) is None:
                    raise TypeError(
                        f"{type(self).__name__} has read-outs but no self.readout_opt (make it in __init__ with "
                        f"ctx.make_optimizer over the read-outs' parameters)"
                    )
                step(self.readout_opt, loss)
                loss = loss.detach()
            stats[f"loss.{name}"] = loss
        parts = list(stats.values())
        total = parts[0] if parts else torch.zeros(() if self.ctx.seeds == 1 else self.ctx.seeds, device=y.device)
        for part in parts[1:]:
            total = total + part
        if self.update != "local":  # the logged total is the stepped sum
            if total.requires_grad:
                step(self.opt, total)
            total, stats = total.detach(), {k: v.detach() for k, v in stats.items()}
        self.turn += 1
        return {"loss": total, **stats, **{k: v.detach() for k, v in logged.items()}}

    def evaluate(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        scores, features = [], []
        for k in range(len(self.backbone.units)):
            s, feat, x = self.forward_unit(k, x)
            scores.append(s)
            features.append(feat)
        per_unit = scores if all(s is not None for s in scores) else []  # per-unit accuracy where every unit has a head
        return self.rules(scores, features), per_unit


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


def placement_problem(name: str, caps: frozenset[str], conv: bool) -> str | None:
    """Why a method with capabilities ``caps`` cannot be built on a (``conv``olutional or not) backbone."""
    if "flat" in caps and conv:
        return f"{name} {PLACEMENT['flat']}; this backbone has convolutional units"
    if "conv" in caps and not conv:
        return f"{name} {PLACEMENT['conv']}; this backbone is fully connected"
    return None


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


def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """Backward and update; the graph behind ``loss`` is freed here (step-and-free). A loss per seed
    (seeds trained together) back-propagates its sum: each seed's parameters get their own loss's gradient."""
    optimizer.zero_grad(set_to_none=True)
    (loss if loss.dim() == 0 else loss.sum()).backward()
    optimizer.step()


def freeze(module: nn.Module) -> None:
    """No parameter of ``module`` trains, and its BatchNorm layers keep their running statistics (eval mode,
    whatever ``train()`` the method calls later)."""
    for p in module.parameters():
        p.requires_grad_(False)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train = types.MethodType(lambda self, mode=True: nn.Module.train(self, False), m)
            m.eval()
