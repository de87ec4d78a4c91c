"""Bad input is refused before anything trains, with one clear line and no traceback; plugins that fail to
import, interrupts, divergence and the MLflow UI's server are handled as outcomes, not crashes."""

import errno
import gzip
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from suites import suite_toml

from ffbench.cli import listing, main
from ffbench.cli.run import parse_seeds
from ffbench.core.config import RunConfig
from ffbench.core.registry import Registry, UnknownNameError
from ffbench.training.train import DIVERGED, divergence, fit

GOOD = suite_toml(datasets=["digits"], batch_size=None)


def suite_file(tmp_path, extra="", edit=None, name="s.toml"):
    """GOOD with ``edit`` (one (old, new) pair, or a list of them) applied and ``extra`` appended."""
    text = GOOD
    for old, new in [edit] if isinstance(edit, tuple) else edit or []:
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text + extra)
    return path


def claimed(out: Path, finished: bool = False) -> int:
    """Rows of the store that any worker claimed or finished (``finished``: that reached an outcome, done, failed
    or pruned); 0 when there is no store at all."""
    db = out / "results.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as c:
        if not c.execute("select name from sqlite_master where name = 'runs'").fetchone():
            return 0
        where = "status in ('done', 'failed', 'pruned')" if finished else "status != 'pending'"
        return c.execute(f"select count(*) from runs where {where}").fetchone()[0]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_idx(path: Path, dims: list[int], body: bytes | None = None) -> None:
    header = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    n = 1
    for d in dims:
        n *= d
    path.write_bytes(header + (body if body is not None else bytes(n)))


# ---------------------------------------------------------------- the suite, checked before anything trains
# (extra TOML, edit of the base, what the message must name)
CASES = [
    ("", ("widths = [16]", "widths = [-5]"), ['[backbones."mlp"].widths', "-5", "an integer in [1, 1048576]"]),
    (
        "",
        [('backbones = ["mlp"]', 'backbones = ["cnn"]'), ("mlp]\nwidths = [16]", "cnn]\nchannels = [0, 0]")],
        ['[backbones."cnn"].channels', "element 0", "an integer in [1, 1048576]"],
    ),
    ("", ("epochs = 1", "epochs = 1\nclasses = 11"), ["[train].classes", "digits has 10 classes", "2..10"]),
    ("", ("epochs = 1", "epochs = 1\ntrain_subset = 1000000"), ["[train].train_subset", "1000000", "10..1293"]),
    ("", ("epochs = 1", "epochs = 1\nval_size = 100000"), ["[train].val_size", "100000", "1..1427"]),
    ("", ("epochs = 1", "epochs = 1\nval_size = 1.5"), ["[train].val_size", "1.5", "a fraction in (0, 1)"]),
    ("", ("epochs = 1", "epochs = 1\nval_size = 0.0001"), ["[train].val_size", "gives 0 validation images"]),
    ("", ("epochs = 1", "lr = inf\nepochs = 1"), ["[train].lr", "inf", "finite"]),
    ("", ("epochs = 1", "epochs = 1e9"), ["[train].epochs", "expected int"]),
    ("", ("epochs = 1", "epochs = 1000000000"), ["[train].epochs", "[1, 100000]"]),
    ("[methods.bp]\ntrain_subset = 1300\n", None, ['[methods."bp"].train_subset', "10..1293"]),
    ("[datasets.digits]\nval_size = 2000\n", None, ['[datasets."digits"].val_size', "1..1427"]),
    ("[axes]\ntrain_size = [100, 5000]\n", None, ["[axes].train_size (level 5000)", "10..1293"]),
    ("[datasets.digits]\nroot = 5\n", None, ['[datasets."digits"].root', "reads no files", "allowed: no root"]),
    ('[datasets.digits]\nroot = "no/such/folder"\n', None, ['[datasets."digits"].root', "reads no files"]),
    ("", ("version = 1", 'version = 1\ncontrol = "nonexistent"'), ["[suite].control", "nonexistent", "allowed: bp"]),
    ("", ('name = "t"', 'name = ""'), ["[suite].name", "''", "letters, digits"]),
    ("", ('name = "t"', 'name = "../x"'), ["[suite].name", "'../x'", "ffbench-out/<name>"]),
    ("", ('name = "t"', 'name = "/tmp/abs"'), ["[suite].name", "'/tmp/abs'"]),
    ("", ('name = "t"', 'name = ".."'), ["[suite].name", "'..'"]),
    ('[methods."bp.depsup"]\nlr = 0.1\n', None, ["bp.depsup", "not in [design].methods", "allowed: bp"]),
]
# Values that used to end in a traceback, a method failure recorded for good, or a run that read them wrongly.
TUNING = (
    '[tuning]\ntrials = {trials}\nseeds = [100]\nsampler = "{sampler}"\nsampler_args = {{ {sampler_args} }}\n'
    'pruner = "{pruner}"\npruner_args = {{ {pruner_args} }}\n'
)


def tuning(trials=2, sampler="TPESampler", sampler_args="seed = 0", pruner="NopPruner", pruner_args="") -> str:
    return TUNING.format(
        trials=trials, sampler=sampler, sampler_args=sampler_args, pruner=pruner, pruner_args=pruner_args
    )


def generic_axis(name: str, levels: str = "[0.001, 0.01]") -> str:
    return f'[axes."{name}"]\ntrain_field = "lr"\nlevels = {levels}\n'


def train(line: str) -> tuple[str, str]:
    """The edit that adds ``line`` to GOOD's [train]."""
    return "epochs = 1", f"epochs = 1\n{line}"


# (case, extra TOML, edit of GOOD, what the message must name)
HOSTILE = [
    ("seed 2**63", "", ("seeds = [0]", f"seeds = [{2**63}]"), ["[design].seeds", "0..2147483647"]),
    ("version 2**63", "", ("version = 1", f"version = {2**63}"), ["[suite].version", str(2**63), "1..2147483647"]),
    (
        "a TOML array nested 5,000 deep",
        "x = " + "[" * 5000 + "]" * 5000 + "\n",
        None,
        ["not valid TOML", "nested too deeply"],
    ),
    ("trials = 10**7", tuning(trials=10**7), None, ["[tuning].trials", "10000000", "1..10,000"]),
    (
        'sampler_args n_startup_trials = "x"',
        tuning(sampler_args='seed = 0, n_startup_trials = "x"'),
        None,
        ["[tuning].sampler_args.n_startup_trials", "expected int, got str 'x'"],
    ),
    (
        "sampler_args gamma = 3",
        tuning(sampler_args="seed = 0, gamma = 3"),
        None,
        ["[tuning].sampler_args.gamma", "cannot be given in a suite"],
    ),
    (
        'sampler_args qmc_type = "foo"',
        tuning(sampler="QMCSampler", sampler_args='seed = 0, qmc_type = "foo"'),
        None,
        ["[tuning].sampler_args", "refused by Optuna", "qmc_type='foo'"],
    ),
    (
        "pruner_args n_startup_trials = -1",
        tuning(pruner="MedianPruner", pruner_args="n_startup_trials = -1"),
        None,
        ["[tuning].pruner_args", "refused by Optuna", "n_startup_trials"],
    ),
    (
        'pruner_args n_warmup_steps = "x"',
        tuning(pruner="MedianPruner", pruner_args='n_warmup_steps = "x"'),
        None,
        ["[tuning].pruner_args.n_warmup_steps", "expected int"],
    ),
    ("lr = 1e308", "", train("lr = 1e308"), ["[train].lr", "1e+308", "a number in (0, 10]"]),
    ("lr = 10**50", "", train(f"lr = {10**50}"), ["[train].lr", "a number in (0, 10]"]),
    ("weight_decay = 1e300", "", train("weight_decay = 1e300"), ["[train].weight_decay", "a number in [0, 1]"]),
    (
        "an lr axis level of 1e300",
        generic_axis("lr_level", "[0.001, 1e300]"),
        None,
        ["[axes].lr_level", "1e+300", "a number in (0, 10]"],
    ),
    ("crop_padding = 100000", "", train("crop_padding = 100000"), ["[train].crop_padding", "[0, 1024]"]),
    (
        "crop_padding = 9 on 8x8 digits",
        "",
        train("crop_padding = 9"),
        ["[train].crop_padding", "8-pixel side of digits", "0..8"],
    ),
    (
        "widths = []",
        "",
        ("widths = [16]", "widths = []"),
        ['[backbones."mlp"].widths', "a non-empty list", "[1, 1048576]"],
    ),
    ("widths = [4e9]", "", ("widths = [16]", "widths = [4e9]"), ['[backbones."mlp"].widths', "expected int"]),
    (
        "widths = [4000000000]",
        "",
        ("widths = [16]", "widths = [4000000000]"),
        ['[backbones."mlp"].widths', "[1, 1048576]"],
    ),
    (
        "val_size = 1436 on digits",
        "",
        train("val_size = 1436"),
        ["[train].val_size", "leaving 1 to train 10 classes", "1..1427"],
    ),
    (
        "train_subset = 3 with 10 classes",
        "",
        train("train_subset = 3"),
        ["[train].train_subset", "fewer than the 10 classes", "10..1293"],
    ),
    (
        "a 25,000-character description",
        "",
        ('name = "t"', f'name = "t"\ndescription = "{"x" * 25_000}"'),
        ["[suite].description", "25,000", "at most 5,000"],
    ),
    ("an axis named it's", generic_axis("it's"), None, ["[axes]", '"it\'s" is not allowed', "letters, digits"]),
    ("an axis named ../x", generic_axis("../x"), None, ["[axes]", "'../x' is not allowed", "MLflow key"]),
    ("an axis named seed", generic_axis("seed"), None, ["[axes].seed", "reserved", "run_id, suite, suite_version"]),
    ("an axis named status", generic_axis("status"), None, ["[axes].status", "reserved", "starting with val_acc"]),
    ("an axis named test_acc.rule", generic_axis("test_acc.rule"), None, ["[axes].test_acc.rule", "reserved"]),
]


@pytest.mark.parametrize(
    "extra, edit, expected",
    CASES + [c[1:] for c in HOSTILE],
    ids=[" ".join(c[2][:2]) for c in CASES] + [c[0] for c in HOSTILE],
)
def test_bad_suite_exits_2_naming_file_field_and_allowed_values(tmp_path, capsys, extra, edit, expected):
    path = suite_file(tmp_path, extra, edit)
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", str(path), "--out", str(out), "--no-tracking", "--no-progress")
    assert code == 2, err
    assert err.startswith(f"error: {path}: ") and all(e in err for e in expected), err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    assert not out.exists() and claimed(out) == 0  # planning stopped before the store was even opened


def test_dry_run_checks_the_data_too(tmp_path, capsys):
    path = suite_file(tmp_path, "", ("epochs = 1", "epochs = 1\nval_size = 100000"))
    code, out, err = run_cli(capsys, "run", str(path), "--dry-run")
    assert code == 2 and "[train].val_size" in err and "budget" not in out


def test_sizes_come_from_the_cards_without_loading_data(tmp_path, capsys, monkeypatch):
    """fashion-mnist is not needed on disk to refuse a split it cannot give."""
    import ffbench.data.datasets

    monkeypatch.setattr(ffbench.data.datasets, "_load", lambda *a: pytest.fail("data loaded to check sizes"))
    path = suite_file(
        tmp_path,
        "",
        [
            ('datasets = ["digits"]', 'datasets = ["fashion-mnist"]'),
            ("epochs = 1", "epochs = 1\nval_size = 5000\ntrain_subset = 60000"),
        ],
    )
    code, _, err = run_cli(capsys, "run", str(path), "--dry-run")
    assert code == 2 and "[train].train_subset" in err and "55000 training images of fashion-mnist" in err, err


# ---------------------------------------------------------------- the same in processes of their own
ROOT = Path(__file__).resolve().parent.parent
LIMIT_S = 120
MEMORY_LIMIT = 6 << 30  # a file read without end fails fast instead of filling the machine


def ffbench_process(*argv: str, cwd: Path, root: Path = ROOT, limit_s: int = LIMIT_S) -> subprocess.CompletedProcess:
    """`ffbench ARGV` (of the checkout ``root``) in a process of its own, under `timeout` (a hang fails the case,
    never the CI) and an address-space limit."""
    cmd = [sys.executable, "-m", "ffbench.cli", *argv]
    if shutil.which("timeout"):
        cmd = ["timeout", "-k", "5", str(limit_s), *cmd]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "FFBENCH_THREADS": "1"}
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=limit_s + 30,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT)),
    )


def fifo(path: Path) -> None:
    os.mkfifo(path)  # opened for reading, it waits for a writer that never comes


def dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")  # read to the end, it never ends


def too_large(path: Path) -> None:
    path.write_text(GOOD + "#" * 1_000_001 + "\n")


def idx_bomb(path: Path) -> None:
    """A suite on mnist whose root holds a gzipped IDX file that inflates to 4 GB behind a header announcing
    60000 28x28 images (47 MB): many gzip members of 16 MB of zeros each."""
    root = path.parent / "bomb"
    root.mkdir()
    write_idx(root / "train-labels-idx1-ubyte", [60000])
    write_idx(root / "t10k-images-idx3-ubyte", [10000, 28, 28])
    write_idx(root / "t10k-labels-idx1-ubyte", [10000])
    zeros = gzip.compress(bytes(16 << 20), compresslevel=1)
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (60000, 28, 28))
    with open(root / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(gzip.compress(header, compresslevel=1))
        for _ in range(256):
            f.write(zeros)
    suite_file(
        path.parent,
        f'[datasets.mnist]\nroot = "{root}"\n',
        ('datasets = ["digits"]', 'datasets = ["mnist"]'),
        name=path.name,
    )


# (what, make(suite path), what the message must name)
SUITE_FILES = [
    ("a named pipe (FIFO) as the suite", fifo, ["is a named pipe (FIFO), not a regular file"]),
    ("a link to /dev/zero as the suite", dev_zero, ["is a device or socket, not a regular file"]),
    ("a 1 MB suite file", too_large, ["larger than 1,000,000 bytes", "at most 1 MB"]),
    (
        "a gzip bomb as an IDX file",
        idx_bomb,
        ["train-images-idx3-ubyte.gz", "holds more than 47040000", "trailing bytes"],
    ),
]


@pytest.mark.parametrize("what, make, expected", SUITE_FILES, ids=[c[0] for c in SUITE_FILES])
def test_suite_files_that_are_not_plain_suites(tmp_path, what, make, expected):
    path = tmp_path / "s.toml"
    make(path)
    out = tmp_path / "out"
    r = ffbench_process("run", str(path), "--out", str(out), "--no-tracking", "--no-progress", cwd=tmp_path)
    assert r.returncode == 2 and all(e in r.stderr for e in expected), (r.returncode, r.stderr[-2000:])
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) <= 2, r.stderr
    assert not out.exists() and claimed(out) == 0


def test_idx_headers_that_do_not_fit_the_dataset_are_refused_before_their_data(tmp_path):
    from ffbench.data.datasets import DataError, read_idx

    f = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(f, "wb") as g:
        g.write(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (4_000_000_000, 28, 28)))
    with pytest.raises(DataError, match="4,000,000,000 items; allowed: at most 1,000,000"):
        read_idx(f, ndim=3, item_shape=(28, 28))
    write_idx(tmp_path / "x", [10, 32, 32])
    with pytest.raises(DataError, match="header says 10x32x32; expected N x 28x28"):
        read_idx(tmp_path / "x", ndim=3, item_shape=(28, 28))


try:
    import torch

    CUDA = torch.cuda.is_available()
except ImportError:
    CUDA = False
# command-line values: (arguments after the suite, what the message must name); "report" cases run on a store
OPTIONS = [
    (("run", "--device", "gpu"), ["--device 'gpu': not a device", "allowed: auto", "cuda:N"]),
    (("run", "--device", "foo"), ["--device 'foo': not a device"]),
    (("run", "--device", "cuda:99"), ["--device 'cuda:99'", "allowed: auto"]),
    *([] if CUDA else [(("run", "--device", "cuda"), ["--device 'cuda': this machine has no CUDA device"])]),
    (("run", "--workers", "0"), ["--workers 0", "allowed: 1..256"]),
    (("report", "--resamples", "0"), ["--resamples 0", "100..1,000,000"]),
    (("report", "--suite-version", "99"), ["--suite-version 99", "no runs of that version", "versions there: 1"]),
    (("report", "--alpha", "2"), ["--alpha 2", "strictly between 0 and 1"]),
    (("report", "--rope-pp", "-1"), ["--rope-pp '-1'", "[0, 100)"]),
    (("report", "--metric", "foo"), ["--metric 'foo'", "no such metric", "metrics there:", "test_acc"]),
]


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory):
    """GOOD run once (1 epoch on digits): a store for the report options."""
    tmp = tmp_path_factory.mktemp("store")
    path = suite_file(tmp)
    assert main(["run", str(path), "--out", str(tmp / "out"), "--no-tracking", "--no-progress"]) == 0
    return path, tmp / "out"


@pytest.mark.parametrize("argv, expected", OPTIONS, ids=[" ".join(c[0]) for c in OPTIONS])
def test_command_line_values_are_checked_first(tmp_path, capsys, finished_store, argv, expected):
    command, *rest = argv
    if command == "report":
        path, out = finished_store
        written = lambda: sorted(p for p in out.rglob("*") if not p.name.endswith(("-wal", "-shm", "-journal")))
        before = written()  # SQLite's own side files come and go with open connections
        code, _, err = run_cli(capsys, "report", str(path), "--out", str(out), *rest)
        assert written() == before  # no report written
    else:
        path, out = suite_file(tmp_path), tmp_path / "out"
        code, _, err = run_cli(capsys, "run", str(path), "--out", str(out), "--no-tracking", "--no-progress", *rest)
        assert not out.exists() and claimed(out) == 0
    assert code == 2 and err.startswith("error: ") and all(e in err for e in expected), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_corrupt_idx_files_stop_the_planner(tmp_path, capsys):
    root = tmp_path / "idx"
    root.mkdir()
    write_idx(root / "train-images-idx3-ubyte", [60000, 28, 28], body=b"\0" * 100)  # truncated
    write_idx(root / "train-labels-idx1-ubyte", [60000])
    write_idx(root / "t10k-images-idx3-ubyte", [10000, 28, 28])
    write_idx(root / "t10k-labels-idx1-ubyte", [10000])
    path = suite_file(
        tmp_path, f'[datasets.mnist]\nroot = "{root}"\n', ('datasets = ["digits"]', 'datasets = ["mnist"]')
    )
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", str(path), "--out", str(out), "--no-tracking", "--no-progress")
    assert code == 2 and "train-images-idx3-ubyte" in err and "truncated" in err, err
    assert "Traceback" not in err and claimed(out) == 0


def test_unused_method_section_is_a_warning(tmp_path, capsys):
    path = suite_file(tmp_path, "[methods.sff]\nlr = 0.1\n")
    code, _, err = run_cli(capsys, "run", str(path), "--dry-run")
    assert code == 0 and "warning:" in err and "[methods.'sff'] is not used" in err


# ---------------------------------------------------------------- files and folders
@pytest.mark.parametrize(
    "content, expected",
    [
        (bytes(range(256)) * 4, "not UTF-8 text"),
        ('[suite]\nname = "café"\n'.encode("latin-1"), "not UTF-8 text (byte 19 is 0xe9)"),
        (b"\x00\x01\x02binary", "not valid TOML"),
    ],
)
def test_unreadable_suite_text(tmp_path, capsys, content, expected):
    path = tmp_path / "s.toml"
    path.write_bytes(content)
    code, _, err = run_cli(capsys, "run", str(path), "--dry-run")
    assert code == 2 and f"{path}: " in err and expected in err and "Traceback" not in err, err


def test_a_folder_named_like_a_suite(tmp_path, capsys):
    (tmp_path / "x.toml").mkdir()
    code, _, err = run_cli(capsys, "run", str(tmp_path / "x.toml"), "--dry-run")
    assert code == 2 and "x.toml: is a folder" in err and "Traceback" not in err


def test_a_suite_file_without_permission(tmp_path, capsys, monkeypatch):
    path = suite_file(tmp_path)

    real_open = os.open

    def denied(p, *a, **k):  # chmod 000 does not stop root, so the refusal is simulated at the open
        if str(p) == str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return real_open(p, *a, **k)

    monkeypatch.setattr(os, "open", denied)
    code, _, err = run_cli(capsys, "run", str(path), "--dry-run")
    assert code == 2 and f"{path}: cannot be read (Permission denied)" in err


def test_an_output_folder_that_cannot_be_written(tmp_path, capsys):
    path = suite_file(tmp_path)
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        out = locked / "out"
    elif Path("/sys/fs").is_dir():
        out = Path("/sys/fs/ffbench-test-out")  # refused even to root
    else:
        pytest.skip("running as root with no read-only folder to write into")
    code, _, err = run_cli(capsys, "run", str(path), "--out", str(out), "--no-tracking", "--no-progress")
    assert code == 2 and str(out) in err and "choose a folder you can write (--out)" in err, err
    assert "Traceback" not in err


def test_a_full_disk(tmp_path, capsys, monkeypatch):
    import sqlalchemy.exc

    from ffbench.execution import runner

    path = suite_file(tmp_path)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "table.md"))

    monkeypatch.setattr(runner, "run_suite", full)
    code, _, err = run_cli(capsys, "run", str(path), "--no-tracking")
    assert code == 3 and "table.md: the disk is full" in err and "run the same command again" in err  # infrastructure

    def db_full(*a, **k):  # the same from SQLite, through SQLAlchemy
        raise sqlalchemy.exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(runner, "run_suite", db_full)
    code, _, err = run_cli(capsys, "run", str(path), "--no-tracking")
    assert code == 3 and "the disk is full" in err and "Traceback" not in err


def test_report_without_a_store(tmp_path, capsys):
    code, _, err = run_cli(capsys, "report", "t", "--out", str(tmp_path / "none"))
    assert code == 2 and "no results store" in err and "ffbench run" in err and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results store"):
        main(["--debug", "report", "t", "--out", str(tmp_path / "none")])
    with pytest.raises(FileNotFoundError):
        main(["report", "t", "--out", str(tmp_path / "none"), "--debug"])


def test_fetching_an_unknown_dataset(capsys):
    code, out, err = run_cli(capsys, "data", "fetch", "digits", "bogus")
    assert code == 2 and "'bogus'" in err and "fetchable: fashion-mnist, mnist" in err and out == ""
    code, out, err = run_cli(capsys, "data", "fetch", "digits")
    assert code == 0 and "digits: nothing to fetch" in out


# ---------------------------------------------------------------- plugins that fail to import
def broken_plugin(tmp_path: Path) -> dict:
    (tmp_path / "broken_plugin.py").write_text("import no_such_module_for_ffbench\n")
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ffbench.methods]\nbrokenff = broken_plugin\n")
    return {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}


def test_a_broken_plugin_is_a_warning_and_the_rest_works(tmp_path):
    env = broken_plugin(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "ffbench.cli", "list", "methods", "bp"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 0 and r.stdout.startswith("bp  [bp]"), r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "'brokenff' = 'broken_plugin'" in warnings[0], r.stderr
    assert "no_such_module_for_ffbench" in warnings[0] and "Traceback" not in r.stderr


def test_a_suite_naming_a_method_of_a_broken_plugin(tmp_path, capsys, monkeypatch):
    from ffbench.core.registry import METHODS

    failure = "'brokenff' = 'broken_plugin': ModuleNotFoundError: No module named 'no_such_module_for_ffbench'"
    monkeypatch.setattr(METHODS, "failures", [failure])
    path = suite_file(tmp_path, "", ('methods = ["bp"]', 'methods = ["brokenff"]'))
    code, _, err = run_cli(capsys, "run", str(path), "--dry-run")
    assert code == 2 and "[design].methods: unknown method 'brokenff'" in err and f"failed to load: {failure}" in err


def test_get_names_the_failed_plugin(monkeypatch, capsys):
    import importlib.metadata as md

    ep = md.EntryPoint(name="fancy", value="no_such_module_for_ffbench.fancy", group="ffbench.methods")
    monkeypatch.setattr(md, "entry_points", lambda group: [ep] if group == "ffbench.methods" else [])
    reg = Registry("methods")
    assert reg.names() == []  # discovery goes on
    assert "entry point 'fancy'" in capsys.readouterr().err
    with pytest.raises(UnknownNameError, match="failed to load: ffbench.methods entry point 'fancy'"):
        reg.get("fancy.method")
    reg.names()
    assert capsys.readouterr().err == ""  # warned once


# ---------------------------------------------------------------- interrupts
def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(listing, "cmd_list", interrupted)
    code, _, err = run_cli(capsys, "list", "methods")
    assert code == 130 and err == "interrupted: rerun the same command to resume\n"


def test_sigint_reaching_main(tmp_path):
    script = textwrap.dedent("""
        import sys, time
        import ffbench.cli as c, ffbench.cli.listing as listing
        def slow(args):
            print("ready", flush=True)
            time.sleep(60)
        listing.cmd_list = slow
        sys.exit(c.main(["list", "methods"]))
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130 and err == "interrupted: rerun the same command to resume\n"


def test_a_signal_swallowed_and_re_raised_bare_keeps_its_status():
    """Ray's waits catch the handler's exception in C and raise a bare KeyboardInterrupt: still SIGTERM."""
    from ffbench.execution import pool

    with pytest.raises(pool.Interrupted) as info:
        with pool.interrupts():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except KeyboardInterrupt:
                raise KeyboardInterrupt from None
    assert info.value.signum == signal.SIGTERM and pool.exit_status(info.value) == 143


# ---------------------------------------------------------------- divergence
def test_divergence_rule():
    assert divergence(2.3, 2.3) is None
    assert divergence(float("nan"), 2.3).startswith("non-finite")
    assert divergence(float("inf"), None).startswith("non-finite")
    assert "above 1000 x the initial loss" in divergence(5e3, 2.3)
    assert divergence(900.0, 0.01) is None  # below the absolute floor
    assert divergence(5e4, 100.0) is None  # 500 x the initial loss: not yet
    assert divergence(-2e6, 1.0) is not None  # magnitude


def test_an_exploding_loss_ends_the_run_as_diverged():
    r = fit(
        RunConfig(method="bp", dataset="digits", backbone="mlp", epochs=3, lr=1e6, backbone_options={"widths": [32]}),
        "cpu",
    )
    assert r.status == "failed" and r.error.startswith(DIVERGED) and "initial loss" in r.error, r.error
    assert r.curves == []  # the diverged epoch is not evaluated: nothing to select from


def test_a_diverged_run_is_recorded_and_counted_as_failed(tmp_path, capsys):
    path = suite_file(tmp_path, "", [("epochs = 1", "epochs = 1\nlr = 10.0"), ("widths = [16]", "widths = [256, 256]")])
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, "run", str(path), "--out", str(out), "--no-tracking", "--no-progress")
    assert code == 0 and "1 failed runs" in stdout and "diverged:" in stdout, stdout
    with sqlite3.connect(out / "results.db") as c:
        status, error = c.execute("select status, error from runs").fetchone()
    assert status == "failed" and error.startswith(DIVERGED)


# ---------------------------------------------------------------- ffbench ui
def test_ui_refuses_a_busy_port(tmp_path, capsys):
    (tmp_path / "mlflow.db").touch()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, _, err = run_cli(capsys, "ui", "--out", str(tmp_path), "--port", str(port))
    assert code == 2 and f"port {port} on 127.0.0.1 is in use" in err and "--port" in err


def test_ui_defaults_to_the_suites_output_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = suite_file(tmp_path)
    code, _, err = run_cli(capsys, "ui", str(path))
    assert code == 2 and str(tmp_path / "ffbench-out" / "t" / "mlflow.db") in err
    code, _, err = run_cli(capsys, "ui")
    assert code == 2 and "give a SUITE" in err


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"  # a zombie is gone too
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to see the server's processes")
def test_ui_server_answers_before_the_address_and_its_whole_group_stops(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pids = tmp_path / "pids"
    # a stand-in for `mlflow server`: it starts a worker process, as gunicorn does, then serves HTTP
    server = textwrap.dedent(f"""
        import http.server, os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        time.sleep(1.0)  # slow to start: the address must not be printed before it answers
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        http.server.HTTPServer(("127.0.0.1", {port}), http.server.SimpleHTTPRequestHandler).serve_forever()
    """)
    launcher = textwrap.dedent(f"""
        import sys
        from ffbench.cli.ui import serve
        sys.exit(serve([sys.executable, "-c", {server!r}], "http://127.0.0.1:{port}", "test UI", 60))
    """)
    p = subprocess.Popen(
        [sys.executable, "-c", launcher],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout, not whichever ffbench is installed
    )
    line = p.stdout.readline()
    assert line.startswith(f"test UI on http://127.0.0.1:{port}"), (line, p.stderr.read() if p.poll() else "")
    import urllib.request

    urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=5).close()  # it answers
    server_pid, child_pid = map(int, pids.read_text().split())
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while not (_gone(server_pid) and _gone(child_pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(server_pid) and _gone(child_pid)


def test_seed_ranges_on_the_command_line_are_bounded():
    import argparse

    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
    for text in ("0-99999999999", f"{2**63}", "5-3"):
        with pytest.raises(argparse.ArgumentTypeError, match="allowed: seeds in 0..2147483647"):
            parse_seeds(text)
