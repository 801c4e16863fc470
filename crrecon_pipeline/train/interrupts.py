"""A graceful stop: SIGINT / SIGTERM during the epochs is noted, not raised, and the loop acts on it at the next
batch boundary (a resumable checkpoint, a stop record), then hands the signal to whoever handled it before
(`deliver`): the CLI's Ctrl-C / SIGTERM exits, Dagster's interrupt (a terminated run reads as canceled).

A second signal while the first waits is delivered at once (a stuck step can still be stopped). Nothing is
installed outside the main thread (Python allows signal handlers there only) nor under torchrun (every rank would
have to stop at the same batch), where a signal interrupts as it did before. The check is a Python attribute read
per batch: no host sync. Imports the standard library only."""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    """Context manager: while inside, SIGINT / SIGTERM set `signum` instead of interrupting."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.previous: dict[int, object] = {}
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def reason(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def __enter__(self) -> "GracefulStop":
        if self.enabled:
            for sig in SIGNALS:
                before = signal.getsignal(sig)
                if before in (signal.SIG_IGN, None):  # ignored (a background job) or set outside Python: left so
                    continue
                self.previous[sig] = before
                signal.signal(sig, self._note)
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None and self.signum is not None:  # noted after the last boundary that looked: not lost
            self.deliver()
        self._restore()

    def _note(self, signum, frame) -> None:
        if self.signum is not None:  # the second signal: no more waiting
            self.signum = signum
            self.deliver()
        self.signum = signum

    def _restore(self) -> None:
        for sig, before in self.previous.items():
            signal.signal(sig, before)
        self.previous = {}

    def deliver(self) -> None:
        """Put the handlers back and hand them the signal: they raise (KeyboardInterrupt, the CLI's Terminated,
        Dagster's interrupt); a default SIGTERM ends the process as it would have; a handler that only takes note
        is followed by KeyboardInterrupt, so the stop is never lost."""
        signum, handlers = self.signum, dict(self.previous)
        self.signum = None  # delivered once
        self._restore()
        if signum is None:
            return
        handler = handlers.get(signum, signal.SIG_DFL)
        if callable(handler):
            handler(signum, None)
        elif signum == signal.SIGTERM:
            signal.raise_signal(signum)
        raise KeyboardInterrupt()
