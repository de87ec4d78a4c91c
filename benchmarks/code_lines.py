"""Code lines of each method module: lines that hold code, without blank lines, comments, docstrings, and the
card text (the ``@method_card(...)`` / ``variant(...)`` arguments and the option, recipe and notes tables
they read). The measure of how much a method author writes against the contract.

    python benchmarks/code_lines.py [files...]     (default: every module of ffbench/methods/)
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARD_CALLS = {"method_card", "variant"}


def card_tables(tree: ast.Module) -> set[str]:
    """Module-level names that a card call reads (its options, recipes, notes, tuning space)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in CARD_CALLS:
            names |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    return names


def excluded_lines(source: str) -> set[int]:
    tree = ast.parse(source)
    out: set[int] = set()
    tables = card_tables(tree)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):  # a docstring
                out |= set(range(body[0].lineno, body[0].end_lineno + 1))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in CARD_CALLS:
            out |= set(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id in tables for t in targets):
                out |= set(range(node.lineno, node.end_lineno + 1))
    return out


def code_lines(path: Path) -> int:
    source = path.read_text()
    skip = excluded_lines(source)
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (
            tokenize.COMMENT,
            tokenize.NL,
            tokenize.NEWLINE,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENDMARKER,
        ):
            continue
        for line in range(tok.start[0], tok.end[0] + 1):
            if line not in skip:
                lines.add(line)
    return len(lines)


def main(argv: list[str]) -> None:
    files = [Path(a) for a in argv] or sorted((ROOT / "ffbench" / "methods").glob("[!_]*.py"))
    for f in files:
        print(f"{f.stem:12s} {code_lines(f):4d}")


if __name__ == "__main__":
    main(sys.argv[1:])
