"""SCFF, Self-Contrastive Forward-Forward (Chen, Liu, Laydevant, Grollier; Nat. Commun. 16:5978, 2025), following
docs/methods/notes/scff.md §15.

No label reaches the units. Every image is paired with itself: a positive row holds two views of the same image
(independent random translations), a negative row a view of image i and a view of image i + r (one random shift
r per batch). The first unit reads a pair with one weight on both halves, u = W n(v) + W n(v') + 2b, n
standardising the pair per sample; a later unit reads its standardised input, u = W n(h) + b. Goodness
G = mean_j ReLU(u_j)^2; unit loss mean softplus(theta+ - G+) + mean softplus(G- - theta-) + lambda mean G+. A unit
hands on act(u) (triangle: ReLU(u - mean_j u), or ReLU), detached. The units train one after another (greedy,
each frozen after its epochs) or together; then, in the last epochs, a linear probe (dropout + linear on the
units' standardised outputs for the pair (x, x)) trains on the frozen features with cross-entropy: the only
place a label enters, and the run's accuracy.
"""

from __future__ import annotations

from itertools import accumulate

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffbench.core.method import LocalMethod, method_card
from ffbench.core.options import Option
from ffbench.data.data import augment_batch
from ffbench.methods.goodness import goodness

_FLOATS = Option(float, help="a value", ge=0)
_COUNTS = Option(int, help="a count", ge=1)
PROBE_STEPS = (0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9)  # the probe's lr halves at these fractions of its epochs [CODE]


def _per_unit(help: str, default: list, source: str, item: Option = _FLOATS) -> Option:
    return Option(
        list, default, f"{help}; one value per unit, the last serving any further unit", item=item, check=bool,
        check_doc="a non-empty list", source=source,
    )  # fmt: skip


_OPTIONS = {
    "views": Option(
        str,
        "translate",
        "positive pair: two independently translated views, or the image twice",
        choices=("translate", "identical"),
        source="[CODE] MNIST: translate (RandomAffine 2/28); CIFAR: identical",
    ),  # fmt: skip
    "shift": Option(int, 2, "largest translation of a view, in pixels", ge=0, source="[CODE] MNIST 2 px"),
    "theta_pos": _per_unit("positive threshold", [4.0, 1.0], "[CODE] config.json MNIST 4, 1"),
    "theta_neg": _per_unit("negative threshold", [6.0, 1.0], "[CODE] config.json MNIST 6, 1"),
    "lam": _per_unit("weight of mean G+ in the loss", [1e-4, 0.0], "[CODE] config.json MNIST 1e-4, 0"),
    "act": Option(
        str,
        "triangle",
        "hand-off activation: ReLU(u - mean u) or ReLU (the goodness always uses ReLU)",
        choices=("triangle", "relu"),
        source="[CODE] MNIST triangle on both layers",
    ),  # fmt: skip
    "training": Option(
        str,
        "greedy",
        "units trained one after another (each frozen after its epochs) or all together",
        choices=("greedy", "simultaneous"),
        source="[CODE] greedy; simultaneous [SEC]",
    ),  # fmt: skip
    "unit_epochs": Option(
        (list, type(None)),
        None,
        "greedy epochs per unit, summing to the epochs before the probe; unset: an even "
        "split (the first units take the remainder)",
        item=_COUNTS,
        source="[CODE] MNIST 20, 9; split [INF]",
    ),  # fmt: skip
    "probe_epochs": Option(
        (int, type(None)),
        None,
        "the last epochs, where only the probe trains; unset: half the epochs",
        ge=1,
        source="[CODE] 50; half [INF]",
    ),  # fmt: skip
    "probe_units": Option(
        (list, type(None)),
        None,
        "units (0-based) the probe reads; unset: all",
        item=Option(int, ge=0),
        source="[CODE] MNIST all",
    ),  # fmt: skip
    "probe_dropout": Option(float, 0.2, "dropout before the probe", ge=0, lt=1, source="§15.3"),
    "probe_lr": Option(float, 1e-3, "probe Adam learning rate", gt=0, source="[CODE] Adam 1e-3"),
    "probe_decay": Option(
        str,
        "halving",
        "probe lr x 0.5 at 20/35/50/60/70/80/90 % of its epochs, or constant",
        choices=("halving", "none"),
        source="[CODE] CustomStepLR",
    ),  # fmt: skip
    "unit_lr": Option((list, type(None)), None, "lr per unit; unset: the run's", item=Option(float, gt=0)),
    "unit_weight_decay": Option((list, type(None)), None, "weight decay per unit; unset: the run's", item=_FLOATS),
    "gamma": _per_unit("unit lr x gamma every `period` of the unit's batches", [1.0], "[CODE] ExponentialLR"),
    "period": _per_unit("batches between two lr decays", [1000], "[CODE] period", _COUNTS),
}
# neurophysics-cnrsthales/contrastive-forward-forward config.json and ContrastFF_MNIST.py
# (docs/methods/notes/scff.md §15)
_REFERENCE = {
    "optimizer": ("adamw", "§15.2: AdamW per layer [CODE]"),
    "batch_size": (100, "§15.2: batch 100 [CODE] (the probe's batch of 64 is not kept: one batch size per run)"),
    "schedule": ("constant", "§15.2: the decay is per unit, gamma every period batches [CODE]"),
    "epochs": (79, "§15.2-§15.3: 20 + 9 unit epochs, then 50 probe epochs [CODE]"),
    "unit_epochs": ([20, 9], "§15.2: MNIST L1 20, L2 9 [CODE config.json]"),
    "probe_epochs": (50, "§15.3: 50 probe epochs [CODE]"),
    "unit_lr": ([3e-3, 2e-3], "§15.2: MNIST lr 3e-3, 2e-3 [CODE config.json]"),
    "unit_weight_decay": ([1e-4, 1e-4], "§15.2: MNIST wd 1e-4 [CODE config.json]"),
    "gamma": ([0.9, 0.6], "§15.2: ExponentialLR gamma 0.9, 0.6 [CODE config.json]"),
    "period": ([1000, 1500], "§15.2: every 1000, 1500 batches [CODE config.json]"),
    "theta_pos": ([4.0, 1.0], "§15.2: MNIST theta+ 4, 1 [CODE config.json]"),
    "theta_neg": ([6.0, 1.0], "§15.2: MNIST theta- 6, 1 [CODE config.json]"),
    "lam": ([1e-4, 0.0], "§15.2: MNIST lambda 1e-4, 0 [CODE config.json]"),
    "views": ("translate", "§15.1/§15.6.3: two independently translated views, 2 px [CODE]"),
    "shift": (2, "§15.1: RandomAffine translate 2/28 [CODE]"),
    "act": ("triangle", "§15.1: triangle on both MNIST layers [CODE]"),
    "probe_dropout": (0.2, "§15.3: Dropout(0.2) + Linear"),
    "probe_lr": (1e-3, "§15.3: Adam 1e-3 [CODE]"),
    "probe_decay": ("halving", "§15.3: x 0.5 at 20/35/50/60/70/80/90 % [CODE]"),
    "backbone.widths": ([2000, 2000], "§15.1: MLP 784 -> 2000 -> 2000 [CODE; PAPER Table 4]"),
}


def _at(values: list, k: int):
    return values[min(k, len(values) - 1)]


def scff_windows(o: dict, n_units: int, epochs: int) -> tuple[list[tuple[int, int]], int]:
    """Each unit's training epochs [start, end) and the first probe epoch: the units share the epochs before the
    probe's, in turn (greedy) or together."""
    span = epochs - (o["probe_epochs"] or max(1, epochs // 2))
    if o["training"] == "simultaneous":
        return [(0, span)] * n_units, span
    counts = o["unit_epochs"] or [span // n_units + (k < span % n_units) for k in range(n_units)]
    edges = [0, *accumulate(counts)]
    return list(zip(edges[:-1], edges[1:])), span


def _problem(o: dict, n_units: int, epochs: int) -> str | None:
    """Why options ``o`` cannot train ``n_units`` units in ``epochs`` epochs, or None."""
    windows, span = scff_windows(o, n_units, epochs)
    if span < 1:
        return f"scff: probe_epochs={o['probe_epochs']} leaves none of the {epochs} epochs to the units"
    if o["unit_epochs"] is not None and (o["training"] != "greedy" or len(o["unit_epochs"]) != n_units):
        return f"scff: unit_epochs needs training='greedy' and one entry per unit ({n_units})"
    if windows[-1][1] != span or any(s >= e for s, e in windows):
        return f"scff: the {n_units} units need at least one epoch each, summing to {span} (epochs - probe epochs)"
    if any(u >= n_units for u in o["probe_units"] or ()):
        return f"scff: probe_units {o['probe_units']} names a unit beyond the last ({n_units - 1}, 0-based)"
    for name in ("unit_lr", "unit_weight_decay"):
        if o[name] is not None and len(o[name]) != n_units:
            return f"scff: {name} needs one value per unit ({n_units}), got {o[name]}"
    return None


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Per row: zero mean, unit (unbiased) standard deviation over every other dimension [CODE]."""
    dims = tuple(range(1, x.dim()))
    x = x - x.mean(dims, keepdim=True)
    return x / (1e-10 + x.std(dims, keepdim=True))


@method_card(
    name="scff",
    family="scff",
    summary="Self-contrastive forward-forward: label-free units trained on positive pairs (two views of an image) "
    "and negative pairs (views of two images), goodness mean ReLU(u)^2, greedy; then a linear probe on the frozen "
    "features",
    paper="Chen, Liu, Laydevant, Grollier, Nat. Commun. 16:5978 (2025), arXiv 2409.11593 "
    "(docs/methods/notes/scff.md §15)",
    code="neurophysics-cnrsthales/contrastive-forward-forward (ContrastFF_MNIST.py, config.json; facts only)",
    defaults={"optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4, "batch_size": 100, "schedule": "constant"},
    options=_OPTIONS,
    rules=("probe",),
    recipes={"reference": _REFERENCE},
    capabilities=frozenset({"flat", "negatives", "step-and-free"}),
    tuning_space={"lr": ("log", 3e-4, 1e-2)},
    notes="Backbone: mlp (one Linear per unit; its ReLU is not used: the goodness reads ReLU(u), the hand-off "
    "act(u)). The first unit's pair is standardised jointly, and u = 2 lin((n(v) + n(v'))/2). One negative per "
    "positive (p = 1). A unit's lr is the run's (or unit_lr) x the run's schedule x gamma^floor((n+1)/period) "
    "after n of its batches. Evaluation: the probe on the pair (x, x); per-unit accuracy is not reported.",
)
class SCFF(LocalMethod):
    probe_rule = "probe"
    adapt_modes = ("linear-probe", "last-k-units", "fine-tune")  # no head has parameters

    @classmethod
    def skip(cls, config):
        o = {**{k: v for k, v in cls.card.defaults.items() if k in cls.card.options}, **config.method_options}
        return _problem(o, len(config.backbone_options.get("widths", [])) or 3, config.epochs)

    def __init__(self, backbone, num_classes, options, ctx):
        o, n = options, len(backbone.units)
        why = _problem(o, n, ctx.epochs)
        if why:
            raise ValueError(why)
        super().__init__(backbone, num_classes, options, ctx)
        for opt in self.opts:  # replaced by the per-unit settings below
            ctx.optimizers.remove(opt)
        lrs, wds = o["unit_lr"] or [ctx.lr] * n, o["unit_weight_decay"] or [ctx.weight_decay] * n
        self.opts = [ctx.make_optimizer(self.unit_params(k), lr=lrs[k], weight_decay=wds[k]) for k in range(n)]
        self.windows, self.probe_start = scff_windows(o, n, ctx.epochs)
        self.probe_units = o["probe_units"] or list(range(n))
        self.probe = nn.Linear(sum(backbone.out_shapes[k][0] for k in self.probe_units), num_classes)
        self.readout_opt = ctx.make_optimizer(
            self.probe.parameters(), optimizer="adam", lr=o["probe_lr"], weight_decay=0
        )
        self.register_buffer("unit_steps", torch.zeros(n, dtype=torch.long))  # each unit's batches, for its decay
        self._steps = None
        self.start_epoch(0)

    def make_head(self, k, shape):
        return nn.Identity()  # a unit's "scores" are its pre-activations u; unit_loss reads the goodness from them

    def adapt(self, mode, k):
        super().adapt(mode, k)
        if all(s >= e for s, e in self.windows):  # no unit left to train: the probe trains from the first epoch
            self.probe_start = 0

    def start_epoch(self, epoch):
        super().start_epoch(epoch)
        self.probing = epoch >= self.probe_start
        self._factors = [opt.param_groups[0]["lr"] / opt.param_groups[0]["base_lr"] for opt in self.opts]
        if self.options["probe_decay"] == "halving" and self.probing:
            e, p = epoch - self.probe_start, self.ctx.epochs - self.probe_start
            for group in self.readout_opt.param_groups:
                group["lr"] *= 0.5 ** sum(1 <= t <= e for t in {int(p * r) for r in PROBE_STEPS})

    def units_to_run(self):
        return len(self.active) if self.probing else super().units_to_run()

    def unit_outputs(self, k, x):
        lin = self.backbone.units[k][-2]
        if k == 0:  # (rows, 2, ...) pairs: one weight on both standardised halves, 2 lin(mean) = W v + W v' + 2b
            z = standardise(x.flatten(2))
            u = 2 * lin((z[:, 0] + z[:, 1]) / 2)
        else:
            u = lin(standardise(x))
        return u, u

    def pass_on(self, k, u):
        return F.relu(u - u.mean(1, keepdim=True) if self.options["act"] == "triangle" else u)

    def unit_loss(self, k, scores, y, h):
        o, half = self.options, scores.shape[0] // 2
        g = goodness(scores.relu(), "mean")
        g_pos, g_neg = g[:half], g[half:]  # the rows of _pairs: positives, then negatives
        loss = F.softplus(_at(o["theta_pos"], k) - g_pos).mean() + F.softplus(g_neg - _at(o["theta_neg"], k)).mean()
        return {"loss": loss + _at(o["lam"], k) * g_pos.mean(), "goodness_pos": g_pos.mean().detach(),
                "goodness_neg": g_neg.mean().detach()}  # fmt: skip

    def _features(self, features):
        return torch.cat([standardise(self.pass_on(k, features[k])) for k in self.probe_units], 1)

    def readouts(self, features):
        if not self.probing:
            return {}
        keep = 1 - self.options["probe_dropout"]
        f = self._features(features)
        mask = self.ctx.draw(lambda g, r: (torch.rand(r.shape, generator=g, device=r.device) < keep) / keep, f)
        return {"probe": self.probe(f * mask)}

    def rules(self, scores, features):
        return {"probe": self.probe(self._features(features))}

    def _pairs(self, gen, x):
        """One seed's rows: (x, x) pairs when no unit trains; else positives (v_i, v'_i), then negatives
        (v_i, v'_{(i + r) mod B}), one r in [1, B) per batch."""
        if not any(self.active):
            return torch.stack([x, x], 1)
        views = [x] * 2
        if self.options["views"] == "translate":  # the background (each image's minimum) fills the border
            low = x.flatten(1).amin(1).view(-1, *[1] * (x.dim() - 1))
            views = [augment_batch(x - low, gen, self.options["shift"]) for _ in views]
        b = len(x)
        r = torch.randint(1, max(2, b), (1,), generator=gen, device=x.device)
        other = views[1][(torch.arange(b, device=x.device) + r) % b]
        return torch.cat([torch.stack(views, 1), torch.stack([views[0], other], 1)])

    def train_step(self, x, y):
        if self._steps is None:  # the buffer once (a resumed run's), then counted here without a device sync
            self._steps = self.unit_steps.reshape(-1, len(self.opts))[0].tolist()
        o = self.options
        for k, on in enumerate(self.active):
            if on:
                decay = _at(o["gamma"], k) ** ((self._steps[k] + 1) // _at(o["period"], k))
                for group in self.opts[k].param_groups:
                    group["lr"] = group["base_lr"] * self._factors[k] * decay
                self._steps[k] += 1
                self.unit_steps[..., k] += 1
        return super().train_step(self.ctx.draw(self._pairs, x), y)

    def evaluate(self, x):
        return super().evaluate(torch.stack([x, x], 1))[0], []
