"""Signals as exceptions: SIGINT and SIGTERM raise ``Interrupted`` where the run can give its work back,
also when a finalizer swallowed the exception (``check_interrupted``, called at each epoch's end)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: stop like Ctrl-C (give runs back); ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(exc: BaseException) -> int:
    """The conventional exit status of a process stopped by a signal: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


_ACTIVE: list[list[int]] = []  # the signals fired in each ``interrupts`` block open now


def check_interrupted() -> None:
    """Raise ``Interrupted`` if a signal fired inside ``interrupts`` and training still goes on. A signal
    handler's exception is lost when the signal lands while a finalizer or weak-reference callback runs
    (Python prints "Exception ignored in ..."); the epoch loop calls this, so such a signal stops the run at
    the next epoch's end instead of never."""
    for fired in _ACTIVE:
        if fired:
            raise Interrupted(fired[0])


@contextlib.contextmanager
def interrupts():
    """While inside, SIGINT and SIGTERM raise ``Interrupted`` in the main thread, once: a second signal
    during the clean-up is ignored rather than cutting the clean-up short. The previous handlers return."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []
    _ACTIVE.append(fired)

    def handler(signum, frame):
        if not fired:
            fired.append(signum)
            raise Interrupted(signum)

    def unraisable(info):  # ours, lost in a finalizer: check_interrupted raises it again, so no traceback
        if not isinstance(info.exc_value, Interrupted):
            previous_hook(info)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
    except KeyboardInterrupt as exc:
        if fired and not isinstance(exc, Interrupted):
            # code that caught ours re-raises a bare KeyboardInterrupt (Ray's waits do, in C): keep the signal
            raise Interrupted(fired[0]) from exc
        raise
    finally:
        _ACTIVE[:] = [f for f in _ACTIVE if f is not fired]
        sys.unraisablehook = previous_hook
        for sig, h in old.items():
            signal.signal(sig, h)


def install_signal_handlers() -> None:
    """For the whole process: SIGTERM behaves like Ctrl-C (the worker gives its run back before it exits)."""

    def _term(signum, frame):
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, _term)
