"""``DeviceStatsMonitor``: the accelerator's device statistics, logged around every train/val/test batch.

Keys are ``DeviceStatsMonitor.<hook>/<stat>`` (the logger's group separator), at the step of the last
optimizer step, every ``log_every_n_steps`` as Lightning logs them. On CPU the statistics come from the optional
``psutil`` (Lightning's error when it is missing); on CUDA from ``torch.cuda.memory_stats``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional

from trainer.accelerators import _PSUTIL_MISSING, get_cpu_stats, psutil_available
from trainer.callbacks.callback import Callback
from trainer.exceptions import MisconfigurationException

if TYPE_CHECKING:  # pragma: no cover
    from trainer.module import LightningModule
    from trainer.trainer import Trainer


class DeviceStatsMonitor(Callback):
    """Logs device statistics; needs a logger.

    Args:
        cpu_stats: None: CPU stats only when training on the CPU; True: always as well; False: never.
    """

    def __init__(self, cpu_stats: Optional[bool] = None) -> None:
        self._cpu_stats = cpu_stats

    def setup(self, trainer: "Trainer", pl_module: "LightningModule", stage: str) -> None:
        if stage != "fit":
            return
        if not trainer.loggers:
            raise MisconfigurationException("Cannot use `DeviceStatsMonitor` callback with `Trainer(logger=False)`.")
        device = trainer.strategy.root_device
        if self._cpu_stats is None and device.type == "cpu" and not psutil_available():
            raise ModuleNotFoundError(
                f"`DeviceStatsMonitor` cannot log CPU stats as `psutil` is not installed. {_PSUTIL_MISSING} "
            )

    def _get_and_log_device_stats(self, trainer: "Trainer", key: str) -> None:
        if not trainer._logger_connector.should_update_logs:
            return
        device = trainer.strategy.root_device
        if self._cpu_stats is False and device.type == "cpu":
            return
        stats: Dict[str, Any] = trainer.accelerator.get_device_stats(device)
        if self._cpu_stats and device.type != "cpu":  # on the CPU the accelerator's stats are already these
            stats.update(get_cpu_stats())
        step = trainer.fit_loop.epoch_loop._batches_that_stepped
        for logger in trainer.loggers:
            prefix = f"{self.__class__.__qualname__}.{key}{logger.group_separator}"
            logger.log_metrics({prefix + k: v for k, v in stats.items()}, step=step)

    def on_train_batch_start(self, trainer: "Trainer", pl_module: "LightningModule", batch: Any,
                             batch_idx: int) -> None:
        self._get_and_log_device_stats(trainer, "on_train_batch_start")

    def on_train_batch_end(self, trainer: "Trainer", pl_module: "LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._get_and_log_device_stats(trainer, "on_train_batch_end")

    def on_validation_batch_start(self, trainer: "Trainer", pl_module: "LightningModule", batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        self._get_and_log_device_stats(trainer, "on_validation_batch_start")

    def on_validation_batch_end(self, trainer: "Trainer", pl_module: "LightningModule", outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self._get_and_log_device_stats(trainer, "on_validation_batch_end")

    def on_test_batch_start(self, trainer: "Trainer", pl_module: "LightningModule", batch: Any,
                            batch_idx: int, dataloader_idx: int = 0) -> None:
        self._get_and_log_device_stats(trainer, "on_test_batch_start")

    def on_test_batch_end(self, trainer: "Trainer", pl_module: "LightningModule", outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._get_and_log_device_stats(trainer, "on_test_batch_end")
