"""``BatchSizeFinder``: Lightning's callback searching the largest batch size that fits, at the start of
``fit``/``validate``/``test``/``predict``."""
from __future__ import annotations

import warnings
from typing import Any, Optional

from trainer.callbacks.callback import Callback
from trainer.exceptions import MisconfigurationException, _TunerExitException


class BatchSizeFinder(Callback):
    """Runs ``scale_batch_size`` when the call starts; the found size is ``optimal_batch_size`` and is left in the
    model's/datamodule's ``batch_arg_name`` for the rest of the call."""

    SUPPORTED_MODES = ("power", "binsearch")

    def __init__(
        self,
        mode: str = "power",
        steps_per_trial: int = 3,
        init_val: int = 2,
        max_trials: int = 25,
        batch_arg_name: str = "batch_size",
        margin: float = 0.05,
        max_val: int = 8192,
    ) -> None:
        mode = mode.lower()
        if mode not in self.SUPPORTED_MODES:
            raise ValueError(f"`mode` should be either of {self.SUPPORTED_MODES}")
        assert 0.0 <= margin < 1.0, f"`margin` should be between 0 and 1. Found {margin=}"
        self.optimal_batch_size: Optional[int] = init_val
        self._mode = mode
        self._steps_per_trial = steps_per_trial
        self._init_val = init_val
        self._max_trials = max_trials
        self._batch_arg_name = batch_arg_name
        self._margin = margin
        self._max_val = max_val
        self._early_exit = False

    def setup(self, trainer: Any, pl_module: Any, stage: Optional[str] = None) -> None:
        from trainer.tuner._attributes import lightning_hasattr

        if trainer.world_size > 1:
            raise MisconfigurationException("The Batch size finder is not supported with distributed strategies.")
        if trainer._data_sources.get("train_dataloader") is not None:
            raise MisconfigurationException(
                "The Batch size finder cannot be used with dataloaders passed directly to `.fit()`. Please disable"
                " the feature or incorporate the dataloader into your LightningModule or LightningDataModule."
            )
        if stage != "fit":
            loaders = trainer._data_sources.get(f"{_prefix(stage)}_dataloader")
            if isinstance(loaders, (list, tuple, dict)) and len(loaders) > 1:
                raise MisconfigurationException(
                    f"The Batch size finder cannot be used with multiple {_prefix(stage)} dataloaders."
                )
        if not lightning_hasattr(pl_module, self._batch_arg_name):
            raise MisconfigurationException(
                f"Field {self._batch_arg_name} not found in `model`, `datamodule`, nor their `hparams` attributes."
            )
        if (hasattr(pl_module, self._batch_arg_name) and hasattr(pl_module, "hparams")
                and self._batch_arg_name in pl_module.hparams):
            warnings.warn(
                f"Field `model.{self._batch_arg_name}` and `model.hparams.{self._batch_arg_name}` are mutually"
                f" exclusive! `model.{self._batch_arg_name}` will be used as the initial batch size for scaling."
                " If this is not the intended behavior, please remove either one."
            )

    def scale_batch_size(self, trainer: Any, pl_module: Any) -> None:
        from trainer.tuner.batch_size_scaling import _scale_batch_size

        self.optimal_batch_size = _scale_batch_size(
            trainer, self._mode, self._steps_per_trial, self._init_val, self._max_trials, self._batch_arg_name,
            self._margin, self._max_val,
        )
        if self._early_exit:
            raise _TunerExitException()

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.scale_batch_size(trainer, pl_module)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or trainer.state.fn != "validate":
            return
        self.scale_batch_size(trainer, pl_module)

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self.scale_batch_size(trainer, pl_module)

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self.scale_batch_size(trainer, pl_module)


def _prefix(stage: Optional[str]) -> str:
    return {"validate": "val", "test": "test", "predict": "predict"}.get(stage or "", "val")
