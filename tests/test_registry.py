import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from suites import suite_toml

from ffbench.cli import main
from ffbench.core.registry import METHODS, Card, DuplicateNameError, Registry, UnknownNameError

ROOT = Path(__file__).resolve().parent.parent


def test_duplicate_name_names_both_origins():
    reg = Registry("methods")

    @reg.register(name="x.one", summary="first")
    def first():
        pass

    with pytest.raises(DuplicateNameError) as err:

        @reg.register(name="x.one", summary="second")
        def second():
            pass

    msg = str(err.value)
    assert "x.one" in msg and "first" in msg and "second" in msg


def test_wildcards_and_unknown_names():
    reg = Registry("backbones")
    for name in ("ff.hinton", "ff.other", "cwc", "sff.layer"):
        reg.add(Card(name=name, summary=name), object())
    assert reg.names("ff*") == ["ff.hinton", "ff.other"]
    assert reg.names("*.layer") == ["sff.layer"]
    assert [c.name for c in reg.list()] == ["cwc", "ff.hinton", "ff.other", "sff.layer"]
    with pytest.raises(UnknownNameError, match="registered: cwc, ff.hinton"):
        reg.get("nope")


def test_builtin_methods_come_from_the_package():
    # every module of ffbench/methods registers its methods; no entry point or import by name is needed
    assert METHODS.names("bp*") == ["bp", "bp.deepsup"]
    assert {"asge", "cwc", "ff.hinton", "sff", "sff.layer"} <= set(METHODS.names())
    card = METHODS.get("bp.deepsup").card
    assert card.family == "bp" and "head" in card.options


def install_plugin(folder, module: str, name: str, ending: str = "") -> None:
    """A plugin module defining method ``name``, installed in ``folder`` with an ``ffbench.methods`` entry point
    (``ending``: code its import runs after registering)."""
    (folder / f"{module}.py").write_text(
        textwrap.dedent(f"""
        from ffbench.core.method import Method, method_card

        @method_card(name="{name}", summary="a plugin installed through an entry point",
                     rules=("none",), capabilities=frozenset({{"any-backbone"}}))
        class Demo(Method):
            def train_step(self, x, y):
                return {{}}
            def evaluate(self, x):
                return {{}}, []
    """)
        + ending
        + "\n"
    )
    dist = folder / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[ffbench.methods]\n{name.split('.')[0]} = {module}\n")


def test_throwaway_plugin_is_discovered_through_an_entry_point(tmp_path):
    install_plugin(tmp_path, "throwaway_plugin", "throwaway.demo")
    code = "from ffbench.core.registry import METHODS; print(METHODS.names('throwaway*'), METHODS.names('bp'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
    ).stdout
    assert out.strip() == "['throwaway.demo'] ['bp']"


def test_cli_lists_matching_cards(capsys):
    assert main(["list", "methods", "bp*"]) == 0
    out = capsys.readouterr().out
    assert "bp.deepsup" in out and "deep supervision" in out and "tuning space" in out
    assert main(["list", "backbones", "nothing*"]) == 1


def test_capabilities_must_be_known_and_say_where_a_method_runs():
    from ffbench.core.method import check_capabilities

    check_capabilities("ok", frozenset({"flat", "negatives"}))
    check_capabilities("ok", frozenset({"backbones:cnn|mlp"}))
    with pytest.raises(TypeError, match="must say where it runs"):
        check_capabilities("nowhere", frozenset({"unit-heads"}))
    with pytest.raises(TypeError, match="unknown capabilities \\['convolutional'\\]"):
        check_capabilities("typo", frozenset({"convolutional", "any-backbone"}))


@pytest.mark.parametrize("ending", ["raise RuntimeError('broken after registering')", "import sys; sys.exit(0)"])
def test_a_plugin_that_fails_to_import_loads_nothing_of_itself_and_is_one_warning(tmp_path, ending):
    install_plugin(tmp_path, "half_plugin", "half.demo", ending)
    environ = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "PATH": os.environ.get("PATH", "")}
    listed = subprocess.run(
        [sys.executable, "-m", "ffbench.cli", "list", "methods"], capture_output=True, text=True, env=environ
    )
    assert listed.returncode == 0 and "bp.deepsup" in listed.stdout and "half.demo" not in listed.stdout
    warnings = [line for line in listed.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "half_plugin" in warnings[0] and warnings[0].startswith("warning:")
    suite = tmp_path / "s.toml"
    suite.write_text(suite_toml("s", methods=["half.demo"], epochs=None, batch_size=None, widths=None))
    run = subprocess.run(
        [sys.executable, "-m", "ffbench.cli", "run", str(suite), "--out", str(tmp_path / "out"), "--dry-run"],
        capture_output=True,
        text=True,
        env=environ,
    )
    assert run.returncode == 2 and "half.demo" in run.stderr and "failed to load" in run.stderr
    # every other plugin is whole: a suite of ffbench's own methods, backbones and datasets trains
    suite.write_text(suite.read_text().replace('"half.demo"', '"bp"') + "[train]\nepochs = 1\n")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ffbench.cli",
            "run",
            str(suite),
            "--out",
            str(tmp_path / "out"),
            "--no-tracking",
            "--no-progress",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env={**environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0 and "ran 1 of 1" in run.stdout, run.stderr
