"""``GradientAccumulationScheduler``: change ``trainer.accumulate_grad_batches`` by epoch (Lightning's callback).

``scheduling`` maps a zero-indexed epoch to the accumulation factor used from that epoch on; epoch 0 defaults to 1
when it is not given. The factor is set at ``on_train_epoch_start``; the loop reads it at every batch, and the last
batches of an epoch that do not fill a whole accumulation window still step the optimizer (like Lightning).
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Dict

from trainer.callbacks.callback import Callback
from trainer.exceptions import MisconfigurationException
from trainer.hooks import is_overridden

if TYPE_CHECKING:  # pragma: no cover
    from trainer.module import LightningModule
    from trainer.trainer import Trainer


class GradientAccumulationScheduler(Callback):
    r"""Change the gradient accumulation factor according to ``scheduling``.

    Args:
        scheduling: ``{epoch: accumulation_factor}``; epochs are zero-indexed, factors are ints >= 1.

    Raises:
        TypeError: if ``scheduling`` is empty.
        MisconfigurationException: if a key is not an int >= 0 or a value is not an int >= 1.

    Example::

        accumulator = GradientAccumulationScheduler(scheduling={4: 2})  # epochs 0-3: 1, from epoch 4 on: 2
        trainer = Trainer(callbacks=[accumulator])
    """

    def __init__(self, scheduling: Dict[int, int]) -> None:
        super().__init__()
        if not scheduling:
            raise TypeError("Empty dict cannot be interpreted correct")
        if any(not isinstance(key, int) or isinstance(key, bool) or key < 0 for key in scheduling):
            raise MisconfigurationException(
                f"Epoch should be an int greater than or equal to 0. Got {list(scheduling.keys())}."
            )
        if any(not isinstance(value, int) or isinstance(value, bool) or value < 1 for value in scheduling.values()):
            raise MisconfigurationException(
                f"Accumulation factor should be an int greater than 0. Got {list(scheduling.values())}."
            )
        minimal_epoch = min(scheduling.keys())
        if minimal_epoch != 0:  # the factor before the first scheduled epoch is 1
            scheduling.update({0: 1})  # Lightning updates the caller's dict too
        self.scheduling = scheduling
        self.epochs = sorted(scheduling.keys())

    def going_to_accumulate_grad_batches(self) -> bool:
        return any(v > 1 for v in self.scheduling.values())

    def get_accumulate_grad_batches(self, epoch: int) -> int:
        """The factor for ``epoch``: that of the last scheduled epoch <= ``epoch``."""
        for iter_epoch in reversed(self.epochs):
            if epoch >= iter_epoch:
                return self.scheduling[iter_epoch]
        return 1

    def on_train_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        """Checks the run can change the accumulation factor before any batch."""
        if not pl_module.automatic_optimization:
            raise RuntimeError(
                "Automatic gradient accumulation and the `GradientAccumulationScheduler` is not supported for"
                " manual optimization. Please remove the callback or switch to automatic optimization."
            )
        overridden = is_overridden("optimizer_step", pl_module) or is_overridden("optimizer_zero_grad", pl_module)
        if overridden and self.going_to_accumulate_grad_batches():
            warnings.warn(
                "When using `Trainer(accumulate_grad_batches != 1)` and overriding"
                " `LightningModule.optimizer_{step,zero_grad}`, the hooks will not be called on every batch"
                " (rather, they are called on every optimization step)."
            )
        if getattr(trainer.strategy, "handles_gradient_accumulation", False):
            raise RuntimeError(
                f"The `{type(trainer.strategy).__name__}` does not support `accumulate_grad_batches` changing"
                " between epochs."
            )
        if trainer.accumulate_grad_batches != 1:
            raise ValueError(
                "You have set `accumulate_grad_batches` and are using the `GradientAccumulationScheduler`"
                " callback. Either remove `accumulate_grad_batches` from the Trainer or remove the callback."
            )

    def on_train_epoch_start(self, trainer: "Trainer", *_: Any) -> None:
        trainer.accumulate_grad_batches = self.get_accumulate_grad_batches(trainer.current_epoch)
