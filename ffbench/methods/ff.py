"""Original forward-forward, ``ff.hinton`` (Hinton 2022), following docs/methods/notes/ff.md §2: the official MATLAB recipe
(2a, read through ff-py) and loeweX (2b), combined as in §2.6, with the §2.7 / docs/methods/notes/rules.md §9 pitfalls made options.

Per layer: RMS-normalise the (detached) input -> linear -> ReLU; goodness g = sum h^2; loss = BCE-with-logits
on g - theta (positives 1, negatives 0, mean over the 2B rows) + peer normalisation on the positive half.
The layers' losses and the softmax read-out's are summed and stepped once per batch (loeweX); each layer's
input is detached, so each layer's gradient is its own loss's.

Efficiency: the label lives in the first K inputs, and normalisation only rescales the input vector, so
layer 1 on ``overlay(x, labels)`` equals ``(W x_rest + W[:, :K] labels) / norm + b`` with the norm computed
from ||x_rest||^2 + ||labels||^2. One B-row matmul of the image is shared by the positive, negative and
neutral rows, and K-label inference costs one image matmul plus K cheap rank-K corrections in layer 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffbench.core.method import LocalMethod, greedy_windows, method_card
from ffbench.core.options import Option
from ffbench.core.registry import ByDataset
from ffbench.methods.goodness import (
    EPS,
    NEGATIVES,
    SCALES,
    StraightReLU,
    ff_loss,
    goodness,
    normalise,
    peer_loss,
    resolve_scale,
    sample_negatives,
)

_OPTIONS = {
    "scale": Option(
        str,
        "sum-rms",
        "goodness, normalisation and threshold together",
        choices=tuple(SCALES),
        source="official: sum-rms; mpezeshki: mean-l2",
    ),
    "goodness": Option(str, "auto", "may only restate scale", choices=("auto", "sum", "mean")),
    "norm": Option(str, "auto", "may only restate scale", choices=("auto", "rms", "l2")),
    "theta_scale": Option(float, 1.0, "threshold = theta_scale x the convention's threshold", gt=0),
    "negatives": Option(str, "uniform", "negative labels", choices=NEGATIVES, source="§2.7"),
    "vote": Option(
        str,
        "skip-first",
        "layers summed by the goodness rule and read by the softmax head",
        choices=("skip-first", "all", "last"),
        source="official: skip-first",
    ),
    "training": Option(
        str, "simultaneous", "every layer every batch, or greedy epoch blocks", choices=("simultaneous", "greedy")
    ),
    "peer_weight": Option(float, 0.03, "peer-normalisation weight", ge=0, source="official"),
    "peer_momentum": Option(float, 0.9, "running mean of activities", ge=0, lt=1, source="official"),
    "head_lr": Option(float, 1e-2, "softmax read-out learning rate", gt=0),
    "head_weight_decay": Option(float, 3e-3, "softmax read-out weight decay", ge=0),
    "label_value": Option(float, 1.0, "value of the one-hot label slot", gt=0),
    "pixels": Option(
        str,
        "unit-range",
        "each image min-max scaled to [0, 1], or the harness's input",
        choices=("unit-range", "as-given"),
    ),
    "rule": Option(
        (str, type(None)),
        None,
        "the rule reported as the run's accuracy (and selecting its epoch); unset: goodness",
        choices=("goodness", "softmax"),
        source="loeweX reports the softmax read-out",
    ),
    "init": Option(
        str,
        "normal",
        "N(0, 1/fan_in) weights and zero biases (official), N(0, 1/fan_out) and zero "
        "biases (loeweX: std from the weight's dim 0), or torch's",
        choices=("normal", "loewex", "torch"),
    ),
}


def _problem(o: dict, n_layers: int, epochs: int, name: str) -> str | None:
    """Why options ``o`` of method ``name`` cannot train ``n_layers`` layers for ``epochs`` epochs, or None."""
    try:
        resolve_scale(o["scale"], o["goodness"], o["norm"])
    except ValueError as exc:
        return str(exc)
    if o["vote"] == "skip-first" and n_layers < 2:
        return f"{name}: vote='skip-first' needs at least 2 layers; use vote='all' or 'last'"
    if o["training"] == "greedy" and epochs < n_layers:
        return f"{name} greedy training needs epochs >= layers ({epochs} < {n_layers})"
    return None


# loeweX/Forward-Forward @da516f09 (docs/methods/notes/ff.md §2.3), the PyTorch reference with a published 1.45% (its
# softmax read-out: the `softmax` rule); ffbench's recipe mixes the official init with this optimizer.
_REFERENCE = {
    "optimizer": ("sgd", "§2.3 config.yaml: SGD"),
    "lr": (1e-3, "§2.3 config.yaml: lr 1e-3"),
    "momentum": (0.9, "§2.3 config.yaml: momentum 0.9"),
    "weight_decay": (3e-4, "§2.3 config.yaml: weight decay 3e-4"),
    "schedule": ("cooldown-loewex", "§2.3 utils.py: lr 2 (1 + E - e) / E for e > E / 2"),
    "batch_size": (100, "§2.3 config.yaml: batch 100"),
    "head_lr": (1e-2, "§2.3 config.yaml: downstream lr 1e-2 (optimizer groups as fixed in PR #7, §2.7.1)"),
    "head_weight_decay": (3e-3, "§2.3 config.yaml: downstream weight decay 3e-3"),
    "init": ("loewex", "§2.3: N(0, 1/sqrt(dim 0 of the weight)), biases 0"),
    "pixels": ("as-given", "§2.3: ToTensor only, so pixels / 255 (with dataset.normalize = none)"),
    "dataset.normalize": ("none", "§2.3: ToTensor only, values in [0, 1]"),
    "dataset.val_split": (ByDataset({"mnist": "last"}), "§2.3 utils.py: train on the first 50k, validate on 50k-60k"),
    "val_size": (ByDataset({"mnist": 10000}), "§2.3: the last 10k MNIST training images validate"),
    "scale": ("sum-rms", "§2.3: RMS norm, sum of squares, theta = N"),
    "negatives": ("uniform", "§2.3 ff_mnist.py: uniform over the 9 wrong classes"),
    "vote": ("skip-first", "§2.3: the classifier reads layers with index >= 1"),
    "training": ("simultaneous", "§2.3: all losses summed, one optimizer step"),
    "peer_weight": (0.03, "§2.3 config.yaml: peer normalisation 0.03"),
    "peer_momentum": (0.9, "§2.3 config.yaml: running-mean momentum 0.9"),
    "label_value": (1.0, "§2.3 ff_mnist.py: one-hot label, neutral 0.1 per slot"),
    "rule": ("softmax", "§2.3: test accuracy is the downstream classifier's; no goodness-per-label inference"),
}


@method_card(
    name="ff.hinton",
    family="ff",
    recipes={"reference": _REFERENCE},
    summary="Original forward-forward: label in the first K inputs, RMS norm between layers, sum-of-squares "
    "goodness with theta = N, logistic loss, peer normalisation, per-layer losses on detached inputs "
    "summed and stepped once; inference "
    "by goodness per label (default) and by a neutral-label softmax read-out",
    paper="Hinton 2022, arXiv 2212.13345 (docs/methods/notes/ff.md §2)",
    code="official ffcode.zip via jesper-olsen/ff-py main.py; loeweX/Forward-Forward src/ff_model.py",
    defaults={
        "optimizer": "sgd",
        "lr": 1e-3,
        "momentum": 0.9,
        "weight_decay": 3e-4,
        "schedule": "cooldown",
        "batch_size": 100,
    },
    options=_OPTIONS,
    rules=("goodness", "softmax"),
    rule_option="rule",
    capabilities=frozenset({"flat", "negatives", "label-in-input", "unit-scores"}),
    tuning_space={"lr": ("log", 1e-4, 1e-2), "weight_decay": ("log", 1e-5, 1e-3)},
    notes="scale: sum-rms (goodness sum h^2, RMS norm, theta=N, official) or mean-l2 (mean h^2, L2 norm, "
    "theta=2, mpezeshki); goodness/norm may restate it, a mixed pair is an error; theta = theta_scale x "
    "the convention's threshold. vote: layers summed by the goodness rule and fed to the softmax head "
    "(skip-first = official). training: simultaneous (each layer trains on its own loss every batch) or "
    "greedy (layer l trains in epochs [l*E/L, (l+1)*E/L)). Neutral label = label_value/K per slot "
    "(0.1 for 10 classes). pixels unit-range: each image min-max scaled to [0, 1] (the recipes' "
    "pixel range; for MNIST it exactly undoes the harness standardisation), as-given: the harness's input. "
    "init normal: N(0, 1/fan_in) weights, zero biases (official). Backbone: mlp.",
)
class FF(LocalMethod):
    """The unit loop is the base's; a unit's input is a state: for layer 1 (|x_rest|^2, W1 x_rest, labels),
    for layer l > 1 the normalised activity of layer l-1. Class scores of a unit are its goodness per label
    row: (B, 2) [positive, negative] in training, (B, K) [one per label] in evaluation."""

    adapt_modes = ("linear-probe", "last-k-units", "fine-tune")  # no head has parameters
    update = "joint"  # the layers' and the read-out's losses summed, one step (loeweX)
    seed_batching = False  # layer 1 reads its weight itself (the label overlay above): seeds train one at a time
    probe_rule = "softmax"

    @classmethod
    def skip(cls, config):
        o = {**{k: v for k, v in cls.card.defaults.items() if k in cls.card.options}, **config.method_options}
        return _problem(o, len(config.backbone_options.get("widths", [])) or 3, config.epochs, cls.card.name)

    def __init__(self, backbone, num_classes, options, ctx):
        o, k = options, num_classes
        widths, self.in_dim = [s[0] for s in backbone.out_shapes], math.prod(backbone.in_shape)
        if self.in_dim < k:
            raise ValueError(f"{self.card.name} writes the label over the first {k} inputs; there are {self.in_dim}")
        super().__init__(backbone, num_classes, options, ctx)
        self.goodness, self.norm = resolve_scale(o["scale"], o["goodness"], o["norm"])
        # the threshold, or for a goodness method without one (no theta_scale) the scale its logged goodness reads
        self.thetas = [o.get("theta_scale", 1.0) * (n if self.goodness == "sum" else 2.0) for n in widths]
        n_layers = len(widths)
        self.vote = {"skip-first": range(1, n_layers), "all": range(n_layers), "last": [n_layers - 1]}[o["vote"]]
        if o["init"] in ("normal", "loewex"):
            with torch.no_grad():
                for lin in self.linears:
                    fan = lin.in_features if o["init"] == "normal" else lin.out_features
                    lin.weight.normal_(0.0, fan**-0.5)
                    lin.bias.zero_()
        for i, n in enumerate(widths):
            self.register_buffer(f"peer_mean{i}", torch.zeros(n))
        self.head = nn.Linear(sum(widths[i] for i in self.vote), k, bias=False)
        nn.init.zeros_(self.head.weight)
        self.make_joint_optimizer(
            {"params": list(self.head.parameters()), "lr": o["head_lr"], "weight_decay": o["head_weight_decay"]}
        )
        self.label_value = o["label_value"]
        if o["training"] == "greedy":
            self.windows = greedy_windows(n_layers, ctx.epochs)

    def make_head(self, k, shape):
        return nn.Identity()  # a layer's class scores are its goodness per label row

    @property
    def linears(self):
        """Each unit's linear layer (looked up each time: seeds trained together replace it by a stacked one)."""
        return [next(m for m in unit.modules() if hasattr(m, "in_features")) for unit in self.backbone.units]

    # ---------------------------------------------------------------- pieces
    def _image(self, x):
        """Flattened image with the label slots zeroed: its squared norm, and W1 @ it (B rows)."""
        xr = x.flatten(1)
        if self.options["pixels"] == "unit-range":  # per image to [0, 1]: undoes the harness standardisation
            lo, hi = xr.aminmax(dim=1, keepdim=True)
            xr = (xr - lo) / (hi - lo).clamp_min(EPS)
        else:
            xr = xr.clone()
        xr[:, : self.num_classes] = 0
        return xr.pow(2).sum(1), F.linear(xr, self.linears[0].weight)

    def _label_rows(self, like):
        """(a one-hot label row's squared norm, the neutral row (1, 1, K), its squared norm): the same for every
        row, computed as the per-row arithmetic computes them."""
        k, lv = self.num_classes, self.label_value
        neutral = like.new_full((1, 1, k), lv / k)
        one_hot = like.new_full((1,), lv).pow(2)  # its one non-zero slot squared; the zeros add nothing
        return one_hot, neutral, neutral.pow(2).sum(-1)

    def _first(self, ssq, base, labels, label_ssq=None):
        """Layer-1 pre-activations of overlay(x, labels); labels (V, B or 1, K) -> (V, B, N). ``label_ssq``: the
        labels' squared norm where every row has the same (``_label_rows``), else computed from them."""
        lin = self.linears[0]
        total = ssq + (labels.pow(2).sum(-1) if label_ssq is None else label_ssq)
        denom = (total / self.in_dim if self.norm == "rms" else total).sqrt() + EPS
        return (base + labels @ lin.weight[:, : self.num_classes].t()) / denom[..., None] + lin.bias

    def _neutral(self, ssq, base):
        """Normalised activities of every layer for the neutral label (called without grad)."""
        _, neutral, neutral_ssq = self._label_rows(base)
        z = self._first(ssq, base, neutral, neutral_ssq)[0]
        feats = []
        for i, lin in enumerate(self.linears):
            if i:
                z = lin(feats[-1])
            feats.append(normalise(z.relu(), self.norm))
        return feats

    # ---------------------------------------------------------------- the unit, its loss, the read-out
    def forward_unit(self, k, state):
        if k == 0:
            ssq, base, labels = state  # one-hot label rows
            self._rows = labels.shape[0]
            z = self._first(ssq, base, labels, self._label_rows(base)[0]).flatten(0, 1)  # (V*B, N), label-major
        else:
            z = self.linears[k](state)
        h = StraightReLU.apply(z) if torch.is_grad_enabled() else z.relu()
        last = k + 1 == len(self.backbone.units)  # nothing reads the last layer's hand-off
        pos = h[: h.shape[0] // self._rows]  # the first label block: the positive rows (peer normalisation)
        return (
            goodness(h, self.goodness).view(self._rows, -1).t(),
            pos,
            None if last else normalise(h.detach(), self.norm),
        )

    def pair_loss(self, k, g_pos, g_neg):
        """Unit k's loss on the goodness of its positive and negative rows (row b of each: sample b)."""
        return ff_loss(g_pos, g_neg, self.thetas[k])

    def unit_loss(self, k, scores, y, h):
        """The pair loss plus peer normalisation of the positive rows' mean activity ``h`` (a running mean)."""
        o = self.options
        loss = self.pair_loss(k, scores[:, 0], scores[:, 1])
        if o["peer_weight"]:
            peer = getattr(self, f"peer_mean{k}")
            m = o["peer_momentum"] * peer + (1 - o["peer_momentum"]) * h.mean(0)
            loss = loss + o["peer_weight"] * peer_loss(m)
            peer.copy_(m.detach())  # the buffer is not saved for backward: updating it now is safe
        g = scores.detach() / self.thetas[k]
        return {"loss": loss, "goodness_pos": g[:, 0].mean(), "goodness_neg": g[:, 1].mean()}

    def readouts(self, features):
        return {"head": self._logits}  # stepped with the layers'

    def train_step(self, x, y):
        with torch.set_grad_enabled(self.active[0]):
            ssq, base = self._image(x)
        with torch.no_grad():
            feats = torch.cat([f for i, f in enumerate(self._neutral(ssq, base)) if i in self.vote], 1)
        self._logits = self.head(feats)  # the read-out's loss reads it, and so do hard negatives (detached)
        logits = self._logits.detach() if self.options["negatives"] == "hard" else None
        y_neg = self.ctx.draw(
            lambda g, t, s: sample_negatives(t, self.num_classes, self.options["negatives"], g, s), y, logits
        )
        labels = F.one_hot(torch.stack([y, y_neg]), self.num_classes).to(x.dtype) * self.label_value
        return super().train_step((ssq, base, labels), y)

    def rules(self, scores, features):
        return {"goodness": sum(scores[i] for i in self.vote)}

    @property
    def max_eval_batch(self):
        return max(1, 2**14 // self.num_classes)  # B*K rows per pass: K = 100 would otherwise take GBs

    @torch.no_grad()
    def evaluate(self, x):
        k = self.num_classes
        ssq, base = self._image(x)
        logits = self.head(torch.cat([self._neutral(ssq, base)[i] for i in self.vote], 1))
        eye = torch.eye(k, device=x.device, dtype=x.dtype)[:, None, :] * self.label_value
        rules, scores = super().evaluate((ssq, base, eye))
        return {**rules, "softmax": logits}, scores
