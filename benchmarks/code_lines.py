"""Code lines of each method module: lines of logic, without blank lines, comments, docstrings, the card text
(the ``@method_card(...)`` / ``variant(...)`` arguments and the option, recipe and notes tables they read)
and literal data tables (a paper's schedule, a list of choices). The measure of how much a method author
writes against the contract; ``total`` counts every line that is not blank, a comment or a docstring.

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
    """Module-level data that a card call reads (its options, recipes, notes, tuning space), and the data those
    tables read in turn (a recipe's per-dataset values, a paper's schedule table)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in CARD_CALLS:
            names |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    assigned = {
        t.id: node
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    grew = True
    while grew:  # the closure over module-level data assignments
        more = {
            n.id
            for name in names & set(assigned)
            for n in ast.walk(assigned[name].value)
            if isinstance(n, ast.Name) and n.id in assigned
        }
        grew = bool(more - names)
        names |= more
    return names & set(assigned) | names


def literal(value: ast.AST | None) -> bool:
    """A data table: a constant, or a dict / list / tuple / set built of constants only."""
    try:
        ast.literal_eval(value)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False


def excluded_lines(source: str, card: bool = True) -> set[int]:
    tree = ast.parse(source)
    out: set[int] = set()
    tables = card_tables(tree)
    if not card:
        tables = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):  # a docstring
                out |= set(range(body[0].lineno, body[0].end_lineno + 1))
        if not card:
            continue
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in CARD_CALLS:
            out |= set(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            roots = [t.value if isinstance(t, ast.Subscript) else t for t in targets]  # TABLE[key] = ... too
            if any(isinstance(t, ast.Name) and t.id in tables for t in roots) or literal(node.value):
                out |= set(range(node.lineno, node.end_lineno + 1))
    return out


def code_lines(path: Path, card: bool = True) -> int:
    source = path.read_text()
    skip = excluded_lines(source, card)
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
    print(f"{'module':12s} {'code':>5s} {'total':>6s}")
    for f in files:
        print(f"{f.stem:12s} {code_lines(f):5d} {code_lines(f, card=False):6d}")


if __name__ == "__main__":
    main(sys.argv[1:])
