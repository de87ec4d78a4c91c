import subprocess
import sys
import textwrap

import pytest

from ffbench.cli import main
from ffbench.registry import METHODS, Card, DuplicateNameError, Registry, UnknownNameError


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


def test_builtin_methods_come_from_entry_points():
    # bp is declared in pyproject.toml as an entry point; no import of methods.bp happened here
    assert METHODS.names("bp*") == ["bp", "bp.deepsup"]
    card = METHODS.get("bp.deepsup").card
    assert card.family == "bp" and "head" in card.options


def test_throwaway_plugin_is_discovered_through_an_entry_point(tmp_path):
    (tmp_path / "throwaway_plugin.py").write_text(textwrap.dedent("""
        from ffbench.method import Method, method_card

        @method_card(name="throwaway.demo", summary="a plugin installed through an entry point",
                     rules=("none",), capabilities=frozenset({"any-backbone"}))
        class Demo(Method):
            def train_step(self, x, y):
                return {}
            def evaluate(self, x):
                return {}, []
    """))
    dist = tmp_path / "throwaway_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: throwaway-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ffbench.methods]\ndemo = throwaway_plugin\n")
    code = "from ffbench.registry import METHODS; print(METHODS.names('throwaway*'), METHODS.names('bp'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": ""}).stdout
    assert out.strip() == "['throwaway.demo'] ['bp']"


def test_cli_lists_matching_cards(capsys):
    assert main(["list", "methods", "bp*"]) == 0
    out = capsys.readouterr().out
    assert "bp.deepsup" in out and "deep supervision" in out and "tuning space" in out
    assert main(["list", "backbones", "nothing*"]) == 1


def test_capabilities_must_be_known_and_say_where_a_method_runs():
    from ffbench.method import check_capabilities

    check_capabilities("ok", frozenset({"flat", "negatives"}))
    check_capabilities("ok", frozenset({"backbones:cnn|mlp"}))
    with pytest.raises(TypeError, match="must say where it runs"):
        check_capabilities("nowhere", frozenset({"unit-heads"}))
    with pytest.raises(TypeError, match="unknown capabilities \\['convolutional'\\]"):
        check_capabilities("typo", frozenset({"convolutional", "any-backbone"}))
