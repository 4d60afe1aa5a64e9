"""Stop a training loop cleanly on SIGINT/SIGTERM, so it can checkpoint before exiting."""
from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["StopOnSignal", "ignore_sigint", "INTERRUPTED_EXIT_CODE"]

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C'd program


class StopOnSignal:
    """Context manager: the first SIGINT/SIGTERM only sets :attr:`requested`.

    The loop polls ``requested`` between updates, saves a checkpoint and returns. A second SIGINT
    raises ``KeyboardInterrupt`` as usual, for when saving itself hangs. Outside the main thread
    (where Python cannot install handlers) it does nothing.

    Examples:
        >>> with StopOnSignal() as stop:
        ...     while not stop.requested:
        ...         break
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.signals = signals
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = signum

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def ignore_sigint() -> None:
    """Collector-worker init: a Ctrl-C reaches the whole process group, but only the learner
    should react (it stops the workers itself after checkpointing)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
