"""SIGTERM during a run (a scheduler preempting the job): Lightning's behaviour.

While ``fit``/``validate``/``test``/``predict`` runs in the main thread, a SIGTERM handler is installed in front of
any existing one (which is still called). It only records the signal (and stops a launcher's child processes);
the loops then raise :class:`trainer.exceptions.SIGTERMException` at the next batch boundary, so the run ends
through the usual exception path: ``on_exception`` hooks (``OnExceptionCheckpoint`` saves there), loggers
finalized as "failed", teardown. The previous handlers are put back when the call ends.
"""
from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)


class SignalConnector:
    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.received_sigterm = False
        self._previous: Optional[Any] = None
        self._installed = False

    def register(self) -> None:
        """Installs the SIGTERM handler (main thread only: Python delivers signals there)."""
        self.received_sigterm = False
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        self._previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._installed = True

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        rank = getattr(self.trainer, "local_rank", 0)
        log.info(f"[rank: {rank}] Received SIGTERM: {signum}")
        if not self.received_sigterm:
            launcher = getattr(self.trainer.strategy, "launcher", None)
            kill: Optional[Callable[[int], None]] = getattr(launcher, "kill", None)
            if kill is not None:
                kill(signum)
        self.received_sigterm = True
        if callable(self._previous) and self._previous is not self._on_sigterm:
            self._previous(signum, frame)

    def teardown(self) -> None:
        """Puts back the handler that was there before the call."""
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False
        self._previous = None


__all__ = ["SignalConnector"]
