"""The package as pip installs it: a wheel built from this checkout holds every subpackage and the shipped suites
(and no top-level ``methods`` or ``reports``); installed into a fresh virtual environment inside another git
repository (as a project's .venv is), it runs a named suite from an empty folder, imports the installed copy and
records no commit of the repository around it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "ffbench"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pip") is None or importlib.util.find_spec("setuptools") is None,
    reason="building the wheel needs pip and setuptools in this environment",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of a copy of the checkout (a build in place would leave build/ and *.egg-info behind)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(PKG, src / "ffbench", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dest = tmp_path_factory.mktemp("wheels")
    p = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["-w", str(dest), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    (found,) = dest.glob("ffbench-*.whl")
    return found


def test_the_wheel_holds_every_subpackage_and_the_shipped_suites(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    layers = sorted(d.name for d in PKG.iterdir() if (d / "__init__.py").exists())
    assert {"core", "methods", "reports", "cli"} <= set(layers)
    missing = [f"ffbench/{d}/__init__.py" for d in layers if f"ffbench/{d}/__init__.py" not in names]
    assert not missing, missing
    modules = {f"ffbench/{p.relative_to(PKG).as_posix()}" for p in PKG.rglob("*.py") if "__pycache__" not in p.parts}
    assert modules <= names, sorted(modules - names)
    suites = sorted(p.name for p in (PKG / "suites").glob("*.toml"))
    assert "quick.toml" in suites and {f"ffbench/suites/{s}" for s in suites} <= names
    tops = {n.split("/")[0] for n in names}
    assert tops == {"ffbench", wheel.name.split("-py")[0] + ".dist-info"}, tops  # no top-level methods / reports
    info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(info).decode()
    # the command; the built-in methods need no entry point (found in the package, listed below when installed)
    assert "ffbench = ffbench.cli:main" in entry_points and "ffbench.methods" not in entry_points


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", FFBENCH_THREADS="1")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_installed_a_named_suite_runs_from_an_empty_folder(wheel, tmp_path):
    project = tmp_path / "project"  # another repository, with the environment inside it
    project.mkdir()
    git = shutil.which("git")
    if git:
        for args in (
            ["init", "-q"],
            ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"],
        ):
            subprocess.run([git, *args], cwd=project, check=True, capture_output=True)
    venv = project / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path).stdout.strip()
    )
    # the dependencies (torch, MLflow, ...) from this environment, after the fresh one's own site-packages; only
    # the wheel provides ffbench there (a .pth line adds a folder, not the .pth files in it: no editable finder)
    (purelib / "_dependencies.pth").write_text("\n".join(p for p in site.getsitepackages() if Path(p).is_dir()) + "\n")
    p = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    empty = tmp_path / "empty"
    empty.mkdir()

    p = _run(
        [
            str(python),
            "-c",
            "import ffbench.cli, ffbench.record.manifest as m; print(ffbench.cli.__file__); print(m.manifest('cpu')['git_commit'])",
        ],
        empty,
    )
    assert p.returncode == 0, p.stderr
    where, commit = p.stdout.split()
    assert Path(where).is_relative_to(purelib), where  # the installed copy, not a checkout
    assert commit == "unknown"  # not the commit of the repository the environment lies in

    ffbench = str(venv / "bin" / "ffbench")
    p = _run([ffbench, "run", "quick", "--dry-run", "--no-estimate"], empty)
    assert p.returncode == 0, p.stderr
    assert "suite quick (version" in p.stdout and str(purelib / "ffbench" / "suites" / "quick.toml") in p.stdout, (
        p.stdout
    )
    assert "evaluation runs" in p.stdout and "output directory: ffbench-out/quick" in p.stdout, p.stdout
    p = _run([ffbench, "run", "no-such-suite", "--dry-run"], empty)
    assert p.returncode == 2 and "unknown suite 'no-such-suite'" in p.stderr and "quick" in p.stderr, p.stderr
    p = _run([ffbench, "list", "methods", "bp"], empty)
    assert p.returncode == 0 and p.stdout.startswith("bp "), p.stdout + p.stderr
    assert list(empty.iterdir()) == []  # a dry run and a listing write nothing
