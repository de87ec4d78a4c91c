import gzip
import pickle

import numpy as np
import pytest
import torch

from ffbench.core.seeds import Streams
from ffbench.data.data import DeviceLoader, Split, augment_batch, prepare
from ffbench.data.datasets import DataNotFoundError, cifar10, fashion_mnist, mnist, read_cifar_folder, read_idx

CPU = torch.device("cpu")


def test_split_is_deterministic_per_seed_and_test_is_untouched():
    a = prepare("digits", Streams(0), CPU, val_size=200)
    b = prepare("digits", Streams(0), CPU, val_size=200)
    c = prepare("digits", Streams(1), CPU, val_size=200)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.val.x, c.val.x)
    assert torch.equal(a.test.x, c.test.x)  # the test set never depends on the seed
    assert len(a.val) == 200 and len(a.train) + len(a.val) == 1437 and len(a.test) == 360
    assert a.val.y.bincount().tolist() == [20] * 10  # stratified
    # train and validation are disjoint
    tr = {tuple(r) for r in a.train.x.flatten(1).tolist()}
    assert not any(tuple(r) in tr for r in a.val.x.flatten(1).tolist())


def test_balanced_subset_and_class_subset():
    d = prepare("digits", Streams(3), CPU, val_size=0.1, train_subset=105)
    counts = d.train.y.bincount().tolist()
    assert len(d.train) == 105 and max(counts) - min(counts) <= 1
    k = prepare("digits", Streams(3), CPU, classes=4)
    assert k.num_classes == 4 and len(k.classes) == 4
    assert set(k.train.y.tolist()) == set(range(4)) == set(k.test.y.tolist())
    assert k.classes == prepare("digits", Streams(3), CPU, classes=4).classes
    with pytest.raises(ValueError, match="allowed: 2..10"):
        prepare("digits", Streams(3), CPU, classes=11)


def test_loader_permutes_once_per_epoch_and_is_reproducible():
    split = Split(torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10))
    make = lambda: DeviceLoader(split, 4, order_gen=Streams(5).torch("order"), drop_last=False)
    first = [y.tolist() for _, y in make()]
    assert sorted(sum(first, [])) == list(range(10)) and len(first) == 3
    loader = make()
    e1, e2 = [torch.cat([y for _, y in loader]).tolist() for _ in range(2)]
    assert e1 == sum(first, []) and e1 != e2  # same stream -> same order; each epoch a new permutation
    assert len(DeviceLoader(split, 4)) == 2  # drops the ragged last batch while training


def test_augmentation_crops_within_padding_and_flips():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float).view(2, 1, 5, 5) + 1
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, g, crop_padding=2)
    assert out.shape == x.shape
    for i in range(2):  # every output is the image shifted by at most 2 pixels, zero filled
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        assert any(torch.equal(out[i], padded[:, r : r + 5, c : c + 5]) for r in range(5) for c in range(5))
    flipped = augment_batch(x.repeat(50, 1, 1, 1), torch.Generator().manual_seed(1), flip=True)
    n_flipped = sum(torch.equal(f, x[i % 2].flip(2)) for i, f in enumerate(flipped))
    assert 20 < n_flipped < 80


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_reader_on_generated_files(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 255, (7, 28, 28))
    _write_idx(tmp_path / "imgs.gz", imgs)
    assert np.array_equal(read_idx(tmp_path / "imgs.gz"), imgs)
    for name, arr in (
        ("train-images-idx3-ubyte", imgs),
        ("train-labels-idx1-ubyte", np.arange(7) % 10),
        ("t10k-images-idx3-ubyte", imgs[:3]),
        ("t10k-labels-idx1-ubyte", np.arange(3)),
    ):
        _write_idx(tmp_path / f"{name}.gz", arr)
    raw = mnist(root=str(tmp_path), download=False)
    assert raw.train_x.shape == (7, 1, 28, 28) and raw.test_y.tolist() == [0, 1, 2]


@pytest.mark.parametrize("loader", [fashion_mnist, mnist])
def test_installed_idx_datasets_load(loader):
    # installed by the test set-up (`ffbench data fetch fashion-mnist mnist`)
    raw = loader(download=False)
    assert raw.train_x.shape == (60000, 1, 28, 28) and raw.test_x.shape == (10000, 1, 28, 28)
    assert raw.train_y.min() == 0 and raw.train_y.max() == 9 and np.bincount(raw.test_y).min() >= 890


def test_cifar_reader_on_generated_batches_and_offline_error(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}, f)
    raw = cifar10(root=str(tmp_path), download=False)
    assert raw.train_x.shape == (20, 3, 32, 32) and raw.test_x.shape == (4, 3, 32, 32)
    assert read_cifar_folder("cifar10", folder)[1].tolist() == [0, 1, 2, 3] * 5
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "empty")):
        cifar10(root=str(tmp_path / "empty"), download=False)
