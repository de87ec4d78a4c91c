"""The package's messages: library modules log; the command line (and its worker processes) shows them on stderr
as plain lines, each once; a program that configures nothing still sees warnings."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EMIT = (
    "import logging\n"
    "from ffbench.execution import runner\n"  # a library module, as a program imports it
    "{setup}\n"
    "log = logging.getLogger('ffbench.execution.runner')\n"
    "log.warning('warning: w')\n"
    "log.info('note: n')\n"
)


def _stderr(setup: str) -> str:
    run = subprocess.run(
        [sys.executable, "-c", EMIT.format(setup=setup)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert run.returncode == 0, run.stderr
    return run.stderr


def test_a_program_that_configures_nothing_sees_warnings_only():
    assert _stderr("") == "warning: w\n"


def test_the_command_line_setting_shows_warnings_and_notes_once_as_plain_lines():
    setup = (
        "from ffbench.core.log import show_on_stderr\nlogging.basicConfig(format='ROOT %(message)s')\nshow_on_stderr()"
    )
    assert _stderr(setup) == "warning: w\nnote: n\n"
