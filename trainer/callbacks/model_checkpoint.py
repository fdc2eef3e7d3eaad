"""``ModelCheckpoint``: save the model periodically and keep the top-k by a monitored metric (Lightning's rules).

File names, the default folder, when a save happens (train-epoch end vs validation end, every N steps, every time
interval, on exception), the top-k bookkeeping and the state-dict keys all follow Lightning 2.6, so a script
resumed or inspected after switching imports finds the same files.

Safety: the Trainer writes each file atomically (``trainer.save_checkpoint``); this callback only ever deletes
an old checkpoint *after* the save of its replacement has returned, so a crash never leaves zero checkpoints.
"""

import logging
import os
import re
import shutil
import time
import warnings
from copy import deepcopy
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Union
from weakref import proxy

import torch
import yaml
from torch import Tensor

from trainer import cloud_io
from trainer.callbacks._utils import (
    barrier,
    broadcast,
    is_global_zero,
    rank_zero_info,
    reduce_boolean_decision,
    total_val_batches,
    trainer_fn,
    val_check_interval_is_one_epoch,
    warn_once,
)
from trainer.callbacks.callback import Checkpoint
from trainer.exceptions import MisconfigurationException

if TYPE_CHECKING:  # pragma: no cover
    from trainer.module import LightningModule
    from trainer.trainer import Trainer

log = logging.getLogger(__name__)

_PATH = Union[str, os.PathLike]


def _is_local(path: _PATH) -> bool:
    return cloud_io.is_local_path(path)


class ModelCheckpoint(Checkpoint):
    r"""Save the model after every epoch (or N steps / a time interval), optionally keeping the best ``save_top_k``.

    Args:
        dirpath: Folder for the files; default ``<first logger's save_dir>/<name>/<version>/checkpoints``, or
            ``<default_root_dir>/checkpoints`` without a logger.
        filename: Template such as ``"{epoch}-{val_loss:.2f}"``; default ``"{epoch}-{step}"`` which, with
            ``auto_insert_metric_name``, gives ``epoch=0-step=10.ckpt``.
        monitor: Metric (a key of ``trainer.callback_metrics``) to rank checkpoints by; ``None`` keeps the latest.
        verbose: Log each decision.
        save_last: ``True`` also writes ``last.ckpt`` whenever a checkpoint is saved; ``"link"`` makes it a symlink.
        save_top_k: Keep the best k (``-1``: all, ``0``: none).
        save_on_exception: Save when fitting raises.
        save_weights_only: Save only the model weights.
        mode: ``"min"`` or ``"max"``.
        auto_insert_metric_name: ``{epoch}`` becomes ``epoch={epoch}`` in the file name.
        every_n_train_steps: Save every N optimizer steps (exclusive with the two below).
        train_time_interval: Save every ``timedelta``.
        every_n_epochs: Save every N epochs (default 1 when none of the three is given).
        save_on_train_epoch_end: Save at the end of the training epoch (``True``) or after validation (``False``);
            ``None`` decides from the Trainer's validation schedule.
        enable_version_counter: Append ``-v1``, ``-v2``... instead of overwriting an existing file of the same name.
    """

    CHECKPOINT_JOIN_CHAR = "-"
    CHECKPOINT_EQUALS_CHAR = "="
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"
    STARTING_VERSION = 1

    def __init__(
        self,
        dirpath: Optional[_PATH] = None,
        filename: Optional[str] = None,
        monitor: Optional[str] = None,
        verbose: bool = False,
        save_last: Optional[Union[bool, Literal["link"]]] = None,
        save_top_k: int = 1,
        save_on_exception: bool = False,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: Optional[int] = None,
        train_time_interval: Optional[timedelta] = None,
        every_n_epochs: Optional[int] = None,
        save_on_train_epoch_end: Optional[bool] = None,
        enable_version_counter: bool = True,
    ) -> None:
        super().__init__()
        self.monitor = monitor
        self.verbose = verbose
        self.save_last = save_last
        self.save_top_k = save_top_k
        self.save_on_exception = save_on_exception
        self.save_weights_only = save_weights_only
        self.auto_insert_metric_name = auto_insert_metric_name
        self._save_on_train_epoch_end = save_on_train_epoch_end
        self._enable_version_counter = enable_version_counter
        self._last_global_step_saved = 0  # nothing to save before the first optimizer step
        self._last_time_checked: Optional[float] = None
        self.current_score: Optional[Tensor] = None
        self.best_k_models: dict[str, Tensor] = {}
        self.kth_best_model_path = ""
        self.best_model_score: Optional[Tensor] = None
        self.best_model_path = ""
        self.last_model_path = ""
        self._last_checkpoint_saved = ""
        # A step/time-triggered save whose monitored metric only exists after validation waits for it.
        self._defer_save_until_validation = False
        # Whether the latest (non-sanity) validation run saw batches; used when the Trainer does not expose it.
        self._val_has_run = False

        if mode not in ("min", "max"):
            raise MisconfigurationException(f"`mode` can be min, max but got {mode}")
        self.mode = mode
        self.kth_value: Tensor = torch.tensor(torch.inf if mode == "min" else -torch.inf)

        if dirpath and _is_local(dirpath):
            dirpath = os.path.realpath(os.path.expanduser(os.fspath(dirpath)))
        self.dirpath: Optional[_PATH] = dirpath
        self.filename = filename

        if every_n_train_steps is None and every_n_epochs is None and train_time_interval is None:
            every_n_epochs, every_n_train_steps = 1, 0
        else:
            every_n_epochs = every_n_epochs or 0
            every_n_train_steps = every_n_train_steps or 0
        self._train_time_interval: Optional[timedelta] = train_time_interval
        self._every_n_epochs: int = every_n_epochs
        self._every_n_train_steps: int = every_n_train_steps
        self._validate_init_configuration()

    def _validate_init_configuration(self) -> None:
        if self.save_top_k < -1:
            raise MisconfigurationException(f"Invalid value for save_top_k={self.save_top_k}. Must be >= -1")
        if self._every_n_train_steps < 0:
            raise MisconfigurationException(
                f"Invalid value for every_n_train_steps={self._every_n_train_steps}. Must be >= 0"
            )
        if self._every_n_epochs < 0:
            raise MisconfigurationException(f"Invalid value for every_n_epochs={self._every_n_epochs}. Must be >= 0")
        triggers = (
            (self._every_n_train_steps >= 1) + (self._every_n_epochs >= 1) + (self._train_time_interval is not None)
        )
        if triggers > 1:
            raise MisconfigurationException(
                f"Combination of parameters every_n_train_steps={self._every_n_train_steps}, "
                f"every_n_epochs={self._every_n_epochs} and train_time_interval={self._train_time_interval} "
                "should be mutually exclusive."
            )
        if self.monitor is None and self.save_top_k not in (-1, 0, 1):
            raise MisconfigurationException(
                f"ModelCheckpoint(save_top_k={self.save_top_k}, monitor=None) is not a valid"
                " configuration. No quantity for top_k to track."
            )

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            monitor=self.monitor,
            mode=self.mode,
            every_n_train_steps=self._every_n_train_steps,
            every_n_epochs=self._every_n_epochs,
            train_time_interval=self._train_time_interval,
        )

    @property
    def every_n_epochs(self) -> Optional[int]:
        return self._every_n_epochs

    # ------------------------------------------------------------------ hooks

    def setup(self, trainer: "Trainer", pl_module: "LightningModule", stage: str) -> None:
        dirpath = broadcast(trainer, self._resolve_ckpt_dir(trainer))
        self.dirpath = dirpath
        if is_global_zero(trainer) and stage == "fit":
            self._warn_if_dir_not_empty(dirpath)
        if self.save_last == "link" and not _is_local(dirpath):
            raise ValueError(
                f"`ModelCheckpoint(save_last='link')` is only supported for local file paths, got `dirpath={dirpath}`."
            )

    def on_train_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self._last_time_checked = time.monotonic()

    def on_train_batch_end(
        self, trainer: "Trainer", pl_module: "LightningModule", outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not getattr(pl_module, "automatic_optimization", True):
            self._on_train_batch_end_manual(trainer, pl_module)
            return

        skip_due_to_state = self._should_skip_saving_checkpoint(trainer)
        skip_batch = self._every_n_train_steps < 1 or trainer.global_step % self._every_n_train_steps != 0

        skip_time = True
        now = time.monotonic()
        if self._train_time_interval is not None:
            prev = self._last_time_checked
            skip_time = prev is None or (now - prev) < self._train_time_interval.total_seconds()
            # Clocks differ across ranks: rank 0 decides, or ranks could disagree and hang in the save.
            skip_time = broadcast(trainer, skip_time)

        if skip_batch and skip_time:
            return
        if not skip_time:
            self._last_time_checked = now

        candidates = self._monitor_candidates(trainer)
        if self.monitor is not None and self.monitor not in candidates:
            self._defer_save_until_validation = True
            return

        # The monitored value may be stale; when validation follows this last batch, save with its fresh value.
        if (
            self.monitor is not None
            and not self._should_save_on_train_epoch_end(trainer)
            and self._is_last_batch(trainer, batch_idx)
            and self._will_validate_this_epoch(trainer)
        ):
            self._defer_save_until_validation = True
            return

        if skip_due_to_state:
            return
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def _on_train_batch_end_manual(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if self._every_n_train_steps < 1 or trainer.global_step % self._every_n_train_steps != 0:
            return
        if self._should_skip_saving_checkpoint(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        if self.monitor is not None and self.monitor not in candidates:
            self._defer_save_until_validation = True
            return

        # Lightning's documented recipe for manual optimization: a module that keeps ``saved_models``
        # (batch_idx -> state dict of ``self.layer``) gets the pre-optimizer-step state saved.
        saved = getattr(pl_module, "saved_models", None)
        layer = getattr(pl_module, "layer", None)
        if isinstance(saved, dict) and saved and isinstance(layer, torch.nn.Module):
            saved_state = saved[max(saved.keys())]
            with torch.no_grad():
                current_state = {k: v.detach().clone() for k, v in layer.state_dict().items()}
                try:
                    if not isinstance(saved_state, dict):
                        raise TypeError("Saved model state must be a dictionary")
                    layer.load_state_dict(saved_state)
                    self._save_topk_checkpoint(trainer, candidates)
                    self._save_last_checkpoint(trainer, candidates)
                    self._last_time_checked = time.monotonic()
                finally:
                    layer.load_state_dict(current_state)
            return

        if is_global_zero(trainer):
            warnings.warn(
                "Using ModelCheckpoint with manual optimization and every_n_train_steps, but no pre-optimization"
                " state was saved. The checkpoint will contain the model state AFTER optimization. To save the"
                " pre-optimization state, keep `self.saved_models[batch_idx] = {k: v.detach().clone() for k, v in"
                " self.layer.state_dict().items()}` in training_step before optimizer.step().",
                UserWarning,
            )
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
        self._last_time_checked = time.monotonic()

    def on_train_epoch_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer):
            self._save_at_epoch_boundary(trainer)

    def on_validation_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if not getattr(trainer, "sanity_checking", False):
            self._val_has_run = False

    def on_validation_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if not getattr(trainer, "sanity_checking", False) and total_val_batches(trainer) > 0:
            self._val_has_run = True
        if self._should_skip_saving_checkpoint(trainer) or self._should_save_on_train_epoch_end(trainer):
            return
        if self._defer_save_until_validation:
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
            self._defer_save_until_validation = False
            return
        self._save_at_epoch_boundary(trainer)

    def _save_at_epoch_boundary(self, trainer: "Trainer") -> None:
        candidates = self._monitor_candidates(trainer)
        if self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0:
            self._save_topk_checkpoint(trainer, candidates)
        # ``last`` follows a save made at this step (or, as a link, always points at the latest file).
        if self._last_global_step_saved == trainer.global_step or (
            self.save_last == "link" and self._last_checkpoint_saved
        ):
            self._save_last_checkpoint(trainer, candidates)

    def on_exception(self, trainer: "Trainer", pl_module: "LightningModule", exception: BaseException) -> None:
        if not self._should_save_on_exception(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        filepath = self.format_checkpoint_name(metrics=candidates)
        self._save_checkpoint(trainer, filepath)
        self._save_last_checkpoint(trainer, candidates)
        rank_zero_info(
            trainer,
            log,
            f"An {type(exception).__name__} was raised with message: {exception}, saved checkpoint to {filepath}",
        )

    def on_train_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if self.save_last and not self._last_checkpoint_saved:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best_model_score": self.best_model_score,
            "best_model_path": self.best_model_path,
            "current_score": self.current_score,
            "dirpath": self.dirpath,
            "best_k_models": self.best_k_models,
            "kth_best_model_path": self.kth_best_model_path,
            "kth_value": self.kth_value,
            "last_model_path": self.last_model_path,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        dirpath_from_ckpt = state_dict.get("dirpath", self.dirpath)
        if self.dirpath == dirpath_from_ckpt:
            self.best_model_score = state_dict["best_model_score"]
            self.kth_best_model_path = state_dict.get("kth_best_model_path", self.kth_best_model_path)
            self.kth_value = state_dict.get("kth_value", self.kth_value)
            self.best_k_models = state_dict.get("best_k_models", self.best_k_models)
            self.last_model_path = state_dict.get("last_model_path", self.last_model_path)
        else:
            warnings.warn(
                f"The dirpath has changed from {dirpath_from_ckpt!r} to {self.dirpath!r},"
                " therefore `best_model_score`, `kth_best_model_path`, `kth_value`, `last_model_path` and"
                " `best_k_models` won't be reloaded. Only `best_model_path` will be reloaded."
            )
        self.best_model_path = state_dict["best_model_path"]

    # ------------------------------------------------------------------ decisions

    def _should_skip_saving_checkpoint(self, trainer: "Trainer") -> bool:
        return (
            bool(getattr(trainer, "fast_dev_run", False))
            or trainer_fn(trainer) != "fit"
            or bool(getattr(trainer, "sanity_checking", False))
            or self._last_global_step_saved == trainer.global_step  # already saved at this step
        )

    def _should_save_on_exception(self, trainer: "Trainer") -> bool:
        return (
            self.save_on_exception
            and not bool(getattr(trainer, "fast_dev_run", False))
            and not bool(getattr(trainer, "sanity_checking", False))
            and self._last_global_step_saved != trainer.global_step
        )

    def _should_save_on_train_epoch_end(self, trainer: "Trainer") -> bool:
        if self._save_on_train_epoch_end is not None:
            return self._save_on_train_epoch_end
        if getattr(trainer, "_val_check_time_interval", None) is not None:
            return False
        if getattr(trainer, "check_val_every_n_epoch", 1) != 1:
            return False
        if total_val_batches(trainer) == 0:
            return True
        return val_check_interval_is_one_epoch(trainer)

    @staticmethod
    def _is_last_batch(trainer: "Trainer", batch_idx: int) -> bool:
        try:
            return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)
        except AttributeError:
            return batch_idx + 1 == getattr(trainer, "num_training_batches", -1)

    @staticmethod
    def _will_validate_this_epoch(trainer: "Trainer") -> bool:
        enabled = getattr(trainer, "enable_validation", None)
        if enabled is False or total_val_batches(trainer) <= 0:
            return False
        every = getattr(trainer, "check_val_every_n_epoch", 1)
        return every is None or (trainer.current_epoch + 1) % every == 0

    def _validation_has_run(self, trainer: "Trainer") -> bool:
        try:
            return bool(trainer.fit_loop.epoch_loop.val_loop._has_run)
        except AttributeError:
            return self._val_has_run

    def check_monitor_top_k(self, trainer: "Trainer", current: Optional[Tensor] = None) -> bool:
        if current is None:
            return False
        if self.save_top_k == -1:
            return True
        if len(self.best_k_models) < self.save_top_k:
            return True
        better = torch.lt if self.mode == "min" else torch.gt
        decision = bool(better(current, self.best_k_models[self.kth_best_model_path]))
        return reduce_boolean_decision(trainer, decision)

    # ------------------------------------------------------------------ names and folders

    def _format_checkpoint_name(
        self,
        filename: Optional[str],
        metrics: dict[str, Tensor],
        prefix: Optional[str] = None,
        auto_insert_metric_name: bool = True,
    ) -> str:
        if not filename:
            filename = "{epoch}" + self.CHECKPOINT_JOIN_CHAR + "{step}"
        # Each ``{name`` or ``{name:fmt}`` group; longest first so ``{val_loss`` is replaced before ``{val``.
        groups = sorted(re.findall(r"(\{.*?)[:\}]", filename), key=len, reverse=True)
        for group in groups:
            name = group[1:]
            if auto_insert_metric_name:
                filename = filename.replace(group, name + self.CHECKPOINT_EQUALS_CHAR + "{" + name)
            # Index into a dict argument so names with '/' or '.' still format.
            filename = filename.replace(group, f"{{0[{name}]")
            if name not in metrics:
                metrics[name] = torch.tensor(0)
        filename = filename.format(metrics)
        if prefix is not None:
            filename = self.CHECKPOINT_JOIN_CHAR.join([prefix, filename])
        return filename

    def format_checkpoint_name(
        self,
        metrics: dict[str, Tensor],
        filename: Optional[str] = None,
        ver: Optional[int] = None,
        prefix: Optional[str] = None,
    ) -> str:
        """The path (under ``dirpath``) that ``filename`` (default: this callback's) gives for ``metrics``.

        >>> ModelCheckpoint(dirpath=None, filename="{epoch}").format_checkpoint_name({"epoch": 3})
        'epoch=3.ckpt'
        """
        name = self._format_checkpoint_name(
            filename or self.filename, metrics, prefix=prefix, auto_insert_metric_name=self.auto_insert_metric_name
        )
        if ver is not None:
            name = self.CHECKPOINT_JOIN_CHAR.join((name, f"v{ver}"))
        ckpt_name = f"{name}{self.FILE_EXTENSION}"
        return os.path.join(self.dirpath, ckpt_name) if self.dirpath else ckpt_name

    def _resolve_ckpt_dir(self, trainer: "Trainer") -> _PATH:
        """``dirpath`` if given; else ``save_dir/name/version/checkpoints`` of the first logger (falling back to
        ``default_root_dir`` for a logger that saves nothing locally); else ``default_root_dir/checkpoints``."""
        if self.dirpath is not None:
            return self.dirpath
        loggers = list(getattr(trainer, "loggers", None) or [])
        if loggers:
            first = loggers[0]
            save_dir = first.save_dir if first.save_dir is not None else trainer.default_root_dir
            version = first.version
            version = version if isinstance(version, str) else f"version_{version}"
            return os.path.join(save_dir, str(first.name), version, "checkpoints")
        return os.path.join(trainer.default_root_dir, "checkpoints")

    def _find_last_checkpoints(self, trainer: "Trainer") -> set[str]:
        """The ``last*.ckpt`` files in the checkpoint folder (for ``ckpt_path="last"``)."""
        ckpt_dir = self._resolve_ckpt_dir(trainer)
        pattern = re.compile(rf"^{self.CHECKPOINT_NAME_LAST}(-(\d+))?")
        local = _is_local(ckpt_dir)
        found = set()
        for entry in cloud_io.list_dir(ckpt_dir):
            stem, suffix = os.path.splitext(entry)
            if suffix == self.FILE_EXTENSION and pattern.match(stem):
                path = os.path.join(ckpt_dir, entry)
                found.add(os.path.normpath(path) if local else path)  # normpath would fold a URL's "//"
        return found

    def _warn_if_dir_not_empty(self, dirpath: _PATH) -> None:
        if self.save_top_k != 0 and cloud_io.is_dir(dirpath) and len(cloud_io.list_dir(dirpath)) > 0:
            warnings.warn(f"Checkpoint directory {dirpath} exists and is not empty.")

    def _get_metric_interpolated_filepath_name(
        self, candidates: dict[str, Tensor], trainer: "Trainer", del_filepath: Optional[str] = None
    ) -> str:
        filepath = self.format_checkpoint_name(candidates)
        if self._enable_version_counter:
            version = self.STARTING_VERSION
            while self.file_exists(filepath, trainer) and filepath != del_filepath:
                filepath = self.format_checkpoint_name(candidates, ver=version)
                version += 1
        return filepath

    def _monitor_candidates(self, trainer: "Trainer") -> dict[str, Tensor]:
        candidates = deepcopy(dict(trainer.callback_metrics))
        epoch = candidates.get("epoch")
        candidates["epoch"] = epoch.int() if isinstance(epoch, Tensor) else torch.tensor(trainer.current_epoch)
        step = candidates.get("step")
        candidates["step"] = step.int() if isinstance(step, Tensor) else torch.tensor(trainer.global_step)
        return candidates

    def file_exists(self, filepath: _PATH, trainer: "Trainer") -> bool:
        """Whether ``filepath`` exists on rank 0, agreed by every rank (so their bookkeeping cannot diverge)."""
        local = cloud_io.exists(filepath) if is_global_zero(trainer) else False
        return reduce_boolean_decision(trainer, local, all=False)

    # ------------------------------------------------------------------ saving

    def _save_topk_checkpoint(self, trainer: "Trainer", candidates: dict[str, Tensor]) -> None:
        if self.save_top_k == 0:
            return
        if self.monitor is not None:
            if self.monitor not in candidates:
                message = (
                    f"`ModelCheckpoint(monitor={self.monitor!r})` could not find the monitored key in the returned"
                    f" metrics: {list(candidates)}."
                    f" HINT: Did you call `log({self.monitor!r}, value)` in the `LightningModule`?"
                )
                if self._validation_has_run(trainer):
                    raise MisconfigurationException(message)
                warn_once(message)
            self._save_monitor_checkpoint(trainer, candidates)
        else:
            self._save_none_monitor_checkpoint(trainer, candidates)

    def _save_monitor_checkpoint(self, trainer: "Trainer", candidates: dict[str, Tensor]) -> None:
        current = candidates.get(self.monitor)  # type: ignore[arg-type]
        if self.check_monitor_top_k(trainer, current):
            assert current is not None
            self._update_best_and_save(current, trainer, candidates)
        elif self.verbose:
            epoch, step = candidates["epoch"], candidates["step"]
            rank_zero_info(
                trainer, log, f"Epoch {epoch:d}, global step {step:d}: {self.monitor!r} was not in top {self.save_top_k}"
            )

    def _save_none_monitor_checkpoint(self, trainer: "Trainer", candidates: dict[str, Tensor]) -> None:
        filepath = self._get_metric_interpolated_filepath_name(candidates, trainer, self.best_model_path)
        previous, self.best_model_path = self.best_model_path, filepath
        self._save_checkpoint(trainer, filepath)
        if self.save_top_k == 1 and previous and self._should_remove_checkpoint(trainer, previous, filepath):
            self._remove_checkpoint(trainer, previous)

    def _update_best_and_save(self, current: Tensor, trainer: "Trainer", candidates: dict[str, Tensor]) -> None:
        k = len(self.best_k_models) + 1 if self.save_top_k == -1 else self.save_top_k

        del_filepath = None
        if len(self.best_k_models) == k and k > 0:
            del_filepath = self.kth_best_model_path
            self.best_k_models.pop(del_filepath)

        # A NaN score ranks worst.
        if isinstance(current, Tensor) and torch.isnan(current):
            current = torch.tensor(float("inf" if self.mode == "min" else "-inf"), device=current.device)

        filepath = self._get_metric_interpolated_filepath_name(candidates, trainer, del_filepath)

        self.current_score = current
        self.best_k_models[filepath] = current
        if len(self.best_k_models) == k:
            worst = max if self.mode == "min" else min
            self.kth_best_model_path = worst(self.best_k_models, key=self.best_k_models.get)  # type: ignore[arg-type]
            self.kth_value = self.best_k_models[self.kth_best_model_path]
        best = min if self.mode == "min" else max
        self.best_model_path = best(self.best_k_models, key=self.best_k_models.get)  # type: ignore[arg-type]
        self.best_model_score = self.best_k_models[self.best_model_path]

        if self.verbose:
            epoch, step = candidates["epoch"], candidates["step"]
            rank_zero_info(
                trainer,
                log,
                f"Epoch {epoch:d}, global step {step:d}: {self.monitor!r} reached {current:0.5f}"
                f" (best {self.best_model_score:0.5f}), saving model to {filepath!r} as top {k}",
            )
        self._save_checkpoint(trainer, filepath)
        # Only now that the new file exists may the one it displaces go.
        if del_filepath and self._should_remove_checkpoint(trainer, del_filepath, filepath):
            self._remove_checkpoint(trainer, del_filepath)

    def _save_last_checkpoint(self, trainer: "Trainer", candidates: dict[str, Tensor]) -> None:
        if not self.save_last:
            return
        filepath = self.format_checkpoint_name(candidates, self.CHECKPOINT_NAME_LAST)
        if self._enable_version_counter:
            version = self.STARTING_VERSION
            while self.file_exists(filepath, trainer) and filepath != self.last_model_path:
                filepath = self.format_checkpoint_name(candidates, self.CHECKPOINT_NAME_LAST, ver=version)
                version += 1

        previous, self.last_model_path = self.last_model_path, filepath
        if self.save_last == "link" and self._last_checkpoint_saved and self.save_top_k != 0:
            self._link_checkpoint(trainer, self._last_checkpoint_saved, filepath)
        else:
            self._save_checkpoint(trainer, filepath)
        if previous and self._should_remove_checkpoint(trainer, previous, filepath):
            self._remove_checkpoint(trainer, previous)

    def _save_checkpoint(self, trainer: "Trainer", filepath: str) -> None:
        trainer.save_checkpoint(filepath, self.save_weights_only)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if is_global_zero(trainer):
            for logger in getattr(trainer, "loggers", None) or []:
                logger.after_save_checkpoint(proxy(self))

    @staticmethod
    def _link_checkpoint(trainer: "Trainer", filepath: str, linkpath: str) -> None:
        if is_global_zero(trainer) and os.path.abspath(filepath) != os.path.abspath(linkpath):
            if os.path.islink(linkpath) or os.path.isfile(linkpath):
                os.remove(linkpath)
            elif os.path.isdir(linkpath):
                shutil.rmtree(linkpath)
            try:
                os.symlink(os.path.relpath(filepath, os.path.dirname(linkpath)), linkpath)
            except OSError:  # no symlinks here (e.g. some Windows setups): a copy is the next best thing
                shutil.copy(filepath, linkpath)
        barrier(trainer)

    def _should_remove_checkpoint(self, trainer: "Trainer", previous: str, current: str) -> bool:
        """Remove ``previous`` only if it is not ``current``, not the checkpoint we resumed from, and lives in
        ``dirpath`` (never delete a user's file elsewhere)."""
        if previous == current:
            return False
        if not _is_local(previous):
            return True
        previous_path = Path(previous).absolute()
        ckpt_path = getattr(trainer, "ckpt_path", None)
        if ckpt_path is not None and previous_path == Path(ckpt_path).absolute():
            return False
        assert self.dirpath is not None
        return Path(self.dirpath).absolute() in previous_path.parents

    def _remove_checkpoint(self, trainer: "Trainer", filepath: str) -> None:
        strategy = getattr(trainer, "strategy", None)
        if strategy is not None and hasattr(strategy, "remove_checkpoint"):
            strategy.remove_checkpoint(filepath)
        elif is_global_zero(trainer):
            if not _is_local(filepath):
                cloud_io.remove(filepath)
            elif os.path.isfile(filepath) or os.path.islink(filepath):
                os.remove(filepath)

    def to_yaml(self, filepath: Optional[_PATH] = None) -> None:
        """Write ``best_k_models`` (path -> score) to ``filepath`` (default ``dirpath/best_k_models.yaml``)."""
        best_k = {k: v.item() for k, v in self.best_k_models.items()}
        if filepath is None:
            assert self.dirpath
            filepath = os.path.join(self.dirpath, "best_k_models.yaml")
        with cloud_io.get_filesystem(filepath).open(os.fspath(filepath), "w") as fp:
            yaml.dump(best_k, fp)
