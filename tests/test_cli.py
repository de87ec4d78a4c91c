"""The ffbench command explains itself: help with defaults and examples, --version, "did you mean" for
typos, unused settings as warnings, reports of a stored suite by name, and a dry run's time estimate; its
light commands import no more than they need."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from suites import suite_toml

from ffbench import __version__
from ffbench.cli import build_parser, main
from ffbench.cli.locate import locate
from ffbench.cli.ui import experiment_id

SUITE = suite_toml("clisuite", methods=["bp", "bp.deepsup"], seeds=[0, 1, 2])


def write(tmp_path, text=SUITE, name="clisuite"):
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(text))
    return path


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def subparsers():
    parser = build_parser()
    return parser, next(a for a in parser._actions if a.dest == "command").choices


def test_every_command_has_help_examples_and_shown_defaults():
    parser, commands = subparsers()
    assert "forward-forward" in parser.format_help() and "Argument parsing" not in parser.format_help()
    for name, sub in commands.items():
        text = sub.format_help()
        assert "examples:" in text and f"ffbench {name}" in text, name
        for action in sub._actions:  # every option says what it does
            assert action.help, (name, action.dest)
    flat = lambda cmd: " ".join(commands[cmd].format_help().split())  # noqa: E731
    assert "--port PORT port on 127.0.0.1 (default: 5000)" in flat("ui")
    assert "(default: 1)" in flat("run") and "(default: auto)" in flat("run")
    assert "no progress bar" in flat("run") and "a name from suites/" in flat("run")
    data = flat("data")
    for name in ("fashion-mnist", "mnist", "digits", "synthetic", "cifar10", "/usr/share/datasets/fashion-mnist"):
        assert name in data


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"ffbench {__version__}"


@pytest.mark.parametrize(
    "edit, expected",
    [
        (('methods = ["bp", "bp.deepsup"]', 'methods = ["bp", "bp.depsup"]'), "did you mean 'bp.deepsup'?"),
        (("epochs = 1", "epoch = 1"), "[train].epoch: unknown key (did you mean 'epochs'?)"),
        (("[backbones.mlp]", "[backbone.mlp]"), "file.backbone: unknown key (did you mean 'backbones'?)"),
    ],
)
def test_typos_get_a_suggestion(tmp_path, capsys, edit, expected):
    path = write(tmp_path, SUITE.replace(*edit))
    code, _, err = run_cli(capsys, "run", path, "--dry-run")
    assert code == 2 and expected in err and "Traceback" not in err, err


def test_unknown_suite_and_dataset_names_get_a_suggestion(capsys):
    code, _, err = run_cli(capsys, "run", "quik", "--dry-run")
    assert code == 2 and "did you mean 'quick'?" in err
    code, _, err = run_cli(capsys, "data", "fetch", "fashon-mnist")
    assert code == 2 and "did you mean 'fashion-mnist'?" in err


def test_an_unused_method_section_is_a_warning_at_planning(tmp_path, capsys):
    path = write(tmp_path, SUITE + "\n[methods.sff]\nlr = 0.01\n")
    code, out, err = run_cli(capsys, "run", path, "--dry-run")
    assert code == 0 and "warning:" in err and "[methods.'sff'] is not used" in err and "6 evaluation runs" in out


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """The suite run once (2 seeds) in a folder of its own; returns (folder, suite file)."""
    tmp = tmp_path_factory.mktemp("cli")
    path = write(tmp, SUITE.replace("seeds = [0, 1, 2]", "seeds = [0, 1]"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        assert main(["run", str(path), "--no-progress", "--device", "cpu"]) == 0
    return tmp, path


def test_run_ends_with_intervals_and_verdicts(stored):
    tmp, _ = stored
    table = (tmp / "ffbench-out" / "clisuite" / "table.md").read_text()
    assert "95% CI" in table and "Δ vs bp pp [decision CI]" in table and "verdict" in table
    assert "| control |" in table and "insufficient evidence" in table  # 2 seeds: too few for a verdict


def test_dry_run_estimates_the_time_from_the_store_or_a_probe(stored, tmp_path, capsys, monkeypatch):
    tmp, path = stored
    fresh = write(tmp_path, SUITE.replace('name = "clisuite"', 'name = "fresh"'), name="fresh")
    code, out, _ = run_cli(capsys, "run", fresh, "--dry-run", "--out", tmp_path / "fresh-out")
    assert code == 0 and "estimated time: about" in out and "6 run(s) from a short timed probe (2 probe(s)" in out
    monkeypatch.chdir(tmp)
    path.write_text(path.read_text().replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))  # one more seed per cell
    code, out, _ = run_cli(capsys, "run", path, "--dry-run")
    assert code == 0 and "for 2 of 2 run(s) left" in out
    assert "2 run(s) from the training time of earlier runs of the same cells in the store" in out
    assert "probe" not in out.split("estimated time:")[1].splitlines()[0]


def test_report_and_ui_find_a_stored_suite_by_name(stored, capsys, monkeypatch):
    tmp, path = stored
    monkeypatch.chdir(tmp)
    moved = path.rename(tmp / "elsewhere.toml")  # the suite file is gone: the store is enough
    try:
        code, out, err = run_cli(capsys, "report", "clisuite", "--resamples", "200")
        assert code == 0, err
        assert "winner per task" in out and "bp.deepsup on synthetic / mlp: insufficient evidence, Δ" in out
        assert "unknown suite" not in out + err
        assert (tmp / "ffbench-out" / "clisuite" / "reports" / "clisuite" / "index.html").exists()
        name, out_dir, suite = locate("clisuite", None)
        assert (name, str(out_dir), suite) == ("clisuite", "ffbench-out/clisuite", None)
        assert experiment_id(out_dir / "mlflow.db", name) is not None
        code, _, err = run_cli(capsys, "report", "clisuit")
        assert code == 2 and "did you mean 'clisuite'?" in err
    finally:
        moved.rename(path)


def test_mlflow_info_lines_are_quiet_unless_verbose(tmp_path, capsys, monkeypatch):
    import logging

    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)
    path = write(tmp_path, SUITE.replace("seeds = [0, 1, 2]", "seeds = [0]").replace('"bp", "bp.deepsup"', '"bp"'))
    try:
        for flags, level in (([], logging.WARNING), (["--verbose"], logging.INFO)):
            code, _, err = run_cli(capsys, "run", path, "--dry-run", *flags)
            assert code == 0, err
            assert [logging.getLogger(n).level for n in ("mlflow", "alembic")] == [level, level], flags
    finally:
        monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)
        main(["list", "axes", "bn"])  # back to quiet for the tests after this one


ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "mlflow", "pandas", "scipy", "sqlalchemy", "optuna")


@pytest.mark.parametrize(
    ("argv", "shown", "allowed"),
    [
        (["--version"], "ffbench ", ()),
        (["--help"], "usage: ffbench", ()),
        (["list", "datasets"], "digits", ()),
        (["list", "axes"], "\n", ()),
        (
            ["list", "methods", "bp"],
            "adapt modes:",
            ("torch",),
        ),  # a method's module defines its card (and imports torch)
        (["list", "backbones"], "mlp", ("torch",)),
        (["list", "reports"], "comparison", ("pandas", "scipy")),  # the report kinds are built on the statistics
    ],
)
def test_light_commands_import_only_what_they_need(argv, shown, allowed):
    """The parser is built with every command, and the command runs, in a fresh process; then which of the heavy
    libraries were imported is read from sys.modules."""
    script = textwrap.dedent(f"""
        import contextlib, io, sys
        from ffbench.cli import build_parser, main
        build_parser().format_help()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                code = main({argv!r})
            except SystemExit as exit:  # --version and --help exit from the parser
                code = exit.code
        print(repr((code, out.getvalue(), sorted(m for m in {HEAVY!r} if m in sys.modules))))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    code, out, heavy = eval(p.stdout.strip().splitlines()[-1])
    assert code in (0, None) and shown in out, (code, out)
    assert set(heavy) <= set(allowed), f"ffbench {' '.join(argv)} imported {heavy}"


@pytest.mark.parametrize("module", ["ffbench", "ffbench.cli"])
def test_python_dash_m_runs_the_command_line(module):
    """Worker processes are started as `python -m ffbench.cli worker ...` (execution/pool.py)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("ffbench "), (p.stdout, p.stderr)
    p = subprocess.run([sys.executable, "-m", module, "lst"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2 and "invalid choice: 'lst'" in p.stderr, p.stderr
