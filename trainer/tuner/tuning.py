"""``Tuner(trainer)``: ``lr_find`` and ``scale_batch_size`` with Lightning's arguments. Each runs the trainer's
``fit`` (or ``validate``/``test``/``predict``) with the matching callback first in line; the callback ends that
call once its search is done and the run is put back as it was."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from trainer.exceptions import MisconfigurationException

if TYPE_CHECKING:  # pragma: no cover
    from trainer.module import LightningModule
    from trainer.trainer import Trainer
    from trainer.tuner.lr_finder import _LRFinder

_METHODS = ("fit", "validate", "test", "predict")


class Tuner:
    """Tuner class to tune your model."""

    def __init__(self, trainer: "Trainer") -> None:
        self._trainer = trainer

    def scale_batch_size(
        self,
        model: "LightningModule",
        train_dataloaders: Optional[Any] = None,
        val_dataloaders: Optional[Any] = None,
        dataloaders: Optional[Any] = None,
        datamodule: Optional[Any] = None,
        method: str = "fit",
        mode: str = "power",
        steps_per_trial: int = 3,
        init_val: int = 2,
        max_trials: int = 25,
        batch_arg_name: str = "batch_size",
        margin: float = 0.05,
        max_val: int = 8192,
    ) -> Optional[int]:
        """The largest batch size (``batch_arg_name`` on the model, its hparams or the datamodule) that trains
        ``steps_per_trial`` steps without running out of memory; it is left set there. ``mode``: ``"power"``
        doubles until an OOM; ``"binsearch"`` then bisects and reduces the result by ``margin``."""
        _check_tuner_configuration(train_dataloaders, val_dataloaders, dataloaders, method)
        _check_scale_batch_size_configuration(self._trainer)
        assert 0.0 <= margin < 1.0, f"`margin` should be between 0 and 1. Found {margin=}"
        from trainer.callbacks.batch_size_finder import BatchSizeFinder

        finder = BatchSizeFinder(mode=mode, steps_per_trial=steps_per_trial, init_val=init_val,
                                 max_trials=max_trials, batch_arg_name=batch_arg_name, margin=margin, max_val=max_val)
        finder._early_exit = True
        self._run_with(finder, model, method, train_dataloaders, val_dataloaders, dataloaders, datamodule)
        return finder.optimal_batch_size

    def lr_find(
        self,
        model: "LightningModule",
        train_dataloaders: Optional[Any] = None,
        val_dataloaders: Optional[Any] = None,
        dataloaders: Optional[Any] = None,
        datamodule: Optional[Any] = None,
        method: str = "fit",
        min_lr: float = 1e-8,
        max_lr: float = 1,
        num_training: int = 100,
        mode: str = "exponential",
        early_stop_threshold: Optional[float] = 4.0,
        update_attr: bool = True,
        attr_name: str = "",
    ) -> Optional["_LRFinder"]:
        """Learning-rate range test over ``num_training`` steps from ``min_lr`` to ``max_lr``; returns the
        ``_LRFinder`` (``results``, ``suggestion()``, ``plot()``), and with ``update_attr`` sets the suggestion
        on the model's ``lr``/``learning_rate`` (or ``attr_name``)."""
        if method != "fit":
            raise MisconfigurationException("method='fit' is the only valid configuration to run lr finder.")
        _check_tuner_configuration(train_dataloaders, val_dataloaders, dataloaders, method)
        _check_lr_find_configuration(self._trainer)
        from trainer.callbacks.lr_finder import LearningRateFinder

        finder = LearningRateFinder(min_lr=min_lr, max_lr=max_lr, num_training_steps=num_training, mode=mode,
                                    early_stop_threshold=early_stop_threshold, update_attr=update_attr,
                                    attr_name=attr_name)
        finder._early_exit = True
        self._run_with(finder, model, "fit", train_dataloaders, val_dataloaders, None, datamodule)
        return finder.optimal_lr

    def _run_with(self, callback: Any, model: "LightningModule", method: str, train_dataloaders: Any,
                  val_dataloaders: Any, dataloaders: Any, datamodule: Any) -> None:
        trainer = self._trainer
        trainer.callbacks = [callback] + trainer.callbacks
        try:
            if method == "fit":
                trainer.fit(model, train_dataloaders, val_dataloaders, datamodule)
            elif method == "validate":
                trainer.validate(model, dataloaders, datamodule=datamodule)
            elif method == "test":
                trainer.test(model, dataloaders, datamodule=datamodule)
            else:
                trainer.predict(model, dataloaders, datamodule=datamodule)
        finally:
            trainer.callbacks = [cb for cb in trainer.callbacks if cb is not callback]


def _check_tuner_configuration(train_dataloaders: Any = None, val_dataloaders: Any = None, dataloaders: Any = None,
                               method: str = "fit") -> None:
    if method not in _METHODS:
        raise ValueError(f"method {method!r} is invalid. Should be one of {_METHODS}.")
    if method == "fit":
        if dataloaders is not None:
            raise MisconfigurationException(
                f"In tuner with method={method!r}, `dataloaders` argument should be None,"
                " please consider setting `train_dataloaders` and `val_dataloaders` instead."
            )
    elif train_dataloaders is not None or val_dataloaders is not None:
        raise MisconfigurationException(
            f"In tuner with `method`={method!r}, `train_dataloaders` and `val_dataloaders`"
            " arguments should be None, please consider setting `dataloaders` instead."
        )


def _check_lr_find_configuration(trainer: "Trainer") -> None:
    from trainer.callbacks.lr_finder import LearningRateFinder

    if any(isinstance(cb, LearningRateFinder) for cb in trainer.callbacks):
        raise ValueError(
            "Trainer is already configured with a `LearningRateFinder` callback."
            "Please remove it if you want to use the Tuner."
        )


def _check_scale_batch_size_configuration(trainer: "Trainer") -> None:
    if trainer.world_size > 1:
        raise ValueError("Tuning the batch size is currently not supported with distributed strategies.")
    from trainer.callbacks.batch_size_finder import BatchSizeFinder

    if any(isinstance(cb, BatchSizeFinder) for cb in trainer.callbacks):
        raise ValueError(
            "Trainer is already configured with a `BatchSizeFinder` callback."
            "Please remove it if you want to use the Tuner."
        )
