"""The import-layer contract: each subpackage of ffbench imports only from the layers below it (or its own),
and no module imports itself back through a circle. The order is the architecture page's (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "ffbench"

# lowest first: a layer may import from itself and from any layer before it
LAYERS = ["core", "stats", "data", "plan", "training", "methods", "record", "execution", "analysis", "reports", "cli"]
ROOT_MODULES = {"api"}  # ffbench.api re-exports the plugin API: above every layer, imported by none


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module imported, line, whether only for type checking) of every ffbench import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            guarded = typing_only or (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                if child.module == "ffbench":
                    found.extend((f"ffbench.{a.name}", child.lineno, guarded) for a in child.names)
                elif child.module.startswith("ffbench."):
                    found.append((child.module, child.lineno, guarded))
            elif isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, guarded) for a in child.names if a.name.startswith("ffbench."))
            visit(child, guarded)

    visit(tree, False)
    return found


def layer_of(module: str) -> str | None:
    """The layer of ``ffbench.<layer>.…``; None for the package root (``__version__``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS + sorted(ROOT_MODULES) else None


def module_files() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def test_every_module_sits_in_a_layer():
    loose = [
        str(p.relative_to(PKG))
        for p in module_files()
        if p.parent == PKG and p.stem not in ROOT_MODULES | {"__init__", "__main__"}
    ]
    assert not loose, f"modules outside the layers (move them into one of {LAYERS}): {loose}"
    for layer in LAYERS:
        init = PKG / layer / "__init__.py"
        assert init.exists() and ast.get_docstring(ast.parse(init.read_text())), f"{layer}/__init__.py says its job"


def test_layers_import_only_downwards():
    wrong = []
    for path in module_files():
        rel = path.relative_to(PKG)
        own = rel.parts[0] if len(rel.parts) > 1 else None
        if own is None:
            continue  # ffbench/__init__ (the version) and ffbench/api (the plugin API, the top)
        for target, line, typing_only in imports(path):
            other = layer_of(target)
            if other is None or other == own or typing_only:
                continue
            if other in ROOT_MODULES or LAYERS.index(other) > LAYERS.index(own):
                wrong.append(f"ffbench/{rel}:{line} ({own}) imports {target} ({other})")
    assert not wrong, "imports against the layer order " + " < ".join(LAYERS) + ":\n" + "\n".join(wrong)


def test_the_package_root_imports_no_layer():
    # `import ffbench` (and so `ffbench --version`) must not pull in torch or any layer
    assert [t for t, _, _ in imports(PKG / "__init__.py")] == []


def test_no_import_circles_between_modules():
    graph: dict[str, set[str]] = {}
    for path in module_files():
        rel = path.relative_to(PKG).with_suffix("")
        name = ".".join(("ffbench", *rel.parts)).removesuffix(".__init__")
        graph[name] = {t for t, _, typing_only in imports(path) if not typing_only}
    names = set(graph)
    for name, targets in graph.items():  # `from ffbench.x import y` where y is a module names ffbench.x.y
        graph[name] = {f"{t}" if t in names else t.rsplit(".", 1)[0] for t in targets} & names - {name}
    cycles, state = [], {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                walk(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    assert not cycles, "import circles (module-level and function-level imports both count):\n" + "\n".join(cycles)


@pytest.mark.parametrize("bad", ["from ffbench.cli import main", "from ffbench.execution.runner import run_suite"])
def test_the_contract_catches_an_upward_import(tmp_path, monkeypatch, bad):
    # the check itself can fail: a core module importing the command line is reported
    fake = tmp_path / "ffbench" / "core"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('"""x"""\n')
    (fake / "bad.py").write_text(bad + "\n")
    monkeypatch.setattr(__import__(__name__), "PKG", tmp_path / "ffbench")
    with pytest.raises(AssertionError, match="imports against the layer order"):
        test_layers_import_only_downwards()
