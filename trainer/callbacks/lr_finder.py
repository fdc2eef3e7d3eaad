"""``LearningRateFinder``: Lightning's callback running the learning-rate range test at ``on_fit_start``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from trainer.callbacks.callback import Callback
from trainer.exceptions import _TunerExitException

if TYPE_CHECKING:  # pragma: no cover
    from trainer.tuner.lr_finder import _LRFinder


class LearningRateFinder(Callback):
    """Runs ``lr_find`` when the fit starts (override ``on_fit_start`` and call ``lr_find`` elsewhere to run it at
    other epochs); the result is ``optimal_lr`` (an ``_LRFinder``), and with ``update_attr`` the suggestion is set
    on the model and the optimizer before training continues."""

    SUPPORTED_MODES = ("linear", "exponential")

    def __init__(
        self,
        min_lr: float = 1e-8,
        max_lr: float = 1,
        num_training_steps: int = 100,
        mode: str = "exponential",
        early_stop_threshold: Optional[float] = 4.0,
        update_attr: bool = True,
        attr_name: str = "",
    ) -> None:
        mode = mode.lower()
        if mode not in self.SUPPORTED_MODES:
            raise ValueError(f"`mode` should be either of {self.SUPPORTED_MODES}")
        self._min_lr = min_lr
        self._max_lr = max_lr
        self._num_training_steps = num_training_steps
        self._mode = mode
        self._early_stop_threshold = early_stop_threshold
        self._update_attr = update_attr
        self._attr_name = attr_name
        self._early_exit = False
        self.optimal_lr: Optional["_LRFinder"] = None

    def lr_find(self, trainer: Any, pl_module: Any) -> None:
        from trainer.seed import isolate_rng
        from trainer.tuner.lr_finder import _lr_find

        with isolate_rng():
            self.optimal_lr = _lr_find(
                trainer, pl_module, min_lr=self._min_lr, max_lr=self._max_lr, num_training=self._num_training_steps,
                mode=self._mode, early_stop_threshold=self._early_stop_threshold, update_attr=self._update_attr,
                attr_name=self._attr_name,
            )
        if self._early_exit:
            raise _TunerExitException()

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.lr_find(trainer, pl_module)
