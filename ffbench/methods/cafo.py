"""CaFo, Cascaded Forward (Zhao, Wang, Li, Jin, Lang, Ling 2023, arXiv 2303.09728), following zoo.md §5.

The backbone's blocks (on ``cnn`` with channels [32, 128, 512], a pool after every layer: conv3x3 -> ReLU ->
max-pool -> BatchNorm, as the official code) keep their random initialisation and are never trained. Each block
has a bias-free linear predictor on its flattened, detached output, trained with cross-entropy, squared error or
the sparsemax loss; labels reach the predictors only. Inference sums the predictors' probabilities (softmax, or
sparsemax under the sparsemax loss). The BatchNorm layers normalise with the training set's statistics at test
time by default (cumulative running averages); ``bn = "batch"`` is the code's transductive behaviour (every batch,
the test set too, normalised by its own statistics).

``cafo`` trains each predictor per mini-batch with the run's optimizer, an online approximation [INF] of the
paper's offline fit that seeds can train stacked. ``cafo.fullbatch`` is the code's fit: its one training step per
epoch reads the whole training set (``batch_size`` at least its size), computes each block's features for all of it
block after block, and fits that block's predictor on them, in closed form (``fit = "closed_form"``, squared error)
or by ``fit_steps`` full-batch steps of the run's optimizer (the code: plain gradient descent, lr 0.01, 5000 steps).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffbench.core.config import split_sizes
from ffbench.core.method import LocalMethod, method_card, step
from ffbench.core.options import Option
from ffbench.core.registry import DATASETS, ByDataset

LOSSES = ("ce", "mse", "sl")
CHUNK = 2000  # rows per block forward in the whole-set fit (memory only)


def sparsemax(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sparsemax(z), its threshold tau) per row: the Euclidean projection of z onto the simplex."""
    s = z.sort(1, descending=True).values
    cum = s.cumsum(1)
    k = torch.arange(1, z.shape[1] + 1, device=z.device, dtype=z.dtype)
    size = (1 + k * s > cum).sum(1, keepdim=True)
    tau = (cum.gather(1, size - 1) - 1) / size
    return (z - tau).clamp(min=0), tau


def head_loss(kind: str, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over rows of CE, the squared error to the one-hot label, or the sparsemax loss
    -z_y + (sum over the support of z_j^2 - tau^2) / 2 + 1/2, whose gradient is sparsemax(z) - onehot(y)."""
    if kind == "ce":
        return F.cross_entropy(scores, y)
    onehot = F.one_hot(y, scores.shape[1]).to(scores.dtype)
    if kind == "mse":
        return (scores - onehot).pow(2).sum(1).mean()
    _, tau = sparsemax(scores)
    support = (scores > tau).to(scores.dtype)
    return (0.5 * ((scores**2 - tau**2) * support).sum(1) - (scores * onehot).sum(1) + 0.5).mean()


def probabilities(kind: str, scores: torch.Tensor) -> torch.Tensor:
    return sparsemax(scores)[0] if kind == "sl" else scores.softmax(1)


_OPTIONS = {
    "loss": Option(str, "ce", "predictor loss: CE, squared error, sparsemax", choices=LOSSES, source="code --loss_fn"),
    "bn": Option(
        str,
        "train",
        "BatchNorm at test: the training set's statistics, or each batch's own (the code's)",
        choices=("train", "batch"),
        source="[INF] train; code: batch",
    ),
    "w_init": Option(
        str, "ones", "predictor init: all ones (code), zeros, nn.Linear's", choices=("ones", "zeros", "linear")
    ),
}
_FIT_OPTIONS = {
    "fit": Option(
        str, "steps", "whole-set fit: full-batch steps, or closed form (mse)", choices=("steps", "closed_form")
    ),
    "fit_steps": Option(int, 5000, "full-batch optimizer steps per epoch (fit = 'steps')", ge=1, source="code: 5000"),
    "ridge": Option(float, 0.0, "ridge added to Z'Z in the closed form (fp64)", ge=0, source="[INF]; code: 0"),
}
_COMMON = {
    "loss": ("ce", "§5.1: --loss_fn CE, the README's commands [CODE train.py]"),
    "w_init": ("ones", "§5.1: predictor weights start at all ones [CODE model.py]"),
    "bn": ("batch", "§5.6.1: BatchNorm in train mode, the test set as one batch [CODE model.py]"),
    "eval_batch_size": (10000, "§5.2: the test set as one batch [CODE loader.py]"),
    "dataset.normalize": (
        ByDataset({"mnist": [[0.1307], [0.3081]], "cifar10": [[0.5] * 3, [0.5] * 3]}),
        "§5.2: Normalize per dataset, no augmentation [CODE loader.py]",
    ),
    "backbone.channels": ([32, 128, 512], "§5.1: 3 blocks, 32 * 4^(i-1) channels [CODE block.py]"),
    "backbone.pool": ([0, 1, 2], "§5.1: a 2x2 max-pool in every block [CODE block.py]"),
    "backbone.kernel": (3, "§5.1: conv 3x3, padding 1 [CODE block.py]"),
    "backbone.bn": ("inside", "§5.1: conv -> ReLU -> max-pool -> BatchNorm(eps 1e-4) [CODE block.py]"),
}
_REFERENCE = {
    **_COMMON,
    "fit": ("steps", "§5.1: CE by full-batch gradient descent [CODE model.py]"),
    "fit_steps": (5000, "§5.2: 5000 full-batch epochs [README]"),
    "optimizer": ("sgd", "§5.1: plain gradient descent, hand-written CE gradient [CODE model.py]"),
    "momentum": (0.0, "§5.1: no momentum [CODE model.py]"),
    "lr": (0.01, "§5.2: step 0.01 (--step is never passed) [CODE train.py]"),
    "weight_decay": (0.0, "§5.2: lambda = 0 (--lamda is never passed) [CODE train.py]"),
    "batch_size": (50000, "§5.2: the training set as one batch of 50,000 [CODE loader.py]"),
    "val_size": (10000, "§5.2: a random 50k of MNIST's 60k train; the rest unused, here validation [CODE]"),
    "epochs": (1, "§5.2: one feature pass, then the predictors' fit [CODE model.py]"),
}
_CARD = dict(
    family="cafo",
    paper="Zhao et al. 2023, 'The Cascaded Forward Algorithm for Neural Network Training', arXiv 2303.09728 "
    "(zoo.md §5)",
    code="Graph-ZKY/CaFo @b2cccf3a (no licence: facts only)",
    rules=("sum", "last"),
    capabilities=frozenset({"any-backbone", "unit-heads", "fixed-projection"}),
)


@method_card(
    name="cafo",
    summary="Cascaded Forward: random blocks never trained, a bias-free linear predictor per block trained on its "
    "detached features (per mini-batch [INF]); probabilities summed over blocks",
    options=_OPTIONS,
    defaults={"optimizer": "adam", "lr": 1e-3, "batch_size": 128, "schedule": "constant"},
    recipes={"reference": _COMMON},
    tuning_space={"lr": ("log", 1e-4, 1e-2)},
    **_CARD,
)
class CaFo(LocalMethod):
    adapt_modes = ("linear-probe", "local-heads-only")  # the blocks never train
    probe_rule = "last"

    def __init__(self, backbone, num_classes, options, ctx):
        for p in backbone.parameters():  # random blocks, in no optimizer (each unit's trains its predictor only)
            p.requires_grad_(False)
        for m in backbone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = None  # the statistics of every batch seen, equally weighted: the training set's
                if options["bn"] == "batch":
                    m.track_running_stats, m.running_mean, m.running_var, m.num_batches_tracked = (
                        False,
                        None,
                        None,
                        None,
                    )
        super().__init__(backbone, num_classes, options, ctx)

    def make_head(self, k, shape):
        linear = nn.Linear(math.prod(shape), self.num_classes, bias=False)
        if self.options["w_init"] != "linear":
            nn.init.constant_(linear.weight, 1.0 if self.options["w_init"] == "ones" else 0.0)
        return nn.Sequential(nn.Flatten(), linear)

    def unit_loss(self, k, scores, y, h):
        return head_loss(self.options["loss"], scores, y)

    def rules(self, scores, features):
        return {"sum": sum(probabilities(self.options["loss"], s) for s in scores), "last": scores[-1]}


def _train_rows(config) -> int | None:
    """The training images a run of ``config`` gets (its dataset card's sizes; None where the card has none)."""
    sizes = DATASETS.get(config.dataset).card.defaults
    if "n_train" not in sizes or config.classes or config.keep_classes:
        return None
    return (
        config.train_subset
        or split_sizes(config.val_size, None, None, n_train=sizes["n_train"], num_classes=sizes["num_classes"])[1]
    )


@method_card(
    name="cafo.fullbatch",
    summary="Cascaded Forward as the code fits it: per epoch one step on the whole training set, block after block "
    "its features for all images, then its predictor by full-batch steps or in closed form",
    options={**_OPTIONS, **_FIT_OPTIONS},
    defaults={"optimizer": "sgd", "momentum": 0.0, "lr": 0.01, "batch_size": 60000, "epochs": 1},
    recipes={"reference": _REFERENCE},
    **_CARD,
)
class CaFoFullBatch(CaFo):
    seed_batching = False  # its one step is the whole fit: a stacked first-step check would repeat the fit per seed

    @classmethod
    def skip(cls, config):
        o = {**cls.card.defaults, **config.method_options}
        if o["fit"] == "closed_form" and o["loss"] != "mse":
            return f"{config.method}: fit = 'closed_form' solves the squared error; set loss = 'mse' or fit = 'steps'"
        rows = _train_rows(config)
        if rows is not None and config.batch_size < rows:
            return (
                f"{config.method} fits on the whole training set in one step: batch_size {config.batch_size} is "
                f"below its {rows} images; set batch_size >= {rows}"
            )
        return None

    def train_step(self, x, y):
        stats, h = {}, x
        for k, unit in enumerate(self.backbone.units):
            with torch.no_grad():
                if any(
                    isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in unit.modules()
                ):
                    for rows in h.split(CHUNK):  # the training set's statistics first, then the features under them
                        unit(rows)
                    unit.eval()
                h = torch.cat([unit(rows) for rows in h.split(CHUNK)])
                unit.train(self.training)
            stats[f"loss.unit{k + 1}"] = self.fit_head(k, h.flatten(1), y)
        return {"loss": sum(stats.values()), **stats}

    def fit_head(self, k, z, y):
        """Predictor k on the whole set's features ``z``: closed form (fp64 normal equations, the pseudo-inverse
        when singular, as the code) or ``fit_steps`` full-batch steps of unit k's optimizer."""
        o, linear = self.options, self.heads[k][1]
        if o["fit"] == "closed_form":
            zd = z.double()
            gram = zd.T @ zd + o["ridge"] * torch.eye(z.shape[1], dtype=zd.dtype, device=z.device)
            target = zd.T @ F.one_hot(y, self.num_classes).double()
            try:
                w = torch.linalg.solve(gram, target)
            except torch.linalg.LinAlgError:
                w = torch.linalg.pinv(gram, hermitian=True) @ target
            with torch.no_grad():
                linear.weight.copy_(w.T)
        else:
            for _ in range(o["fit_steps"]):
                step(self.opts[k], head_loss(o["loss"], linear(z), y))
        with torch.no_grad():
            return head_loss(o["loss"], linear(z), y)
