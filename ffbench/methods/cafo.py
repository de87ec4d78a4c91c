"""CaFo, Cascaded Forward (Zhao, Wang, Li, Jin, Lang, Ling 2023, arXiv 2303.09728), following
docs/methods/notes/cafo.md §13.

The backbone's blocks (on ``cnn`` with channels [32, 128, 512], a pool after every layer: conv3x3 -> ReLU ->
max-pool -> BatchNorm, as the official code) keep their random initialisation and are never trained. Each block
has a bias-free linear predictor on its flattened, detached output, trained with cross-entropy, squared error or
the sparsemax loss; labels reach the predictors only, and no gradient reaches a block. Inference sums the
predictors' probabilities (softmax, or sparsemax under the sparsemax loss). BatchNorm normalises with the training
set's statistics at test time by default (cumulative running averages, valid since the blocks are fixed);
``bn = "batch"`` is the code's transductive behaviour (every batch, the test set too, by its own statistics).

``cafo`` trains each predictor per mini-batch with the run's optimizer: an online approximation [INF] of the
code's offline fit, whose seeds train stacked. ``cafo.ce``, ``cafo.mse`` and ``cafo.sl`` are the code's fits
(its ``--loss_fn`` CE, MSE, SL): one training step per epoch reads the whole training set (``batch_size`` at
least its size; ``skip`` refuses less), computes each block's features for all of it, block after block, and
fits that block's predictor on them: ``fit_steps`` full-batch steps of the run's optimizer (the code: plain
gradient descent, lr 0.01, 5000 steps, weights from all ones) or, for the squared error, the closed form. The fit
is inside the training step, so its time is training time.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ffbench.core.config import split_sizes
from ffbench.core.method import LocalMethod, method_card, step, variant
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
        str,
        "ones",
        "predictor init: all ones, zeros, nn.Linear's",
        choices=("ones", "zeros", "linear"),
        source="code: ones",
    ),
}
_FIT_OPTIONS = {
    **_OPTIONS,
    "fit": Option(
        str,
        "steps",
        "whole-set fit: full-batch steps, or closed form (mse)",
        choices=("steps", "closed_form"),
        source="code: steps for CE and SL, closed form for MSE",
    ),
    "fit_steps": Option(int, 5000, "full-batch optimizer steps per epoch (fit = 'steps')", ge=1, source="code: 5000"),
    "ridge": Option(float, 0.0, "ridge added to Z'Z in the closed form (fp64)", ge=0, source="[INF]; code: 0"),
}
_COMMON = {
    "w_init": ("ones", "§13.1: predictor weights start at all ones [CODE model.py]"),
    "bn": ("batch", "§13.6.1: BatchNorm in train mode, the test set as one batch [CODE model.py]"),
    "eval_batch_size": (10000, "§13.2: the test set as one batch [CODE loader.py]"),
    "dataset.normalize": (
        ByDataset({"mnist": [[0.1307], [0.3081]], "cifar10": [[0.5] * 3, [0.5] * 3]}),
        "§13.2: Normalize per dataset, no augmentation [CODE loader.py]",
    ),
    "backbone.channels": ([32, 128, 512], "§13.1: 3 blocks, 32 * 4^(i-1) channels [CODE block.py]"),
    "backbone.pool": ([0, 1, 2], "§13.1: a 2x2 max-pool in every block [CODE block.py]"),
    "backbone.kernel": (3, "§13.1: conv 3x3, padding 1 [CODE block.py]"),
    "backbone.bn": ("inside", "§13.1: conv -> ReLU -> max-pool -> BatchNorm(eps 1e-4) [CODE block.py]"),
}
_WHOLE_SET = {
    **_COMMON,
    "batch_size": (60000, "§13.2: the whole training set as one batch (the code's 50,000: all it trains on) [CODE]"),
    "val_size": (
        ByDataset({"mnist": 10000, "fashion-mnist": 10000, "cifar10": 5000}),
        "§13.2: MNIST: a random 50k of the 60k, the rest unused [CODE loader.py]; CIFAR-10: all 50k, no "
        "validation (here 5k held out) [CODE]",
    ),
    "epochs": (1, "§13.2: one feature pass, then each predictor's fit [CODE model.py]"),
}
_STEPS = {
    **_WHOLE_SET,
    "fit": ("steps", "§13.1: full-batch gradient descent with a hand-written gradient [CODE model.py]"),
    "fit_steps": (5000, "§13.2: 5000 full-batch epochs [README]"),
    "optimizer": ("sgd", "§13.1: plain gradient descent [CODE model.py]"),
    "momentum": (0.0, "§13.1: no momentum [CODE model.py]"),
    "lr": (0.01, "§13.2: step 0.01 (--step is never passed) [CODE train.py]"),
    "weight_decay": (0.0, "§13.2: lambda = 0 (--lamda is never passed) [CODE train.py]"),
}
_NOTES = (
    "The blocks are the backbone's units, frozen at their random initialisation (in no optimizer); BatchNorm keeps "
    "cumulative running averages (momentum None), i.e. the training set's statistics, used at test under bn='train' "
    "[INF: the code normalises the test set by its own statistics, bn='batch']. cafo (online [INF]) trains each "
    "predictor per mini-batch with the run's optimizer; third-party replications train such a head with Adam [SEC]. "
    "cafo.ce/.mse/.sl fit on the whole training set in one step per epoch: features by chunks of 2000 images, under "
    "bn='train' after a pass that gathers the statistics; under bn='batch' each chunk is normalised by its own "
    "statistics (the code: the 50k batch's). The closed form accumulates Z'Z in fp64 and falls back to the "
    "pseudo-inverse when Z'Z is singular (as the code); ridge [INF] adds lambda I. The code's 'BP' loss (Adam on a "
    "CE head) is cafo.ce with optimizer adam (its eps 1e-4 aside). Blocks trained by DFA (a third-party variant [SEC]) are not offered."
)
_CARD = dict(
    notes=_NOTES,
    family="cafo",
    paper="Zhao et al. 2023, 'The Cascaded Forward Algorithm for Neural Network Training', arXiv 2303.09728 "
    "(docs/methods/notes/cafo.md §13)",
    code="Graph-ZKY/CaFo @b2cccf3a (no licence: facts only)",
    rules=("sum", "last"),
    capabilities=frozenset({"any-backbone", "unit-heads", "fixed-projection"}),
)


@method_card(
    name="cafo",
    summary="Cascaded Forward: random blocks never trained, a bias-free linear predictor per block trained on its "
    "detached features, per mini-batch with the run's optimizer [INF]; probabilities summed over blocks",
    options=_OPTIONS,
    defaults={"optimizer": "adam", "lr": 1e-3, "batch_size": 128, "schedule": "constant"},
    recipes={"reference": {**_COMMON, "loss": ("ce", "§13.1: --loss_fn CE in the README's commands [README]")}},
    tuning_space={"lr": ("log", 1e-4, 1e-2)},
    **_CARD,
)
class CaFo(LocalMethod):
    adapt_modes = ("linear-probe", "local-heads-only")  # the blocks never train
    probe_rule = "last"

    def __init__(self, backbone, num_classes, options, ctx):
        for p in backbone.parameters():  # random blocks, in no optimizer: each unit's trains its predictor only
            p.requires_grad_(False)
        for m in backbone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = None  # every batch's statistics weighted equally: the training set's (fixed blocks)
                if options["bn"] == "batch":
                    m.track_running_stats = False
                    m.running_mean = m.running_var = m.num_batches_tracked = None
        super().__init__(backbone, num_classes, options, ctx)

    def make_head(self, k, shape):
        linear = nn.Linear(math.prod(shape), self.num_classes, bias=False)
        if self.options["w_init"] != "linear":
            nn.init.constant_(linear.weight, float(self.options["w_init"] == "ones"))
        return nn.Sequential(nn.Flatten(), linear)

    def unit_loss(self, k, scores, y, h):
        return head_loss(self.options["loss"], scores, y)

    def rules(self, scores, features):
        sl = self.options["loss"] == "sl"
        return {"sum": sum(sparsemax(s)[0] if sl else s.softmax(1) for s in scores), "last": scores[-1]}


@method_card(
    name="cafo.ce",
    summary="Cascaded Forward as its code fits it (--loss_fn CE): per epoch one step on the whole training set, "
    "block after block its features for every image, then its predictor by full-batch gradient descent on CE",
    options=_FIT_OPTIONS,
    defaults={"optimizer": "sgd", "momentum": 0.0, "lr": 0.01, "batch_size": 60000, "epochs": 1},
    recipes={"reference": {**_STEPS, "loss": ("ce", "§13.1: --loss_fn CE [CODE train.py]")}},
    **_CARD,
)
class CaFoWholeSet(CaFo):
    seed_batching = False  # its one step is the whole fit: a stacked first-step check would repeat it per seed

    @classmethod
    def skip(cls, config):
        o, sizes = {**cls.card.defaults, **config.method_options}, DATASETS.get(config.dataset).card.defaults
        if o["fit"] == "closed_form" and o["loss"] != "mse":
            return f"{config.method}: fit = 'closed_form' solves the squared error; set loss = 'mse' or fit = 'steps'"
        if "n_train" in sizes and not (config.classes or config.keep_classes):
            n, k = sizes["n_train"], sizes["num_classes"]
            rows = config.train_subset or split_sizes(config.val_size, None, None, n_train=n, num_classes=k)[1]
            if config.batch_size < rows:
                return (
                    f"{config.method} fits on the whole training set in one step: batch_size {config.batch_size} "
                    f"is below its {rows} images; set batch_size >= {rows}"
                )
        return None

    def train_step(self, x, y):
        stats, h = {}, x
        for k, unit in enumerate(self.backbone.units):
            with torch.no_grad():
                if any(getattr(m, "track_running_stats", False) for m in unit.modules()):
                    for rows in h.split(CHUNK):  # the training set's statistics first, then the features under them
                        unit(rows)
                    unit.eval()
                out = h.new_empty(len(h), *self.backbone.out_shapes[k])  # one copy of the features, filled
                for i in range(0, len(h), CHUNK):
                    out[i : i + CHUNK] = unit(h[i : i + CHUNK])
                h = out
                unit.train(self.training)
            if self.active[k]:  # a predictor held fixed (a transfer's linear probe) is not fitted again
                stats[f"loss.unit{k + 1}"] = self.fit_head(k, h.flatten(1), y)
        return {"loss": sum(stats.values()), **stats}

    def fit_head(self, k, z, y):
        """Predictor k on the whole set's features ``z``: closed form (fp64 normal equations, the pseudo-inverse
        when singular, as the code) or ``fit_steps`` full-batch steps of unit k's optimizer."""
        o, linear = self.options, self.heads[k][1]
        if o["fit"] == "closed_form":
            gram = o["ridge"] * torch.eye(z.shape[1], dtype=torch.float64, device=z.device)
            target = 0
            for zc, yc in zip(z.split(CHUNK), y.split(CHUNK)):  # fp64 by chunks: no fp64 copy of every feature
                zc = zc.double()
                gram, target = gram + zc.T @ zc, target + zc.T @ F.one_hot(yc, self.num_classes).double()
            try:
                w = torch.linalg.solve(gram, target)
            except torch.linalg.LinAlgError:
                w = torch.linalg.pinv(gram, hermitian=True) @ target
            with torch.no_grad():
                linear.weight.copy_(w.T)
        for _ in range(o["fit_steps"] if o["fit"] == "steps" else 0):
            step(self.opts[k], head_loss(o["loss"], linear(z), y))
        with torch.no_grad():
            return head_loss(o["loss"], linear(z), y)


variant(
    CaFoWholeSet,
    name="cafo.mse",
    summary="Cascaded Forward as its code fits it (--loss_fn MSE): each predictor in closed form, the least-squares "
    "solution on the whole training set's features (fp64 normal equations)",
    defaults={"loss": "mse", "fit": "closed_form"},
    recipes={
        "reference": {
            **_WHOLE_SET,
            "loss": ("mse", "§13.1: --loss_fn MSE [CODE train.py]"),
            "fit": ("closed_form", "§13.1: W = (Z'Z)^-1 Z'Y, solve or pseudo-inverse [CODE model.py]"),
        }
    },
)
variant(
    CaFoWholeSet,
    name="cafo.sl",
    summary="Cascaded Forward as its code fits it (--loss_fn SL): full-batch gradient descent on the sparsemax loss, "
    "sparsemax probabilities summed over blocks",
    defaults={"loss": "sl"},
    recipes={
        "reference": {**_STEPS, "loss": ("sl", "§13.1: --loss_fn SL, gradient sparsemax(ZW) - Y [CODE model.py]")}
    },
)
