"""``Timer``: track time per stage and stop fitting once a time budget is spent."""
from __future__ import annotations

import logging
import re
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Optional, Union

from trainer.callbacks._utils import broadcast, rank_zero_info
from trainer.callbacks.callback import Callback
from trainer.exceptions import MisconfigurationException

if TYPE_CHECKING:  # pragma: no cover
    from trainer.module import LightningModule
    from trainer.trainer import Trainer

log = logging.getLogger(__name__)

# Lightning's RunningStage values, in its order (the keys of ``state_dict()["time_elapsed"]``).
_STAGES = ("train", "sanity_check", "validate", "test", "predict")
_INTERVALS = ("step", "epoch")


def _stage(stage: Any) -> str:
    value = getattr(stage, "value", stage)
    if value not in _STAGES:
        raise ValueError(f"{value!r} is not a valid stage; expected one of {', '.join(_STAGES)}")
    return value


class Timer(Callback):
    """Measure the time of training/validation/testing and stop training once ``duration`` has passed.

    Args:
        duration: ``"DD:HH:MM:SS"``, a ``timedelta`` or a dict of ``timedelta`` arguments; ``None``: no limit.
        interval: Check the limit after every ``"step"`` or every ``"epoch"``.
        verbose: Log when the limit is reached.
    """

    def __init__(
        self,
        duration: Optional[Union[str, timedelta, dict[str, int]]] = None,
        interval: str = "step",
        verbose: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(duration, str):
            match = re.fullmatch(r"(\d+):(\d\d):(\d\d):(\d\d)", duration.strip())
            if not match:
                raise MisconfigurationException(
                    f"`Timer(duration={duration!r})` is not a valid duration. Expected a string in the format DD:HH:MM:SS."
                )
            duration = timedelta(
                days=int(match.group(1)),
                hours=int(match.group(2)),
                minutes=int(match.group(3)),
                seconds=int(match.group(4)),
            )
        elif isinstance(duration, dict):
            duration = timedelta(**duration)
        interval = getattr(interval, "value", interval)
        if interval not in _INTERVALS:
            raise MisconfigurationException(
                f"Unsupported parameter value `Timer(interval={interval})`. Possible choices are: {', '.join(_INTERVALS)}"
            )
        self._duration = duration.total_seconds() if duration is not None else None
        self._interval = interval
        self._verbose = verbose
        self._start_time: dict[str, Optional[float]] = dict.fromkeys(_STAGES)
        self._end_time: dict[str, Optional[float]] = dict.fromkeys(_STAGES)
        self._offset = 0.0  # training time from a checkpoint we resumed from

    def start_time(self, stage: str = "train") -> Optional[float]:
        """``time.monotonic()`` when ``stage`` started, or ``None``."""
        return self._start_time[_stage(stage)]

    def end_time(self, stage: str = "train") -> Optional[float]:
        """``time.monotonic()`` when ``stage`` ended, or ``None``."""
        return self._end_time[_stage(stage)]

    def time_elapsed(self, stage: str = "train") -> float:
        """Seconds spent in ``stage`` (training time includes that of the run we resumed from)."""
        stage = _stage(stage)
        start, end = self._start_time[stage], self._end_time[stage]
        offset = self._offset if stage == "train" else 0
        if start is None:
            return offset
        if end is None:
            return time.monotonic() - start + offset
        return end - start + offset

    def time_remaining(self, stage: str = "train") -> Optional[float]:
        """Seconds left of ``duration``, or ``None`` without a limit."""
        if self._duration is not None:
            return self._duration - self.time_elapsed(stage)
        return None

    def on_train_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self._start_time["train"] = time.monotonic()

    def on_train_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self._end_time["train"] = time.monotonic()

    def on_validation_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self._start_time["validate"] = time.monotonic()

    def on_validation_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self._end_time["validate"] = time.monotonic()

    def on_test_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self._start_time["test"] = time.monotonic()

    def on_test_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self._end_time["test"] = time.monotonic()

    def on_fit_start(self, trainer: "Trainer", *args: Any, **kwargs: Any) -> None:
        # A resumed run may already be over budget.
        if self._duration is not None:
            self._check_time_remaining(trainer)

    def on_train_batch_end(self, trainer: "Trainer", *args: Any, **kwargs: Any) -> None:
        if self._interval == "step" and self._duration is not None:
            self._check_time_remaining(trainer)

    def on_train_epoch_end(self, trainer: "Trainer", *args: Any, **kwargs: Any) -> None:
        if self._interval == "epoch" and self._duration is not None:
            self._check_time_remaining(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"time_elapsed": {stage: self.time_elapsed(stage) for stage in _STAGES}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._offset = state_dict.get("time_elapsed", {}).get("train", 0)

    def _check_time_remaining(self, trainer: "Trainer") -> None:
        assert self._duration is not None
        # Rank 0's clock decides, so all ranks stop at the same step.
        should_stop = broadcast(trainer, self.time_elapsed() >= self._duration)
        trainer.should_stop = trainer.should_stop or should_stop
        if should_stop and self._verbose:
            elapsed = timedelta(seconds=int(self.time_elapsed("train")))
            rank_zero_info(trainer, log, f"Time limit reached. Elapsed time is {elapsed}. Signaling Trainer to stop.")
