"""``LearningRateMonitor``: log each optimizer's learning rate (and optionally momentum / weight decay).

Names follow Lightning: ``lr-<OptimizerClass>``, ``-1``, ``-2``... for further optimizers of the same class,
``/pg1``, ``/pg2``... (or the group's ``name``) for several parameter groups, the scheduler config's ``name``
when given; values go to every logger at ``step = fit_loop.epoch_loop._batches_that_stepped`` and into
``trainer.callback_metrics``.
"""
from __future__ import annotations

import itertools
import warnings
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch.optim import Optimizer

from trainer.callbacks.callback import Callback
from trainer.exceptions import MisconfigurationException

if TYPE_CHECKING:  # pragma: no cover
    from trainer.trainer import Trainer


class LearningRateMonitor(Callback):
    r"""Automatically monitor and log the learning rate of the optimizers during training.

    Args:
        logging_interval: ``"step"`` or ``"epoch"`` logs every optimizer at that interval; ``None`` follows each
            scheduler's own ``interval`` (optimizers without a scheduler are logged every step).
        log_momentum: Also log ``momentum`` (or ``betas[0]``) as ``<name>-momentum``.
        log_weight_decay: Also log ``weight_decay`` as ``<name>-weight_decay``.
    """

    def __init__(
        self, logging_interval: Optional[str] = None, log_momentum: bool = False, log_weight_decay: bool = False
    ) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise MisconfigurationException("logging_interval should be `step` or `epoch` or `None`.")
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay
        self.lrs: dict[str, list[float]] = {}
        self.last_momentum_values: dict[str, Optional[float]] = {}
        self.last_weight_decay_values: dict[str, Optional[float]] = {}

    def on_train_start(self, trainer: "Trainer", *args: Any, **kwargs: Any) -> None:
        if not trainer.loggers:
            raise MisconfigurationException("Cannot use `LearningRateMonitor` callback with `Trainer` that has no logger.")

        configs = list(trainer.lr_scheduler_configs or [])
        if self.log_momentum:

            def missing(key: str) -> bool:
                if configs:
                    return any(key not in c.scheduler.optimizer.defaults for c in configs)
                return any(key not in opt.defaults for opt in trainer.optimizers)

            if missing("momentum") and missing("betas"):
                warnings.warn(
                    "You have set log_momentum=True, but some optimizers do not"
                    " have momentum. This will log a value 0 for the momentum.",
                    RuntimeWarning,
                )

        names, seen_optimizers, seen_types = self._find_names_from_schedulers(configs)
        optimizer_names, _ = self._find_names_from_optimizers(trainer.optimizers, seen_optimizers, seen_types)
        flat = list(itertools.chain.from_iterable(names + optimizer_names))
        self.lrs = {name: [] for name in flat}
        self.last_momentum_values = {name + "-momentum": None for name in flat}
        self.last_weight_decay_values = {name + "-weight_decay": None for name in flat}

    def on_train_batch_start(self, trainer: "Trainer", *args: Any, **kwargs: Any) -> None:
        if not self._should_update_logs(trainer) or self.logging_interval == "epoch":
            return
        stats = self._extract_stats(trainer, "step" if self.logging_interval is None else "any")
        self._log(trainer, stats)

    def on_train_epoch_start(self, trainer: "Trainer", *args: Any, **kwargs: Any) -> None:
        if self.logging_interval == "step":
            return
        stats = self._extract_stats(trainer, "epoch" if self.logging_interval is None else "any")
        self._log(trainer, stats)

    @staticmethod
    def _log(trainer: "Trainer", stats: dict[str, float]) -> None:
        if stats:
            step = trainer.fit_loop.epoch_loop._batches_that_stepped
            for logger in trainer.loggers:
                logger.log_metrics(stats, step=step)

    @staticmethod
    def _should_update_logs(trainer: "Trainer") -> bool:
        """Lightning's ``log_every_n_steps`` rule, checked before the step runs (hence the ``+ 1``)."""
        connector = getattr(trainer, "_logger_connector", None)
        if connector is not None and hasattr(connector, "should_update_logs"):
            return bool(connector.should_update_logs)
        every = getattr(trainer, "log_every_n_steps", 50)
        if every == 0:
            return False
        step = trainer.fit_loop.epoch_loop._batches_that_stepped + 1
        return step % every == 0 or bool(trainer.should_stop)

    def _extract_stats(self, trainer: "Trainer", interval: str) -> dict[str, float]:
        stats: dict[str, float] = {}
        configs = list(trainer.lr_scheduler_configs or [])
        names, seen_optimizers, seen_types = self._find_names_from_schedulers(configs)
        self._remap_keys(names)
        for group_names, config in zip(names, configs):
            if interval in (config.interval, "any"):
                stats.update(self._get_optimizer_stats(config.scheduler.optimizer, group_names))

        optimizer_names, optimizers = self._find_names_from_optimizers(trainer.optimizers, seen_optimizers, seen_types)
        self._remap_keys(optimizer_names)
        for opt, group_names in zip(optimizers, optimizer_names):
            stats.update(self._get_optimizer_stats(opt, group_names))

        device = self._root_device(trainer)
        trainer.callback_metrics.update({k: torch.tensor(v, device=device) for k, v in stats.items()})
        return stats

    @staticmethod
    def _root_device(trainer: "Trainer") -> torch.device:
        strategy = getattr(trainer, "strategy", None)
        device = getattr(strategy, "root_device", None)
        return device if device is not None else torch.device("cpu")

    def _get_optimizer_stats(self, optimizer: Optimizer, names: list[str]) -> dict[str, float]:
        stats: dict[str, Any] = {}
        use_betas = "betas" in optimizer.defaults
        for group, name in zip(optimizer.param_groups, names):
            lr = group["lr"]
            self.lrs[name].append(lr)
            stats[name] = lr
            if self.log_momentum:
                momentum = group["betas"][0] if use_betas else group.get("momentum", 0)
                self.last_momentum_values[f"{name}-momentum"] = momentum
                stats[f"{name}-momentum"] = momentum
            if self.log_weight_decay:
                weight_decay = group["weight_decay"]
                self.last_weight_decay_values[f"{name}-weight_decay"] = weight_decay
                stats[f"{name}-weight_decay"] = weight_decay
        return stats

    def _remap_keys(self, names: list[list[str]], token: str = "/pg1") -> None:
        """An optimizer that gained parameter groups renames its ``lr-X`` history to ``lr-X/pg1``."""
        for group_names in names:
            for new_name in group_names:
                old_name = new_name.replace(token, "")
                if token in new_name and old_name in self.lrs:
                    self.lrs[new_name] = self.lrs.pop(old_name)
                elif new_name not in self.lrs:
                    self.lrs[new_name] = []

    @staticmethod
    def _add_prefix(name: str, optimizer_cls: type, seen_types: defaultdict) -> str:
        if optimizer_cls not in seen_types:
            return name
        count = seen_types[optimizer_cls]
        return name + f"-{count - 1}" if count > 1 else name

    @staticmethod
    def _add_suffix(name: str, param_groups: list[dict], index: int, use_names: bool = True) -> str:
        if len(param_groups) > 1:
            if not use_names:
                return f"{name}/pg{index + 1}"
            return f"{name}/{param_groups[index].get('name', f'pg{index + 1}')}"
        if use_names:
            pg_name = param_groups[index].get("name")
            return f"{name}/{pg_name}" if pg_name else name
        return name

    @staticmethod
    def _duplicate_param_group_names(param_groups: list[dict]) -> set[str]:
        names = [pg.get("name", f"pg{i}") for i, pg in enumerate(param_groups, start=1)]
        if len(names) == len(set(names)):
            return set()
        return {n for n in names if names.count(n) > 1}

    def _find_names_from_schedulers(self, configs: list[Any]) -> tuple[list[list[str]], list[Optimizer], defaultdict]:
        names: list[list[str]] = []
        seen_optimizers: list[Optimizer] = []
        seen_types: defaultdict = defaultdict(int)
        for config in configs:
            optimizer = config.scheduler.optimizer
            name = config.name if config.name is not None else "lr-" + optimizer.__class__.__name__
            names.append(self._check_duplicates_and_update_name(optimizer, name, seen_optimizers, seen_types, config))
        return names, seen_optimizers, seen_types

    def _find_names_from_optimizers(
        self, optimizers: list[Any], seen_optimizers: list[Optimizer], seen_types: defaultdict
    ) -> tuple[list[list[str]], list[Optimizer]]:
        names: list[list[str]] = []
        without_scheduler: list[Optimizer] = []
        for optimizer in optimizers:
            # A wrapper (e.g. a fused/compiled optimizer object) exposes the real one as ``.optimizer``.
            optimizer = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
            if optimizer in seen_optimizers:
                continue
            name = "lr-" + optimizer.__class__.__name__
            names.append(self._check_duplicates_and_update_name(optimizer, name, seen_optimizers, seen_types, None))
            without_scheduler.append(optimizer)
        return names, without_scheduler

    def _check_duplicates_and_update_name(
        self,
        optimizer: Optimizer,
        name: str,
        seen_optimizers: list[Optimizer],
        seen_types: defaultdict,
        config: Optional[Any],
    ) -> list[str]:
        seen_optimizers.append(optimizer)
        optimizer_cls = type(optimizer)
        if config is None or config.name is None:
            seen_types[optimizer_cls] += 1
        param_groups = optimizer.param_groups
        duplicates = self._duplicate_param_group_names(param_groups)
        if duplicates:
            raise MisconfigurationException(
                "A single `Optimizer` cannot have multiple parameter groups with identical "
                f"`name` values. {name} has duplicated parameter group names {duplicates}"
            )
        name = self._add_prefix(name, optimizer_cls, seen_types)
        return [self._add_suffix(name, param_groups, i) for i in range(len(param_groups))]
