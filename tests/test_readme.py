"""The README stays a short front page whose commands are real: every `ffbench` command of its shell blocks
parses with the command's own parser, and its suite plans. The manual's examples are tested in test_docs.py."""

import re
import shlex
from pathlib import Path

import pytest

from ffbench.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted(p for p in (ROOT / "docs").rglob("*.md") if "generated" not in p.parts)]


def ffbench_commands(path: Path) -> list[str]:
    """The `ffbench ...` command lines of the shell blocks of ``path`` (continuations joined, comments cut)."""
    out = []
    for code in re.findall(r"^```sh\n(.*?)^```", path.read_text(), re.S | re.M):
        for line in code.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0].endswith("ffbench"):
                out.append(words[1:])
    return out


def test_the_readme_is_a_short_front_page():
    text = README.read_text()
    assert len(text.encode()) <= 12_000, len(text.encode())
    for must in ("make quick", "make test", "pip install", "make docs", "ffbench report", "ffbench ui", "| family |"):
        assert must in text, must


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_ffbench_command_on_the_pages_parses(page):
    parser = build_parser()
    for argv in ffbench_commands(page):
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # argparse's own error: an option or a choice that does not exist
            raise AssertionError(f"{page.name}: ffbench {' '.join(argv)} (exit {e.code})") from None
        assert args is not None


def test_the_readme_commands_cover_the_first_steps():
    subcommands = {argv[0] for argv in ffbench_commands(README) if argv}
    assert {"run", "report", "ui"} <= subcommands, subcommands
