"""``ProgressBar``: the base class of progress-bar callbacks (Lightning's interface)."""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Optional, Union

import torch

from trainer.callbacks.callback import Callback

if TYPE_CHECKING:  # pragma: no cover
    from trainer.module import LightningModule
    from trainer.trainer import Trainer


class ProgressBar(Callback):
    """Base class for progress bars; keeps track of batch totals. Subclasses implement ``enable``/``disable``.

    The Trainer calls ``disable()`` on non-zero ranks and when it runs something that must not show a bar.
    """

    def __init__(self) -> None:
        self._trainer: Optional["Trainer"] = None
        self._current_eval_dataloader_idx: Optional[int] = None

    @property
    def trainer(self) -> "Trainer":
        if self._trainer is None:
            raise TypeError(f"The `{self.__class__.__name__}._trainer` reference has not been set yet.")
        return self._trainer

    @property
    def sanity_check_description(self) -> str:
        return "Sanity Checking"

    @property
    def train_description(self) -> str:
        return "Training"

    @property
    def validation_description(self) -> str:
        return "Validation"

    @property
    def test_description(self) -> str:
        return "Testing"

    @property
    def predict_description(self) -> str:
        return "Predicting"

    @property
    def total_train_batches(self) -> Union[int, float]:
        """Batches in this training epoch (``inf`` for an iterable without length); capped by ``max_steps``
        when ``max_epochs == -1``."""
        trainer = self.trainer
        if trainer.max_epochs == -1 and trainer.max_steps is not None and trainer.max_steps > 0:
            return min(trainer.num_training_batches, trainer.max_steps - trainer.global_step)
        return trainer.num_training_batches

    @property
    def total_val_batches_current_dataloader(self) -> Union[int, float]:
        trainer = self.trainer
        batches = trainer.num_sanity_val_batches if trainer.sanity_checking else trainer.num_val_batches
        if isinstance(batches, list):
            assert self._current_eval_dataloader_idx is not None
            return batches[self._current_eval_dataloader_idx]
        return batches

    @property
    def total_test_batches_current_dataloader(self) -> Union[int, float]:
        batches = self.trainer.num_test_batches
        if isinstance(batches, list):
            assert self._current_eval_dataloader_idx is not None
            return batches[self._current_eval_dataloader_idx]
        return batches

    @property
    def total_predict_batches_current_dataloader(self) -> Union[int, float]:
        assert self._current_eval_dataloader_idx is not None
        return self.trainer.num_predict_batches[self._current_eval_dataloader_idx]

    @property
    def total_val_batches(self) -> Union[int, float]:
        """Validation batches this epoch (0 when this epoch does not validate)."""
        trainer = self.trainer
        try:
            should_check = trainer.fit_loop.epoch_loop._should_check_val_epoch()
        except AttributeError:
            every = getattr(trainer, "check_val_every_n_epoch", 1)
            should_check = getattr(trainer, "enable_validation", True) and (
                every is None or (trainer.current_epoch + 1) % every == 0
            )
        if not should_check:
            return 0
        batches = trainer.num_val_batches
        return sum(batches) if isinstance(batches, list) else batches

    def has_dataloader_changed(self, dataloader_idx: int) -> bool:
        old = self._current_eval_dataloader_idx
        self._current_eval_dataloader_idx = dataloader_idx
        return old != dataloader_idx

    def reset_dataloader_idx_tracker(self) -> None:
        self._current_eval_dataloader_idx = None

    def disable(self) -> None:
        """Hide the bar (the Trainer calls this on non-zero ranks)."""
        raise NotImplementedError

    def enable(self) -> None:
        """Show the bar again."""
        raise NotImplementedError

    def print(self, *args: Any, **kwargs: Any) -> None:
        """Print without breaking the bar's display."""
        print(*args, **kwargs)

    def setup(self, trainer: "Trainer", pl_module: "LightningModule", stage: str) -> None:
        self._trainer = trainer
        if not getattr(trainer, "is_global_zero", True):
            self.disable()

    def get_metrics(
        self, trainer: "Trainer", pl_module: "LightningModule"
    ) -> dict[str, Union[int, str, float, dict[str, float]]]:
        """The values shown beside the bar: ``v_num`` (the logger version) then the ``prog_bar=True`` metrics."""
        standard = get_standard_metrics(trainer)
        # Lightning hands out floats here; a Trainer keeping device tensors is read (synced) only now.
        pbar_metrics = {k: _to_python(v) for k, v in trainer.progress_bar_metrics.items()}
        duplicates = list(standard.keys() & pbar_metrics.keys())
        if duplicates:
            warnings.warn(
                f"The progress bar already tracks a metric with the name(s) '{', '.join(duplicates)}' and"
                f" `self.log('{duplicates[0]}', ..., prog_bar=True)` will overwrite this value. "
                " If this is undesired, change the name or override `get_metrics()` in the progress bar callback.",
            )
        return {**standard, **pbar_metrics}


class _SwitchableBar(ProgressBar):
    """The concrete bars' on/off state: shown while enabled and ``refresh_rate > 0``.

    (The public ``ProgressBar`` base keeps Lightning's abstract ``enable``/``disable``.)
    """

    _enabled = True
    refresh_rate: Any

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.refresh_rate > 0

    @property
    def is_disabled(self) -> bool:
        return not self.is_enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True


def _to_python(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def get_standard_metrics(trainer: "Trainer") -> dict[str, Union[int, str]]:
    """``{"v_num": version}`` of the loggers (a string version shows its last 4 characters)."""
    from trainer.loggers.utilities import _version

    items: dict[str, Union[int, str]] = {}
    if trainer.loggers:
        version = _version(trainer.loggers)
        if version not in ("", None):
            if isinstance(version, str):
                version = version[-4:]
            items["v_num"] = version
    return items
