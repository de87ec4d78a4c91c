"""Original forward-forward, ``ff.hinton`` (Hinton 2022), following methods.md §2: the official MATLAB recipe
(2a, read through ff-py) and loeweX (2b), combined as in §2.6, with the §2.7 / §9 pitfalls made options.

Per layer: RMS-normalise the (detached) input -> linear -> ReLU; goodness g = sum h^2; loss = BCE-with-logits
on g - theta (positives 1, negatives 0, mean over the 2B rows) + peer normalisation on the positive half.
Each layer steps on its own loss before the next layer's forward (step-and-free).

Efficiency: the label lives in the first K inputs, and normalisation only rescales the input vector, so
layer 1 on ``overlay(x, labels)`` equals ``(W x_rest + W[:, :K] labels) / norm + b`` with the norm computed
from ||x_rest||^2 + ||labels||^2. One B-row matmul of the image is shared by the positive, negative and
neutral rows, and K-label inference costs one image matmul plus K cheap rank-K corrections in layer 1.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffbench.method import Method, method_card, step

SCALES = {"sum-rms": ("sum", "rms"), "mean-l2": ("mean", "l2")}  # goodness, normalisation; theta = N or 2
NEGATIVES = ("uniform", "permutation", "hard")
EPS = 1e-8


class _StraightReLU(torch.autograd.Function):
    """ReLU whose backward passes the gradient everywhere (MATLAB/loeweX): it only changes the peer-norm
    term, since the goodness gradient 2h is already 0 where the unit is off. Saves nothing for backward."""

    @staticmethod
    def forward(ctx, z):
        return z.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        return grad


def ff_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, theta: float) -> torch.Tensor:
    """BCE-with-logits on g - theta, target 1 for positives and 0 for negatives, mean over the 2B rows."""
    return F.softplus(torch.cat([theta - g_pos, g_neg - theta])).mean()


def peer_loss(running_mean: torch.Tensor) -> torch.Tensor:
    """Peer normalisation: mean over units of (mean_j m_j - m_j)^2; its gradient is 2(m_j - mean m)/N."""
    return (running_mean.mean() - running_mean).pow(2).mean()


def sample_negatives(y: torch.Tensor, k: int, kind: str, gen: torch.Generator,
                     logits: torch.Tensor | None = None) -> torch.Tensor:
    """Negative labels: ``uniform`` over the K-1 wrong classes (never the true one), ``permutation`` of the
    batch's labels (may equal the true label, mpezeshki), or ``hard``: drawn from the neutral-label softmax
    with the true class masked out (official MATLAB)."""
    if kind == "uniform":
        return (y + torch.randint(1, k, y.shape, generator=gen, device=y.device)) % k
    if kind == "permutation":
        return y[torch.randperm(len(y), generator=gen, device=y.device)]
    if kind == "hard":
        probs = logits.float().scatter(1, y[:, None], float("-inf")).softmax(1)
        return torch.multinomial(probs, 1, generator=gen).squeeze(1)
    raise ValueError(f"unknown negatives {kind!r}; allowed: {', '.join(NEGATIVES)}")


def resolve_scale(scale: str, goodness: str, norm: str) -> tuple[str, str]:
    """The scale conventions travel together (§9.1): ``goodness``/``norm`` may only restate ``scale``."""
    want_g, want_n = SCALES[scale]
    if goodness not in ("auto", want_g) or norm not in ("auto", want_n):
        g, n = (want_g if goodness == "auto" else goodness), (want_n if norm == "auto" else norm)
        fix = next((s for s, pair in SCALES.items() if pair == (g, n)), None)
        hint = f"set scale={fix!r} instead" if fix else "valid pairs: sum+rms (theta=N), mean+l2 (theta=2)"
        raise ValueError(f"ff: mixed scale conventions goodness={g!r} with norm={n!r} under scale={scale!r}; "
                         f"goodness, normalisation and threshold travel together ({hint})")
    return want_g, want_n


@method_card(
    name="ff.hinton", family="ff",
    summary="Original forward-forward: label in the first K inputs, RMS norm between layers, sum-of-squares "
            "goodness with theta = N, logistic loss, peer normalisation, per-layer step-and-free; inference "
            "by goodness per label (default) and by a neutral-label softmax read-out",
    paper="Hinton 2022, arXiv 2212.13345 (methods.md §2)",
    code="official ffcode.zip via jesper-olsen/ff-py main.py; loeweX/Forward-Forward src/ff_model.py",
    defaults={"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 3e-4, "schedule": "cooldown",
              "batch_size": 100,
              "scale": "sum-rms", "goodness": "auto", "norm": "auto", "theta_scale": 1.0,
              "negatives": "uniform", "vote": "skip-first", "training": "simultaneous",
              "peer_weight": 0.03, "peer_momentum": 0.9, "head_lr": 1e-2, "head_weight_decay": 3e-3,
              "label_value": 1.0, "pixels": "unit-range", "init": "normal"},
    options={"scale": tuple(SCALES), "goodness": ("auto", "sum", "mean"), "norm": ("auto", "rms", "l2"),
             "theta_scale": float, "negatives": NEGATIVES, "vote": ("skip-first", "all", "last"),
             "training": ("simultaneous", "greedy"), "peer_weight": float, "peer_momentum": float,
             "head_lr": float, "head_weight_decay": float, "label_value": float, "pixels": ("unit-range", "as-given"),
             "init": ("normal", "torch")},
    capabilities=frozenset({"flat", "negatives", "label-in-input", "unit-scores"}),
    tuning_space={"lr": ("log", 1e-4, 1e-2), "weight_decay": ("log", 1e-5, 1e-3)},
    notes="scale: sum-rms (goodness sum h^2, RMS norm, theta=N, official) or mean-l2 (mean h^2, L2 norm, "
          "theta=2, mpezeshki); goodness/norm may restate it, a mixed pair is an error; theta = theta_scale x "
          "the convention's threshold. vote: layers summed by the goodness rule and fed to the softmax head "
          "(skip-first = official). training: simultaneous (each layer steps on its own loss every batch) or "
          "greedy (layer l trains in epochs [l*E/L, (l+1)*E/L)). Neutral label = label_value/K per slot "
          "(0.1 for 10 classes). pixels unit-range: each image min-max scaled to [0, 1] (the recipes' "
          "pixel range; for MNIST it exactly undoes the harness standardisation), as-given: the harness's input. "
          "init normal: N(0, 1/fan_in) weights, zero biases (official). Backbone: mlp.")
class FF(Method):
    @classmethod
    def incompatible(cls, config) -> str | None:
        """Why a suite cell cannot run (the design drops it with this reason), or None."""
        o = {**{k: v for k, v in cls.card.defaults.items() if k in cls.card.options}, **config.method_options}
        n_layers = len(config.backbone_options.get("widths", [])) or 3
        try:
            resolve_scale(o["scale"], o["goodness"], o["norm"])
        except ValueError as exc:
            return str(exc)
        if o["vote"] == "skip-first" and n_layers < 2:
            return "ff.hinton: vote='skip-first' needs at least 2 layers"
        if o["training"] == "greedy" and config.epochs < n_layers:
            return f"ff.hinton greedy training needs epochs >= layers ({config.epochs} < {n_layers})"
        return None

    def __init__(self, backbone, num_classes, options, ctx):
        super().__init__(backbone, num_classes, options, ctx)
        o, k = options, num_classes
        self.linears = []
        for unit in backbone.units:
            lin = [m for m in unit.modules() if isinstance(m, nn.Linear)]
            if backbone.is_conv or len(lin) != 1:
                kind = "convolutional units" if backbone.is_conv else "units that are not one linear layer each"
                raise ValueError(f"ff.hinton trains fully connected layers on the flattened image; this backbone "
                                 f"has {kind}. Allowed backbones: mlp")
            self.linears.append(lin[0])
        self.in_dim = self.linears[0].in_features
        if self.in_dim < k:
            raise ValueError(f"ff.hinton writes the label over the first {k} inputs, but the input has {self.in_dim}")
        self.goodness, self.norm = resolve_scale(o["scale"], o["goodness"], o["norm"])
        widths = [lin.out_features for lin in self.linears]
        self.thetas = [o["theta_scale"] * (n if self.goodness == "sum" else 2.0) for n in widths]
        n_layers = len(widths)
        self.vote = {"skip-first": list(range(1, n_layers)), "all": list(range(n_layers)),
                     "last": [n_layers - 1]}[o["vote"]]
        if not self.vote:
            raise ValueError("ff.hinton: vote='skip-first' needs at least 2 layers; use vote='all' or 'last'")
        if o["training"] == "greedy" and ctx.epochs < n_layers:
            raise ValueError(f"ff.hinton greedy training needs epochs >= layers ({ctx.epochs} < {n_layers})")
        if o["init"] == "normal":
            with torch.no_grad():
                for lin in self.linears:
                    lin.weight.normal_(0.0, lin.in_features ** -0.5)
                    lin.bias.zero_()
        for i, n in enumerate(widths):
            self.register_buffer(f"peer_mean{i}", torch.zeros(n))
        self.head = nn.Linear(sum(widths[i] for i in self.vote), k, bias=False)
        nn.init.zeros_(self.head.weight)
        self.opts = [ctx.make_optimizer(lin.parameters()) for lin in self.linears]
        self.head_opt = ctx.make_optimizer(self.head.parameters(), lr=o["head_lr"],
                                           weight_decay=o["head_weight_decay"])
        self.label_value = o["label_value"]
        self.training_layers = list(range(n_layers))

    def start_epoch(self, epoch):
        if self.options["training"] == "greedy":
            n, e = len(self.linears), self.ctx.epochs
            self.training_layers = [next(i for i in range(n) if epoch < (i + 1) * e // n)]

    # ---------------------------------------------------------------- pieces
    def _normalise(self, h):
        if self.norm == "rms":
            return h / (h.pow(2).mean(-1, keepdim=True).sqrt() + EPS)
        return h / (h.norm(dim=-1, keepdim=True) + EPS)

    def _good(self, h):
        return h.pow(2).sum(-1) if self.goodness == "sum" else h.pow(2).mean(-1)

    def _image(self, x):
        """Flattened image with the label slots zeroed: its squared norm, and W1 @ it (B rows)."""
        xr = x.flatten(1)
        if self.options["pixels"] == "unit-range":  # per image to [0, 1]: undoes the harness standardisation
            lo, hi = xr.aminmax(dim=1, keepdim=True)
            xr = (xr - lo) / (hi - lo).clamp_min(EPS)
        else:
            xr = xr.clone()
        xr[:, :self.num_classes] = 0
        return xr.pow(2).sum(1), F.linear(xr, self.linears[0].weight)

    def _first(self, ssq, base, labels):
        """Layer-1 pre-activations of overlay(x, labels); labels (V, B or 1, K) -> (V, B, N)."""
        lin = self.linears[0]
        total = ssq + labels.pow(2).sum(-1)
        denom = (total / self.in_dim if self.norm == "rms" else total).sqrt() + EPS
        return (base + labels @ lin.weight[:, :self.num_classes].t()) / denom[..., None] + lin.bias

    def _neutral(self, ssq, base):
        """Normalised activities of every layer for the neutral label (no grad)."""
        k = self.num_classes
        z = self._first(ssq, base.detach(), base.new_full((1, 1, k), self.label_value / k))[0]
        feats = []
        for i, lin in enumerate(self.linears):
            if i:
                z = F.linear(feats[-1], lin.weight, lin.bias)
            feats.append(self._normalise(z.relu()))
        return feats

    # ---------------------------------------------------------------- training and inference
    def train_step(self, x, y):
        b, k, o = len(y), self.num_classes, self.options
        with torch.set_grad_enabled(0 in self.training_layers):
            ssq, base = self._image(x)
        with torch.no_grad():
            feats = torch.cat([f for i, f in enumerate(self._neutral(ssq, base)) if i in self.vote], 1)
            logits = self.head(feats) if o["negatives"] == "hard" else None
        y_neg = sample_negatives(y, k, o["negatives"], self.ctx.generator, logits)
        labels = F.one_hot(torch.stack([y, y_neg]), k).to(x.dtype) * self.label_value
        stats, total = {}, 0.0
        h = None
        for i, lin in enumerate(self.linears[:max(self.training_layers) + 1]):
            learn = i in self.training_layers
            with torch.set_grad_enabled(learn):
                if i == 0:
                    z = self._first(ssq, base, labels).flatten(0, 1)
                else:
                    z = F.linear(self._normalise(h), lin.weight, lin.bias)
                h = _StraightReLU.apply(z) if learn else z.relu()
            if learn:
                g = self._good(h)
                loss = ff_loss(g[:b], g[b:], self.thetas[i])
                if o["peer_weight"]:
                    m = o["peer_momentum"] * getattr(self, f"peer_mean{i}") + (1 - o["peer_momentum"]) * h[:b].mean(0)
                    loss = loss + o["peer_weight"] * peer_loss(m)
                step(self.opts[i], loss)  # this layer's graph is freed before the next layer's forward
                if o["peer_weight"]:
                    getattr(self, f"peer_mean{i}").copy_(m.detach())
                g = g.detach() / self.thetas[i]
                stats.update({f"loss.unit{i + 1}": loss.detach(), f"goodness_pos.unit{i + 1}": g[:b].mean(),
                              f"goodness_neg.unit{i + 1}": g[b:].mean()})
                total = total + loss.detach()
            h = h.detach()
        head_loss = F.cross_entropy(self.head(feats), y)  # after the layers: its graph is not held meanwhile
        step(self.head_opt, head_loss)
        stats["loss.head"] = head_loss.detach()
        stats["loss"] = total + stats["loss.head"]
        return stats

    @torch.no_grad()
    def evaluate(self, x):
        k = self.num_classes
        if len(x) * k > 2 ** 14:  # bound the B*K rows of one pass (K = 100 would otherwise take GBs)
            parts = [self.evaluate(c) for c in x.split(max(1, 2 ** 14 // k))]
            return ({r: torch.cat([p[0][r] for p in parts]) for r in parts[0][0]},
                    [torch.cat([p[1][i] for p in parts]) for i in range(len(self.linears))])
        ssq, base = self._image(x)
        logits = self.head(torch.cat([self._neutral(ssq, base)[i] for i in self.vote], 1))
        eye = torch.eye(k, device=x.device, dtype=x.dtype)[:, None, :] * self.label_value
        z = self._first(ssq, base, eye).flatten(0, 1)  # (K*B, N), label-major
        scores = []
        for i, lin in enumerate(self.linears):
            if i:
                z = F.linear(self._normalise(h), lin.weight, lin.bias)
            h = z.relu()
            scores.append(self._good(h).view(k, -1).t())  # (B, K) goodness per label
        return {"goodness": sum(scores[i] for i in self.vote), "softmax": logits}, scores

    def predict(self, x):
        return self.evaluate(x)[0]

    def unit_scores(self, x):
        return self.evaluate(x)[1]
