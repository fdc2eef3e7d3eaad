"""``PassThroughProfiler``: profiles nothing (the Trainer's default)."""
from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager

from trainer.profilers.profiler import Profiler

_NULL = nullcontext()


class PassThroughProfiler(Profiler):
    """Profiles nothing; ``profile()`` returns one shared null context (no allocation per call) and
    ``enabled`` is False, so the loops skip their profiling calls."""

    enabled = False

    def start(self, action_name: str) -> None:
        pass

    def stop(self, action_name: str) -> None:
        pass

    def profile(self, action_name: str) -> ContextManager:  # type: ignore[override]
        return _NULL
