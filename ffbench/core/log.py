"""The package's messages to the user: library modules log through ``logging.getLogger(__name__)`` (warnings at
WARNING, written "warning: ...", notes and waits at INFO); the command line shows them on stderr as plain lines.

A program that imports ffbench keeps control: without ``show_on_stderr`` its own logging configuration decides
(with none, Python prints warnings and errors on stderr as they are).
"""

from __future__ import annotations

import logging
import sys

ROOT = "ffbench"


class _Stderr(logging.StreamHandler):
    """A handler that writes to ``sys.stderr`` as it is when a record comes, so a stream replaced after set-up
    (a redirection, a test's capture) receives it."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def show_on_stderr(level: int = logging.INFO) -> None:
    """Print ffbench's log records of ``level`` and above on stderr, the message alone (the command line's
    setting, also in its worker processes); calling it again changes only the level."""
    logger = logging.getLogger(ROOT)
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # the command line owns the terminal: no second copy through a root handler
