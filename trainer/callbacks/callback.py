"""The Callback base class: every hook Lightning 2.x calls, each a no-op by default.

The Trainer only dispatches a hook to callbacks that override it (see ``trainer/hooks.py``), so
an un-overridden hook costs nothing per step.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict

import torch

if TYPE_CHECKING:  # pragma: no cover
    from trainer.module import LightningModule
    from trainer.trainer import Trainer


class Callback:
    """Base class for callbacks; override the hooks you need."""

    @property
    def state_key(self) -> str:
        """Key of this callback's state in a checkpoint's ``"callbacks"`` dict (Lightning's)."""
        return self.__class__.__qualname__

    def _generate_state_key(self, **kwargs: Any) -> str:
        return f"{self.__class__.__qualname__}{repr(kwargs)}"

    def setup(self, trainer: "Trainer", pl_module: "LightningModule", stage: str) -> None:
        """Called when fit, validate, test or predict begins."""

    def teardown(self, trainer: "Trainer", pl_module: "LightningModule", stage: str) -> None:
        """Called when fit, validate, test or predict ends."""

    def on_fit_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_fit_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_sanity_check_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_sanity_check_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_train_batch_start(
        self, trainer: "Trainer", pl_module: "LightningModule", batch: Any, batch_idx: int
    ) -> None: ...

    def on_train_batch_end(
        self, trainer: "Trainer", pl_module: "LightningModule", outputs: Any, batch: Any, batch_idx: int
    ) -> None: ...

    def on_train_epoch_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_train_epoch_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_validation_epoch_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_validation_epoch_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_test_epoch_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_test_epoch_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_predict_epoch_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_predict_epoch_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_validation_batch_start(
        self, trainer: "Trainer", pl_module: "LightningModule", batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...

    def on_validation_batch_end(
        self,
        trainer: "Trainer",
        pl_module: "LightningModule",
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None: ...

    def on_test_batch_start(
        self, trainer: "Trainer", pl_module: "LightningModule", batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...

    def on_test_batch_end(
        self,
        trainer: "Trainer",
        pl_module: "LightningModule",
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None: ...

    def on_predict_batch_start(
        self, trainer: "Trainer", pl_module: "LightningModule", batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None: ...

    def on_predict_batch_end(
        self,
        trainer: "Trainer",
        pl_module: "LightningModule",
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None: ...

    def on_train_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_train_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_validation_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_validation_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_test_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_test_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_predict_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_predict_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_exception(self, trainer: "Trainer", pl_module: "LightningModule", exception: BaseException) -> None: ...

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        pass

    def on_save_checkpoint(
        self, trainer: "Trainer", pl_module: "LightningModule", checkpoint: Dict[str, Any]
    ) -> None: ...

    def on_load_checkpoint(
        self, trainer: "Trainer", pl_module: "LightningModule", checkpoint: Dict[str, Any]
    ) -> None: ...

    def on_before_backward(self, trainer: "Trainer", pl_module: "LightningModule", loss: torch.Tensor) -> None: ...

    def on_after_backward(self, trainer: "Trainer", pl_module: "LightningModule") -> None: ...

    def on_before_optimizer_step(
        self, trainer: "Trainer", pl_module: "LightningModule", optimizer: torch.optim.Optimizer
    ) -> None: ...

    def on_before_zero_grad(
        self, trainer: "Trainer", pl_module: "LightningModule", optimizer: torch.optim.Optimizer
    ) -> None: ...


class Checkpoint(Callback):
    """Base class of checkpointing callbacks; the Trainer runs these last (Lightning's order)."""


