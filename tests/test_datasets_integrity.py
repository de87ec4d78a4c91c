"""Dataset files are checked as they are read, hostile pickles are refused, and a wrong root is an error."""

import gzip
import io
import os
import pickle
import struct

import numpy as np
import pytest
from suites import suite_toml

from ffbench.data import datasets
from ffbench.data.datasets import DataError, DataNotFoundError, cifar10, fetch, mnist, read_idx, verify

RNG = np.random.default_rng(0)


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    return (
        bytes([0, 0, type_code, arr.ndim])
        + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        + arr.astype(np.uint8).tobytes()
    )


def write_mnist(folder, n_train=12, n_test=5, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": RNG.integers(0, 255, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": RNG.integers(0, 255, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, arr in arrays.items():
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(idx_bytes(arr))
        else:
            (folder / name).write_bytes(idx_bytes(arr))
    return folder


def test_good_idx_files_load_plain_and_gzipped(tmp_path):
    raw = mnist(root=str(write_mnist(tmp_path / "gz")), download=False)
    assert raw.train_x.shape == (12, 1, 28, 28) and raw.test_y.tolist() == [0, 1, 2, 3, 4]
    plain = mnist(root=str(write_mnist(tmp_path / "plain", gz=False)), download=False)
    assert plain.train_x.shape == (12, 1, 28, 28)


def test_truncated_gzip_is_named(tmp_path):
    folder = write_mnist(tmp_path / "d")
    f = folder / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    with pytest.raises(DataError, match=rf"{f}: truncated or corrupt gzip"):
        mnist(root=str(folder), download=False)


def test_bad_magic_and_wrong_type_code_are_named(tmp_path):
    f = tmp_path / "x-idx1-ubyte"
    f.write_bytes(b"\x12\x34" + idx_bytes(np.arange(4))[2:])
    with pytest.raises(DataError, match=rf"{f}: not an IDX file \(magic 1234"):
        read_idx(f)
    f.write_bytes(idx_bytes(np.arange(4), type_code=0x0D))
    with pytest.raises(DataError, match="type code 0x0d \\(float\\); only 0x08"):
        read_idx(f)
    f.write_bytes(idx_bytes(np.zeros((2, 2))))
    with pytest.raises(DataError, match="2 dimensions; expected 1"):
        read_idx(f, ndim=1)


def test_short_body_and_trailing_bytes_are_named(tmp_path):
    f = tmp_path / "t10k-images-idx3-ubyte"
    good = idx_bytes(RNG.integers(0, 255, (3, 28, 28)))
    f.write_bytes(good[:-10])
    with pytest.raises(DataError, match=rf"{f}: header says 3x28x28 = 2352 bytes .* holds 2342: short body"):
        read_idx(f)
    f.write_bytes(good + b"\0")
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(f)
    f.write_bytes(good[:9])
    with pytest.raises(DataError, match="header cut short"):
        read_idx(f)


def test_image_and_label_counts_must_agree(tmp_path):
    folder = write_mnist(tmp_path / "d")
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(idx_bytes(np.arange(11) % 10))
    with pytest.raises(DataError, match="holds 12 images but .*train-labels-idx1-ubyte.gz holds 11 labels"):
        mnist(root=str(folder), download=False)


class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the published CIFAR batches: protocol 2, byte strings as
    BINSTRING, numpy arrays through numpy.core.multiarray._reconstruct."""

    def save_bytes(self, obj):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n))
        self.write(obj)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def write_cifar(root, payload=None):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": b"x",
            b"data": RNG.integers(0, 255, (4, 3072), dtype=np.uint8),
            b"labels": [0, 1, 2, 9],
            b"filenames": [b"a.png"] * 4,
        }
        (folder / name).write_bytes(py2_pickle(batch))
    if payload is not None:
        (folder / "test_batch").write_bytes(payload)
    return folder


class Hostile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def test_cifar_good_batches_load(tmp_path):
    folder = write_cifar(tmp_path)
    assert b"numpy.core.multiarray\n_reconstruct" in (folder / "test_batch").read_bytes()
    raw = cifar10(root=str(tmp_path), download=False)
    assert raw.train_x.shape == (20, 3, 32, 32) and raw.train_x.dtype == np.uint8
    assert raw.test_y.tolist() == [0, 1, 2, 9]
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [3]}))
    assert cifar10(root=str(tmp_path), download=False).test_y.tolist() == [3]  # a Python 3 pickle (numpy 2 names)


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": Hostile(marker), b"labels": [0]})
    folder = write_cifar(tmp_path / "root", payload)
    with pytest.raises(DataError, match=rf"{folder / 'test_batch'}: refused to load: .*(posix|os)\.system"):
        cifar10(root=str(tmp_path / "root"), download=False)
    assert not marker.exists()
    pickle.loads(payload)  # the same bytes through plain pickle do run the command: the test is real
    assert marker.exists()


def test_cifar_batch_with_wrong_content_is_named(tmp_path):
    folder = write_cifar(tmp_path, pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}))
    with pytest.raises(DataError, match=r"test_batch: b'data' must be uint8 of shape \(N, 3072\)"):
        cifar10(root=str(tmp_path), download=False)
    (folder / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="test_batch: not a readable CIFAR batch"):
        cifar10(root=str(tmp_path), download=False)


def test_missing_or_mistyped_root_is_an_error_without_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("FFBENCH_DATA", str(tmp_path / "cache"))
    write_mnist(tmp_path / "cache" / "mnist")  # a good copy the loader must NOT fall back to
    assert mnist(download=False).train_x.shape == (12, 1, 28, 28)
    missing = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError, match=rf"dataset 'mnist': root '{missing}' .* does not exist"):
        mnist(root=str(missing), download=False)
    with pytest.raises(DataError, match=r"root must be a folder path \(a string\), got 5 \(int\)"):
        verify("mnist", root=5)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataNotFoundError, match="is not a folder"):
        verify("mnist", root=str(tmp_path / "file"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError, match=rf"not found in {empty}; run"):
        mnist(root=str(empty), download=False)


def test_verify_checks_once_and_names_the_problem(tmp_path):
    folder = write_mnist(tmp_path / "ok")
    verify("mnist", root=str(folder))
    assert datasets.load("mnist", str(folder)) is datasets.load("mnist", str(folder))  # read once per process
    bad = write_mnist(tmp_path / "bad")
    with gzip.open(bad / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(idx_bytes(np.array([0, 1, 2, 3, 12])))
    with pytest.raises(DataError, match=r"dataset 'mnist': test labels span 0\.\.12, outside 0\.\.9"):
        verify("mnist", root=str(bad))
    verify("synthetic")


def test_fetch_of_an_unknown_dataset_lists_what_it_knows():
    with pytest.raises(DataError) as err:
        fetch("bogus")
    msg = str(err.value)
    assert "cannot fetch 'bogus'" in msg
    for name in ("fashion-mnist", "mnist", "digits", "synthetic", "cifar10", "cifar100"):
        assert f"  {name}" in msg
    assert str(datasets.cache_dir("mnist")) in msg and "/usr/share/datasets/fashion-mnist" in msg


def mnist_suite(seeds: list[int], root: str) -> str:
    return suite_toml(
        "roots", datasets=["mnist"], seeds=seeds, widths=[8], extra=f'[datasets.mnist]\nroot = "{root}"\n'
    )


def test_a_relative_root_is_the_suite_files_and_a_cell_never_mixes_data(tmp_path, monkeypatch, capsys):
    from ffbench.cli import main
    from ffbench.record.store import Store

    home = tmp_path / "suites"
    write_mnist(home / "data", n_train=300, n_test=60, gz=False)
    suite, out = home / "roots.toml", tmp_path / "out"
    suite.write_text(mnist_suite([0], "data"))
    elsewhere = tmp_path / "elsewhere"
    write_mnist(elsewhere / "data", n_train=300, n_test=60, gz=False)  # other data under the same relative path
    for cwd in (tmp_path, elsewhere):  # the same suite run from two folders reads the same data
        monkeypatch.chdir(cwd)
        assert main(["run", str(suite), "--out", str(out), "--no-progress", "--device", "cpu", "--no-tracking"]) == 0
    (row,) = Store(out / "results.db").rows("roots")
    data = row["manifest"]["data"]
    assert data["root"] == str((home / "data").resolve()) and len(data["sha256"]) == 64 and row["attempts"] == 1
    # the files under the root change: no run on the new data joins the cell's old one
    write_mnist(home / "data", n_train=300, n_test=60, gz=False)
    suite.write_text(mnist_suite([0, 1], "data"))
    datasets._IDENTITY.clear()  # a new process reads the files anew
    datasets._load.cache_clear()
    capsys.readouterr()
    assert main(["run", str(suite), "--out", str(out), "--no-progress", "--device", "cpu", "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert "bp/mnist/mlp" in err and data["sha256"][:12] in err and "never added to a cell" in err
    assert [r["seed"] for r in Store(out / "results.db").rows("roots")] == [0]


def test_a_root_the_user_names_is_never_written_to(tmp_path, capsys):
    from ffbench.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    suite = tmp_path / "roots.toml"
    suite.write_text(mnist_suite([0], "empty"))
    code = main(["run", str(suite), "--out", str(tmp_path / "out"), "--no-progress", "--no-tracking"])
    err = capsys.readouterr().err
    assert code == 2 and "not found in" in err and str(empty) in err
    assert list(empty.iterdir()) == []  # no folder made, nothing downloaded into it
