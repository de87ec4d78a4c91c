"""Splits, subsets and the device-resident loader.

The train / validation split is carved from the training set with the run's ``split`` stream, the test
set is never touched. Every split is held on the device as one float tensor (normalised once), and an
epoch is one ``randperm`` from the ``order`` stream plus batched tensor augmentation from the
``augment`` stream: no DataLoader, no workers, no host-to-device copies inside the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ffbench.core.config import SplitError, class_problem, split_sizes
from ffbench.core.seeds import Streams
from ffbench.data.datasets import DataError, RawData, load


@dataclass
class Split:
    x: torch.Tensor  # (N, C, H, W) float, normalised
    y: torch.Tensor  # (N,) int64, relabelled to 0..K-1

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Data:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    classes: list[int]  # original labels kept, in new-label order

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def load_raw(name: str, root: str | None = None) -> RawData:
    return load(name, root)  # read, checked and cached once per process, shared with datasets.verify


def _balanced_take(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of an n-sample subset with classes as equal as n allows (remainder to random classes)."""
    classes = np.unique(y)
    per = np.full(len(classes), n // len(classes))
    per[rng.permutation(len(classes))[: n % len(classes)]] += 1
    idx = []
    for c, m in zip(classes, per):
        pool = np.flatnonzero(y == c)
        if m > len(pool):
            raise DataError(
                f"train_subset = {n} needs {m} images of class {c} (class-balanced) but only {len(pool)} "
                f"remain; choose a smaller train_subset"
            )
        idx.append(rng.permutation(pool)[:m])
    return np.sort(np.concatenate(idx))


def prepare(
    name: str,
    streams: Streams,
    device: torch.device,
    *,
    val_size: float | int = 0.1,
    train_subset: int | None = None,
    classes: int | None = None,
    root: str | None = None,
    normalize: str | list | None = None,
    val_split: str | None = None,
    keep_classes: list[int] | None = None,
) -> Data:
    """Load ``name`` and return normalised train / val / test tensors on ``device``.

    val_size: a fraction of the training set (< 1) or a sample count, stratified by class.
    train_subset: keep a class-balanced subset of this many training samples (after the split).
    classes: keep only this many classes, drawn from the ``classes`` stream, relabelled 0..classes-1.
    keep_classes: keep exactly these original labels, relabelled 0..k-1 in the given order (a class split).
    normalize: None (the dataset's statistics), "none" (pixels in [0, 1]) or [means, stds] per channel.
    val_split: None or "stratified" (drawn per seed), or "last" (the last val_size training samples in file
    order, as reference code splits MNIST 50k / 10k).
    """
    if val_split not in (None, "stratified", "last"):
        raise DataError(f"dataset option val_split={val_split!r}; allowed: stratified, last")
    raw = load_raw(name, root)
    trx, try_, tex, tey = raw.train_x, raw.train_y, raw.test_x, raw.test_y
    kept = list(range(raw.num_classes))
    if classes is not None and keep_classes is not None:
        raise DataError("classes and keep_classes are both set; allowed: one of them")
    if keep_classes is not None:
        why = class_problem(keep_classes, raw.num_classes, name)
        if why:
            raise DataError(f"keep_classes = {keep_classes}: {why}")
        kept = list(keep_classes)
    elif classes is not None:
        _split(val_size, None, classes, len(try_), raw.num_classes, name)  # the class count, before drawing
        kept = sorted(streams.numpy("classes").choice(raw.num_classes, classes, replace=False).tolist())
    if len(kept) < raw.num_classes:
        remap = np.full(raw.num_classes, -1)
        remap[kept] = np.arange(len(kept))
        tr_mask, te_mask = np.isin(try_, kept), np.isin(tey, kept)
        trx, try_ = trx[tr_mask], remap[try_[tr_mask]]
        tex, tey = tex[te_mask], remap[tey[te_mask]]

    # stratified validation split from the `split` stream
    rng = streams.numpy("split")
    n_val, _ = _split(
        val_size, train_subset, len(kept) if len(kept) < raw.num_classes else None, len(try_), raw.num_classes, name
    )
    val_idx = np.arange(len(try_) - n_val, len(try_)) if val_split == "last" else _balanced_take(try_, n_val, rng)
    train_mask = np.ones(len(try_), bool)
    train_mask[val_idx] = False
    train_idx = np.flatnonzero(train_mask)
    if train_subset is not None:
        train_idx = train_idx[_balanced_take(try_[train_idx], train_subset, streams.numpy("subset"))]

    mean_std = (raw.mean, raw.std) if normalize is None else ((0.0,), (1.0,)) if normalize == "none" else normalize
    if not (
        isinstance(mean_std, (list, tuple))
        and len(mean_std) == 2
        and all(len(v) in (1, trx.shape[1]) for v in mean_std)
    ):
        raise DataError(
            f"dataset option normalize={normalize!r}; allowed: none, or [means, stds] with 1 or "
            f"{trx.shape[1]} values each"
        )
    mean = torch.tensor(mean_std[0], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(mean_std[1], dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def to_split(x: np.ndarray, y: np.ndarray) -> Split:
        xt = torch.tensor(x, dtype=torch.float32, device=device) / raw.scale  # a copy: x is the cached array
        return Split(((xt - mean) / std).contiguous(), torch.as_tensor(y, dtype=torch.long, device=device))

    return Data(
        name,
        to_split(trx[train_idx], try_[train_idx]),
        to_split(trx[val_idx], try_[val_idx]),
        to_split(tex, tey),
        len(kept),
        kept,
    )


def _split(val_size, train_subset, classes, n_train: int, num_classes: int, name: str) -> tuple[int, int]:
    """``config.split_sizes`` on the loaded data (the planner checked the card's sizes, if it has them)."""
    try:
        return split_sizes(val_size, train_subset, classes, n_train=n_train, num_classes=num_classes, dataset=name)
    except SplitError as exc:
        raise DataError(str(exc)) from None


def augment_batch(x: torch.Tensor, gen: torch.Generator, crop_padding: int = 0, flip: bool = False) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip, as batched tensor ops (one draw per image)."""
    n, _, h, w = x.shape
    if crop_padding:
        p = crop_padding
        padded = F.pad(x, (p, p, p, p))
        dx = torch.randint(0, 2 * p + 1, (n,), generator=gen, device=x.device)
        dy = torch.randint(0, 2 * p + 1, (n,), generator=gen, device=x.device)
        rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        chan = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        x = padded[batch, chan, rows, cols]
    if flip:
        mask = torch.rand(n, generator=gen, device=x.device) < 0.5
        x = torch.where(mask.view(n, 1, 1, 1), x.flip(3), x)
    return x


class DeviceLoader:
    """Mini-batches over a device-resident split. One permutation per epoch from ``order_gen``."""

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        order_gen: torch.Generator | None = None,
        augment_gen: torch.Generator | None = None,
        crop_padding: int = 0,
        flip: bool = False,
        drop_last: bool = True,
    ):
        self.split, self.batch_size = split, batch_size
        self.order_gen, self.augment_gen = order_gen, augment_gen
        self.crop_padding, self.flip = crop_padding, flip
        # a last batch of a few samples would give BatchNorm and FF statistics noise; drop it while training
        self.drop_last = drop_last and len(split) > batch_size

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        x, y = self.split.x, self.split.y
        if self.order_gen is not None:
            perm = torch.randperm(len(y), generator=self.order_gen, device=self.order_gen.device)
            perm = perm.to(y.device)
            x, y = x[perm], y[perm]
        augment = self.augment_gen is not None and (self.crop_padding or self.flip)
        for i in range(len(self)):
            s = slice(i * self.batch_size, (i + 1) * self.batch_size)
            xb = augment_batch(x[s], self.augment_gen, self.crop_padding, self.flip) if augment else x[s]
            yield xb, y[s]
