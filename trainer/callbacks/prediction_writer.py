"""BasePredictionWriter: write predictions to disk (or anywhere) per batch, per epoch, or both.

Subclass it and implement ``write_on_batch_end`` and/or ``write_on_epoch_end``; the predict loop hands
over the predictions with the dataset indices of each batch (``trainer.predict_loop.current_batch_indices``
and ``epoch_batch_indices``), as Lightning's does. With ``write_interval="epoch"`` the loop keeps the
predictions even under ``trainer.predict(..., return_predictions=False)``, so the epoch writer sees them.
"""
from __future__ import annotations

import inspect
from enum import Enum
from typing import TYPE_CHECKING, Any, Optional, Sequence

from trainer.callbacks.callback import Callback
from trainer.exceptions import MisconfigurationException

if TYPE_CHECKING:  # pragma: no cover
    from trainer.module import LightningModule
    from trainer.trainer import Trainer


class WriteInterval(str, Enum):
    """When a prediction writer writes: after every batch, once at the end of the epoch, or both."""

    BATCH = "batch"
    EPOCH = "epoch"
    BATCH_AND_EPOCH = "batch_and_epoch"

    @property
    def on_batch(self) -> bool:
        return self in (WriteInterval.BATCH, WriteInterval.BATCH_AND_EPOCH)

    @property
    def on_epoch(self) -> bool:
        return self in (WriteInterval.EPOCH, WriteInterval.BATCH_AND_EPOCH)


class BasePredictionWriter(Callback):
    """Base class for callbacks that write predictions during ``trainer.predict``.

    Args:
        write_interval: ``"batch"`` (``write_on_batch_end`` after each batch), ``"epoch"``
            (``write_on_epoch_end`` once, with all predictions) or ``"batch_and_epoch"``.
    """

    def __init__(self, write_interval: str = "batch") -> None:
        allowed = [interval.value for interval in WriteInterval]
        if write_interval not in allowed:
            raise MisconfigurationException(f"`write_interval` should be one of {allowed}.")
        self.interval = WriteInterval(write_interval)

    def setup(self, trainer: "Trainer", pl_module: "LightningModule", stage: str) -> None:
        if "dataloader_iter" in inspect.signature(pl_module.predict_step).parameters:
            raise NotImplementedError("The `PredictionWriterCallback` does not support using `dataloader_iter`.")

    def write_on_batch_end(
        self,
        trainer: "Trainer",
        pl_module: "LightningModule",
        prediction: Any,
        batch_indices: Optional[Sequence[int]],
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Override to write one batch's ``prediction``; ``batch_indices`` are its samples' dataset indices."""
        raise NotImplementedError()

    def write_on_epoch_end(
        self,
        trainer: "Trainer",
        pl_module: "LightningModule",
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        """Override to write all predictions at once (a list per dataloader when there are several)."""
        raise NotImplementedError()

    def on_predict_batch_end(
        self,
        trainer: "Trainer",
        pl_module: "LightningModule",
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.interval.on_batch:
            return
        batch_indices = trainer.predict_loop.current_batch_indices
        self.write_on_batch_end(trainer, pl_module, outputs, batch_indices, batch, batch_idx, dataloader_idx)

    def on_predict_epoch_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if not self.interval.on_epoch:
            return
        loop = trainer.predict_loop
        self.write_on_epoch_end(trainer, pl_module, loop.predictions, loop.epoch_batch_indices)


__all__ = ["BasePredictionWriter", "WriteInterval"]
