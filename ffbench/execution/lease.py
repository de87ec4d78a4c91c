"""A worker's lease on a claimed run, kept alive by a heartbeat.

A claimed row is the worker's while its heartbeat is fresh: a background thread refreshes it every
``heartbeat_interval(lease)`` seconds. A row whose heartbeat is older than the lease is taken over by
another worker (its holder is presumed dead); the old holder notices at its next beat, stops at the next
epoch (``Heartbeat.check`` raises ``LeaseLost``) and its late result is dropped by the store.
"""

from __future__ import annotations

import threading
from typing import Any

from ffbench.record.store import Store

LEASE_S = 600.0  # a run whose heartbeat is older than this is considered abandoned
POLL_S = 1.0  # how often an idle worker looks again while others hold runs (one light query)


LEASE_RANGE = (1.0, 7 * 86400.0)  # --lease: a second (tests, one machine) to a week
POLL_RANGE = (0.05, 600.0)  # --poll


def timing(lease_s: float | None, poll_s: float | None) -> tuple[float, float]:
    """(lease, poll) in seconds: the given values, checked, or the defaults (the poll: a quarter of the lease,
    between 0.2 and ``POLL_S``). A value outside its range is an ``OptionError`` naming the option and the
    range: a lease of 0 or less would hand every run to every worker at once."""
    from ffbench.core.options import OptionError

    for name, value, (lo, hi) in (("--lease", lease_s, LEASE_RANGE), ("--poll", poll_s, POLL_RANGE)):
        if value is not None and not lo <= value <= hi:
            raise OptionError(f"{name} {value:g}: allowed values are {lo:g} to {hi:g} seconds")
    lease = LEASE_S if lease_s is None else float(lease_s)
    return lease, float(poll_s) if poll_s is not None else min(POLL_S, max(0.2, lease / 4))


class LeaseLost(RuntimeError):
    """Another worker took the run over (our heartbeat was late): stop and drop the result."""


def heartbeat_interval(lease_s: float) -> float:
    return max(0.05, min(30.0, lease_s / 4))


class Heartbeat:
    """Refresh a claimed row's lease in the background while it runs; notice when it was taken over."""

    def __init__(self, store: Store, run_id: str, worker: str, interval: float):
        self.store, self.run_id, self.worker, self.interval = store, run_id, worker, interval
        self.stop = threading.Event()
        self.lost = False
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.stop.wait(self.interval):
            try:
                if not self.store.heartbeat(self.run_id, self.worker):
                    self.lost = True
                    return
            except Exception:  # a transient database error: try again at the next beat
                pass

    def check(self, *_: Any) -> None:
        """An ``on_epoch`` callback: stop the run if another worker holds it now."""
        if self.lost:
            raise LeaseLost(f"{self.run_id}: lease lost to another worker")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)
