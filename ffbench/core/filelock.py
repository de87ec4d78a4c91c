"""One lock across processes on a path (flock), re-entrant within a process."""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Iterator
from pathlib import Path

_LOCKS: dict[str, list] = {}  # path -> [thread lock, open file while held, depth]
_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive across processes (flock); re-entrant within one, so nested find-or-create cannot
    deadlock on its own lock."""
    with _LOCKS_GUARD:
        entry = _LOCKS.setdefault(str(path), [threading.RLock(), None, 0])
    with entry[0]:
        if entry[2] == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(path, "a+")
            fcntl.flock(fh, fcntl.LOCK_EX)
            entry[1] = fh
        entry[2] += 1
        try:
            yield
        finally:
            entry[2] -= 1
            if entry[2] == 0:
                fcntl.flock(entry[1], fcntl.LOCK_UN)
                entry[1].close()
                entry[1] = None
