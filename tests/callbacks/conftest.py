"""A stand-in Trainer exposing only the public attributes callbacks read, so the callbacks can be driven
step by step (ours and pytorch-lightning's side by side) without running a real fit."""
from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any, Optional

import pytest
import torch


class FakeStrategy:
    root_device = torch.device("cpu")

    def barrier(self, *args: Any) -> None:
        pass

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision

    def remove_checkpoint(self, filepath: str) -> None:  # what Lightning's ModelCheckpoint calls
        if os.path.exists(filepath):
            os.remove(filepath)


class FakeTrainer:
    """Fit-time state of a Trainer. ``save_checkpoint`` writes a small real file and records the path."""

    def __init__(self, root: str, loggers: Optional[list] = None, **overrides: Any) -> None:
        self.default_root_dir = str(root)
        self.loggers = list(loggers or [])
        self.current_epoch = 0
        self.global_step = 0
        self.max_epochs = 3
        self.max_steps = -1
        self.callback_metrics: dict = {}
        self.progress_bar_metrics: dict = {}
        self.logged_metrics: dict = {}
        self.state = SimpleNamespace(fn="fit", stage="train")
        self.sanity_checking = False
        self.fast_dev_run = False
        self.is_global_zero = True
        self.global_rank = 0
        self.world_size = 1
        self.check_val_every_n_epoch = 1
        self.val_check_interval = 1.0
        self.num_training_batches = 4
        self.val_check_batch = 4
        self.num_val_batches = [2]
        self.num_sanity_val_batches = [2]
        self.num_test_batches = [2]
        self.num_predict_batches = [2]
        self.enable_validation = True
        self.ckpt_path = None
        self.should_stop = False
        self.log_every_n_steps = 1
        self.optimizers: list = []
        self.lr_scheduler_configs: list = []
        self.strategy = FakeStrategy()
        self.fit_loop = SimpleNamespace(
            epoch_loop=SimpleNamespace(
                _batches_that_stepped=0,
                val_loop=SimpleNamespace(_has_run=False),
                batch_progress=SimpleNamespace(is_last_batch=False),
            )
        )
        self._logger_connector = SimpleNamespace(should_update_logs=True)
        self.saved: list[str] = []
        for key, value in overrides.items():
            setattr(self, key, value)

    @property
    def logger(self):
        return self.loggers[0] if self.loggers else None

    def save_checkpoint(self, filepath: str, weights_only: bool = False) -> None:
        os.makedirs(os.path.dirname(filepath) or ".", exist_ok=True)
        torch.save({"global_step": self.global_step, "epoch": self.current_epoch}, filepath)
        self.saved.append(filepath)


def run_fit(
    trainer: FakeTrainer,
    callback: Any,
    val_metrics: list,
    batches: int = 4,
    train_metrics: Optional[list] = None,
    validate: bool = True,
) -> None:
    """Drive ``callback`` through Lightning's fit hook order for ``len(val_metrics)`` epochs.

    ``val_metrics[e]`` (a dict) becomes ``callback_metrics`` after epoch e's validation; ``train_metrics[e]``
    is set during epoch e's batches. Stops early when ``trainer.should_stop`` is set at an epoch end.
    """
    module = SimpleNamespace(automatic_optimization=True)
    callback.setup(trainer, module, "fit")
    callback.on_fit_start(trainer, module)
    callback.on_train_start(trainer, module)
    for epoch, metrics in enumerate(val_metrics):
        trainer.current_epoch = epoch
        callback.on_train_epoch_start(trainer, module)
        for b in range(batches):
            trainer.fit_loop.epoch_loop.batch_progress.is_last_batch = b == batches - 1
            callback.on_train_batch_start(trainer, module, None, b)
            trainer.global_step += 1
            trainer.fit_loop.epoch_loop._batches_that_stepped += 1
            if train_metrics is not None:
                trainer.callback_metrics.update({k: torch.tensor(float(v)) for k, v in train_metrics[epoch].items()})
            callback.on_train_batch_end(trainer, module, None, None, b)
        if validate:
            callback.on_validation_start(trainer, module)
            trainer.fit_loop.epoch_loop.val_loop._has_run = True
            trainer.callback_metrics.update({k: torch.tensor(float(v)) for k, v in metrics.items()})
            callback.on_validation_end(trainer, module)
        callback.on_train_epoch_end(trainer, module)
        if trainer.should_stop:
            break
    callback.on_train_end(trainer, module)
    callback.on_fit_end(trainer, module)


@pytest.fixture
def fake_trainer():
    """Factory: ``fake_trainer(root, loggers=None, **attrs)``."""
    return FakeTrainer


@pytest.fixture
def drive_fit():
    return run_fit
