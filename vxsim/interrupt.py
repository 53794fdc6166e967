"""Stopping a sweep cleanly on SIGTERM or SIGINT (Slurm's time limit or preemption, Ctrl-C).

Inside ``stoppable()`` the first SIGTERM or SIGINT raises ``Stopped`` in the main
thread at once, abandoning the work unit in flight: a unit is atomic on disk (its
completion flag is set only after its data are flushed), so nothing finished is
lost. Inside ``critical()`` (writing a unit, creating or finishing the file) the
signal is held until the block ends and raised there. The store's context
managers close the file on the way out, so it stays resumable with ``--resume``.
``Stopped`` is a BaseException, like KeyboardInterrupt, so that no ``except
Exception`` in between swallows it.
"""

import contextlib
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_state = threading.local()


class Stopped(BaseException):
    """A sweep stopped by a signal at a safe point; its output is resumable."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self):
        return signal.Signals(self.signum).name


def _handler(signum, frame):
    if getattr(_state, "critical", 0):
        _state.pending = signum
        return
    raise Stopped(signum)


@contextlib.contextmanager
def stoppable():
    """SIGTERM and SIGINT raise Stopped inside the block (main thread only; elsewhere
    the process's handlers stay as they are)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, _handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


@contextlib.contextmanager
def critical():
    """A block a signal may not cut short: Stopped is raised when it ends."""
    _state.critical = getattr(_state, "critical", 0) + 1
    try:
        yield
    finally:
        _state.critical -= 1
        pending = getattr(_state, "pending", None)
        if not _state.critical and pending is not None:
            _state.pending = None
            raise Stopped(pending)
