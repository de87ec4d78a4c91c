"""Trifecta (Dooms, Tsang, Oramas 2023, arXiv 2311.18130), following docs/methods/notes/trifecta.md §11: SymBa's
loss, batch normalisation at each block's input, and overlapping local updates (OLU); its CNN is ``cnn.trifecta``
(``ffbench.training.backbones``).

A learned label embedding (one H x W map per class) is concatenated to the image as an extra channel. Each
training batch is ``[x; x]`` with labels ``[y; y_neg]`` (``y_neg`` uniform over the wrong classes), rows
aligned, so BatchNorm's batch statistics cover both halves. A block's goodness is the mean square of its
output; its loss is SymBa's ``softplus(-alpha (G+ - G-))`` over the aligned pairs (or FF's with threshold tau).
Under OLU the blocks step in turns (``grad_window = 2``): on batch t (counted from the epoch's start) block k
steps iff k + t is odd, its loss back-propagating through the block before it, which hands on inside the
graph; block k's Adam holds the previous block's parameters and its own (block 0's: the embedding's), so
every parameter has two optimizers with their own moments. ``olu = false`` detaches every block (strict FF).
Inference: K passes, one per label; the prediction is the argmax of the last block's goodness (``last``) or
of the mean over blocks (``all``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ffbench.core.method import LocalMethod, method_card, variant
from ffbench.core.options import Option
from ffbench.core.registry import ByDataset
from ffbench.methods.goodness import ff_loss, sample_negatives, symba_loss

_CODE = "tdooms/trifecta main.py"
_OPTIONS = {
    "olu": Option(bool, True, "overlapping local updates (false: every block detached)", source=f"{_CODE}: olu"),
    "loss": Option(str, "symba", "SymBa's loss, or FF's with threshold tau", choices=("symba", "ff"), source=_CODE),
    "alpha": Option(float, 4.0, "SymBa's scale", gt=0, source=f"{_CODE}: alpha"),
    "tau": Option(float, 2.0, "FF's threshold (loss = ff)", gt=0, source=f"{_CODE}: tau"),
    "embedding": Option(
        str, "learned", "the label embedding trains or keeps its init", choices=("learned", "fixed"), source=_CODE
    ),
    "rule": Option(
        str, "last", "the rule reported: the last block, or all blocks", choices=("last", "all"), source=_CODE
    ),
}
_NORMALIZE = {"mnist": [[0.1307], [0.3081]], "fashion-mnist": [[0.2860], [0.3530]]}
_NORMALIZE["cifar10"] = [[0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]]
# tdooms/trifecta @6890438e main.py (docs/methods/notes/trifecta.md §11.1-§11.3). Not expressible here, so left out:
# RandomRotation(15), 16-bit mixed precision, drop_last, and validation on the test set (ffbench validates on a split
# of train).
# The model is the suite's: cnn.trifecta's defaults are the reference's 'small', its notes give 'large'.
_REFERENCE = {
    "optimizer": ("adam", "§11.2: Adam per block"),
    "lr": (1e-3, "§11.2: Config.lr 1e-3"),
    "weight_decay": (0.0, "§11.2: no weight decay"),
    "schedule": ("constant", "§11.2: no schedule"),
    "batch_size": (512, "§11.2: Config.batch_size 512"),
    "crop_padding": (4, "§11.2: RandomCrop(pad 4) on every dataset (its RandomRotation(15) is not available)"),
    "dataset.normalize": (ByDataset(_NORMALIZE), "§11.2: Normalize with the listed mean and std"),
    "backbone.norm": ("bn", "§11.1: Config.bn true"),
    "olu": (True, "§11.1: Config.olu true"),
    "loss": ("symba", "§11.1: Config.alpha 4 (None would be FF's loss)"),
    "alpha": (4.0, "§11.1: Config.alpha 4"),
    "embedding": ("learned", "§11.1: Config.learned true"),
    "rule": ("last", "§11.3: ensemble slice(-1, None), the last block"),
}


@method_card(
    name="trifecta",
    family="trifecta",
    recipes={"reference": _REFERENCE},
    summary="Trifecta: FF on cnn.trifecta with a learned label-embedding channel, SymBa's symmetric loss on "
    "aligned positive/negative pairs, BatchNorm at each block's input, overlapping local updates (a block's "
    "loss reaches the block before it, blocks stepping in turns); inference by goodness per label",
    paper="Dooms, Tsang, Oramas 2023, 'The Trifecta: Three simple techniques for training deeper Forward-Forward "
    "networks', arXiv 2311.18130 (docs/methods/notes/trifecta.md §11)",
    code="tdooms/trifecta main.py (no licence: facts only)",
    defaults={"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "batch_size": 512, "schedule": "constant"},
    options=_OPTIONS,
    rules=("last", "all"),
    rule_option="rule",
    capabilities=frozenset({"conv", "backbones:cnn.trifecta", "negatives", "label-in-input", "unit-scores"}),
    tuning_space={"lr": ("log", 1e-4, 1e-2)},
    notes="OLU is block-wise backpropagation over two blocks (DeeperForward marks it so): report olu = true and "
    "olu = false as different methods. The backbone's label_channels must be 1. BatchNorm statistics are "
    "taken over the positive and negative rows together, as the reference does.",
)
class Trifecta(LocalMethod):
    adapt_modes = ("last-k-units", "fine-tune")  # no head or read-out has parameters

    @classmethod
    def skip(cls, config):
        if config.backbone_options.get("label_channels", 1) != 1:
            return "trifecta writes its label embedding into one input channel: set backbone label_channels = 1"
        return None

    def __init__(self, backbone, num_classes, options, ctx):
        self.grad_window = 2 if options["olu"] else 1
        super().__init__(backbone, num_classes, options, ctx)

    def head_shapes(self):
        # the embedding exists before the unit optimizers: unit 0's holds it
        self.embedding = nn.Embedding(self.num_classes, self.backbone.in_shape[1] * self.backbone.in_shape[2])
        self.embedding.weight.requires_grad_(self.options["embedding"] == "learned")
        return super().head_shapes()

    def make_head(self, k, shape):
        return nn.Identity()  # a block's scores are its goodness per row

    def unit_params(self, k):
        """The block before (block 0: the embedding) and block k, as in the reference with or without OLU."""
        prev = self.backbone.units[k - 1] if k else self.embedding
        return [*prev.parameters(), *self.backbone.units[k].parameters()]

    def unit_outputs(self, k, x):
        if k == 0:
            x = torch.cat([x, self.embedding(self.labels).view(-1, 1, *x.shape[2:])], 1)
        h = self.backbone.units[k](x)
        return h.pow(2).flatten(1).mean(1), h

    def unit_loss(self, k, scores, y, h):
        pos, neg = scores.chunk(2)  # this seed's [positive; negative] rows, aligned
        o = self.options
        loss = symba_loss(pos, neg, o["alpha"]) if o["loss"] == "symba" else ff_loss(pos, neg, o["tau"])
        return {"loss": loss, "goodness_pos": pos.detach().mean(), "goodness_neg": neg.detach().mean()}

    def train_step(self, x, y):
        y_neg = self.ctx.draw(lambda g, t: sample_negatives(t, self.num_classes, "uniform", g), y)
        self.labels = pairs(y, y_neg, self.ctx.seeds)
        return super().train_step(pairs(x, x, self.ctx.seeds), y)

    def rules(self, scores, features):
        return {"last": scores[-1], "all": torch.stack(scores).mean(0)}

    @torch.no_grad()
    def evaluate(self, x):
        goodness = []  # per label: each block's goodness (units, B)
        for label in range(self.num_classes):
            self.labels, h, per_unit = torch.full(x.shape[:1], label, device=x.device), x, []
            for k in range(len(self.backbone.units)):
                g, _, h = self.forward_unit(k, h)
                per_unit.append(g)
            goodness.append(torch.stack(per_unit))
        scores = list(torch.stack(goodness, -1))  # per block: (B, K)
        return self.rules(scores, []), scores


variant(
    Trifecta,
    name="trifecta.local",
    summary="Trifecta without overlapping local updates (the reference's olu = false): every block detached, "
    "strict forward-forward; the ablation OLU is measured against",
    defaults={"olu": False},
    recipes={"reference": {**_REFERENCE, "olu": (False, "§11.1: Config.olu false, 'layer-wise'")}},
)


def pairs(a: torch.Tensor, b: torch.Tensor, seeds: int) -> torch.Tensor:
    """Seed-major rows of ``a`` and ``b`` -> each seed's rows of ``a`` followed by its rows of ``b``."""
    return torch.cat([a.unflatten(0, (seeds, -1)), b.unflatten(0, (seeds, -1))], 1).flatten(0, 1)
