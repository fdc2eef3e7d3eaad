"""``XLAProfiler``: needs ``torch_xla`` (TPUs), which cannot be installed here."""
from __future__ import annotations

import importlib.util
from typing import Any

from trainer.profilers.profiler import Profiler

_XLA_REQUIREMENT = "torch_xla>=1.13"


class XLAProfiler(Profiler):
    """Lightning's XLA profiler (a trace server on ``port``); raises ``ModuleNotFoundError`` naming ``torch_xla``
    when that package is missing, as Lightning does."""

    STEP_FUNCTIONS = {"validation_step", "test_step", "predict_step"}
    RECORD_FUNCTIONS = {"training_step", "backward", "validation_step", "test_step", "predict_step"}

    def __init__(self, port: int = 9012) -> None:
        if importlib.util.find_spec("torch_xla") is None:
            raise ModuleNotFoundError(
                f"Requirement {_XLA_REQUIREMENT!r} not met. HINT: Try running `pip install -U {_XLA_REQUIREMENT!r}`"
            )
        raise NotImplementedError(  # pragma: no cover - torch_xla is not installable on this project's machines
            "`XLAProfiler`: this Trainer has no XLA/TPU accelerator to profile."
        )

    def start(self, action_name: str) -> None:  # pragma: no cover - never constructed
        raise NotImplementedError

    def stop(self, action_name: str, *args: Any) -> None:  # pragma: no cover - never constructed
        raise NotImplementedError
