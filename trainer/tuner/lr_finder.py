"""Learning-rate range test (Lightning's ``tuner.lr_finder``): train ``num_training`` steps with the learning rate
rising from ``min_lr`` to ``max_lr``, record the smoothed loss per step, suggest the lr of the steepest descent,
then put the model, optimizer, loops, callbacks and loggers back as they were."""
from __future__ import annotations

import logging
from copy import deepcopy
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union

import torch
from torch.optim.lr_scheduler import LRScheduler

from trainer.callbacks.callback import Callback
from trainer.exceptions import MisconfigurationException
from trainer.tuner import _state
from trainer.tuner._attributes import lightning_hasattr, lightning_setattr

if TYPE_CHECKING:  # pragma: no cover
    from trainer.module import LightningModule
    from trainer.trainer import Trainer

log = logging.getLogger(__name__)

_MODES = ("linear", "exponential")


def _matplotlib_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _determine_lr_attr_name(model: "LightningModule", attr_name: str = "") -> str:
    if attr_name:
        if not lightning_hasattr(model, attr_name):
            raise AttributeError(
                f"The attribute name for the learning rate was set to {attr_name}, but"
                " could not find this as a field in `model` or `model.hparams`."
            )
        return attr_name
    attr_options = ("lr", "learning_rate")
    for attr in attr_options:
        if lightning_hasattr(model, attr):
            return attr
    raise AttributeError(
        "When using the learning rate finder, either `model` or `model.hparams` should"
        f" have one of these fields: {attr_options}. If your model has a different name for the learning rate, set"
        " it with `.lr_find(attr_name=...)`."
    )


class _LRFinder:
    """The results of ``lr_find``: ``results["lr"]``/``results["loss"]``, ``suggestion()`` and ``plot()``."""

    def __init__(self, mode: str, lr_min: float, lr_max: float, num_training: int) -> None:
        assert mode in _MODES, "mode should be either `linear` or `exponential`"
        self.mode = mode
        self.lr_min = lr_min
        self.lr_max = lr_max
        self.num_training = num_training
        self.results: Dict[str, Any] = {}
        self._total_batch_idx = 0
        self._optimal_idx: Optional[int] = None

    def _exchange_scheduler(self, trainer: "Trainer") -> None:
        """The user's optimizer starts at ``lr_min``; the run's only scheduler is the range test's, per step."""
        from trainer.core.optimizer import LRSchedulerConfig

        optimizers = trainer.strategy.optimizers
        if len(optimizers) != 1:
            raise MisconfigurationException(
                f"`model.configure_optimizers()` returned {len(optimizers)}, but"
                " learning rate finder only works with single optimizer"
            )
        optimizer = optimizers[0]
        for group in optimizer.param_groups:
            group["lr"] = self.lr_min
            group["initial_lr"] = self.lr_min
        args = (optimizer, self.lr_max, self.num_training)
        scheduler = _LinearLR(*args) if self.mode == "linear" else _ExponentialLR(*args)
        trainer.strategy.lr_scheduler_configs = [LRSchedulerConfig(scheduler, interval="step")]

    def plot(self, suggest: bool = False, show: bool = False, ax: Optional[Any] = None) -> Optional[Any]:
        """Loss against learning rate (log x axis in exponential mode); ``suggest`` marks the suggestion red."""
        if not _matplotlib_available():
            raise MisconfigurationException(
                "To use the `plot` method, you must have Matplotlib installed."
                " Install it by running `pip install -U matplotlib`."
            )
        import matplotlib.pyplot as plt

        lrs, losses = self.results["lr"], self.results["loss"]
        if ax is None:
            fig, ax = plt.subplots()
        else:
            fig = ax.figure
        ax.plot(lrs, losses)
        if self.mode == "exponential":
            ax.set_xscale("log")
        ax.set_xlabel("Learning rate")
        ax.set_ylabel("Loss")
        if suggest:
            self.suggestion()
            if self._optimal_idx:
                ax.plot(lrs[self._optimal_idx], losses[self._optimal_idx], markersize=10, marker="o", color="red")
        if show:
            plt.show()
        return fig

    def suggestion(self, skip_begin: int = 10, skip_end: int = 1) -> Optional[float]:
        """The lr where the loss falls fastest (``torch.gradient`` over the finite losses, ends skipped); None with
        fewer than two points."""
        losses = torch.tensor(self.results["loss"][skip_begin:-skip_end])
        lrs = torch.tensor(self.results["lr"][skip_begin:-skip_end])
        finite = torch.isfinite(losses)
        losses, lrs = losses[finite], lrs[finite]
        if len(losses) < 2:
            log.error(
                "Failed to compute suggestion for learning rate because there are not enough points. Increase the loop"
                " iteration limits or the size of your dataset/dataloader."
            )
            self._optimal_idx = None
            return None
        gradients = torch.gradient(losses, spacing=[lrs])[0]
        steepest = int(torch.argmin(gradients).item())
        kept = torch.arange(len(self.results["loss"]))[skip_begin:-skip_end][finite]
        self._optimal_idx = int(kept[steepest].item())
        return self.results["lr"][self._optimal_idx]


def _lr_find(
    trainer: "Trainer",
    model: "LightningModule",
    min_lr: float = 1e-8,
    max_lr: float = 1,
    num_training: int = 100,
    mode: str = "exponential",
    early_stop_threshold: Optional[float] = 4.0,
    update_attr: bool = False,
    attr_name: str = "",
) -> Optional[_LRFinder]:
    """Runs the range test inside the current ``fit`` (from ``on_fit_start`` or later) and restores the run."""
    if trainer.fast_dev_run:
        import warnings

        warnings.warn("Skipping learning rate finder since `fast_dev_run` is enabled.")
        return None
    if update_attr:
        attr_name = _determine_lr_attr_name(model, attr_name)

    ckpt_path = _state.save_initial_state(trainer, "lr_find")
    start_steps = trainer.global_step
    params = _dump_params(trainer)
    _reset_params(trainer, num_training, early_stop_threshold)
    _state.set_progress_bar(trainer, False)
    lr_finder = _LRFinder(mode, min_lr, max_lr, num_training)
    finished = False
    try:
        lr_finder._exchange_scheduler(trainer)
        _run_fit_loop(trainer, params["loop_state_dict"])
        if trainer.global_step != num_training + start_steps:
            log.info(f"LR finder stopped early after {trainer.global_step} steps due to diverging loss.")
        recorder = trainer.callbacks[0]
        lr_finder.results.update({"lr": recorder.lrs, "loss": recorder.losses})
        lr_finder._total_batch_idx = trainer.fit_loop.total_batch_idx
        _restore_params(trainer, params)
        _state.set_progress_bar(trainer, True)
        lr_finder.results = trainer.strategy.broadcast(lr_finder.results)
        finished = True
    finally:
        _state.restore_initial_state(trainer, ckpt_path)
        trainer.fit_loop.reset_data()
        trainer.fit_loop.setup_data()

    if update_attr and finished:
        lr = lr_finder.suggestion()
        if lr is not None:
            lightning_setattr(model, attr_name, lr)
            for opt in trainer.optimizers or []:  # the run continues with the suggestion
                for group in opt.param_groups:
                    group["lr"] = lr
            log.info(f"Learning rate set to {lr}")
    return lr_finder


def _dump_params(trainer: "Trainer") -> Dict[str, Any]:
    return {
        "optimizers": trainer.strategy.optimizers,
        "lr_scheduler_configs": trainer.strategy.lr_scheduler_configs,
        "outputs": _state.mute_outputs(trainer),
        "max_steps": trainer.fit_loop.max_steps,
        "limit_val_batches": trainer.limit_val_batches,
        "loop_state_dict": deepcopy(trainer.fit_loop.state_dict()),
    }


def _reset_params(trainer: "Trainer", num_training: int, early_stop_threshold: Optional[float]) -> None:
    trainer.strategy.lr_scheduler_configs = []
    trainer.callbacks = [_LRCallback(num_training, early_stop_threshold, progress_bar_refresh_rate=1)]
    trainer.fit_loop.epoch_loop.max_steps = num_training + trainer.global_step
    trainer.limit_val_batches = num_training


def _restore_params(trainer: "Trainer", params: Dict[str, Any]) -> None:
    trainer.strategy.optimizers = params["optimizers"]
    trainer.strategy.lr_scheduler_configs = params["lr_scheduler_configs"]
    _state.unmute_outputs(trainer, params["outputs"])
    trainer.fit_loop.epoch_loop.max_steps = params["max_steps"]
    trainer.limit_val_batches = params["limit_val_batches"]
    trainer.fit_loop.load_state_dict(deepcopy(params["loop_state_dict"]))
    trainer.should_stop = False


def _run_fit_loop(trainer: "Trainer", loop_state: Dict[str, Any]) -> None:
    trainer.fit_loop.load_state_dict(deepcopy(loop_state))
    trainer.fit_loop.run()


class _LRCallback(Callback):
    """Records the lr before and the smoothed loss after each optimizer step; stops the run when the smoothed
    loss exceeds ``early_stop_threshold`` times the best one. ``beta`` is the smoothing's forget rate."""

    def __init__(self, num_training: int, early_stop_threshold: Optional[float] = 4.0,
                 progress_bar_refresh_rate: int = 0, beta: float = 0.98) -> None:
        self.num_training = num_training
        self.early_stop_threshold = early_stop_threshold
        self.beta = beta
        self.losses: List[float] = []
        self.lrs: List[float] = []
        self.avg_loss = 0.0
        self.best_loss = 0.0
        self.progress_bar_refresh_rate = progress_bar_refresh_rate
        self.progress_bar: Any = None

    def _steps_now(self, trainer: "Trainer") -> bool:
        return (trainer.fit_loop.batch_idx + 1) % trainer.accumulate_grad_batches == 0

    def on_train_batch_start(self, trainer: "Trainer", pl_module: Any, batch: Any, batch_idx: int) -> None:
        if not self._steps_now(trainer):
            return
        if self.progress_bar_refresh_rate and self.progress_bar is None:
            from tqdm import tqdm

            self.progress_bar = tqdm(desc="Finding best initial lr", total=self.num_training)
        self.lrs.append(trainer.lr_scheduler_configs[0].scheduler.lr[0])

    def on_train_batch_end(self, trainer: "Trainer", pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._steps_now(trainer):
            return
        if not outputs:  # training_step returned None: a NaN keeps lrs and losses aligned (ignored by suggestion)
            self.losses.append(float("nan"))
            return
        if self.progress_bar:
            self.progress_bar.update()
        loss = outputs if isinstance(outputs, torch.Tensor) else outputs["loss"]
        current_loss = loss.item()
        step = trainer.global_step
        self.avg_loss = self.beta * self.avg_loss + (1 - self.beta) * current_loss
        smoothed = self.avg_loss / (1 - self.beta ** (step + 1))
        if self.early_stop_threshold is not None and step > 1 and smoothed > self.early_stop_threshold * self.best_loss:
            trainer.should_stop = True
            if self.progress_bar:
                self.progress_bar.close()
        trainer.should_stop = trainer.strategy.broadcast(trainer.should_stop)
        if smoothed < self.best_loss or step == 1:
            self.best_loss = smoothed
        self.losses.append(smoothed)


class _RangeLR(LRScheduler):
    """Base of the two range-test schedules: ``lr`` is the value of the last ``get_lr``."""

    def __init__(self, optimizer: torch.optim.Optimizer, end_lr: float, num_iter: int, last_epoch: int = -1) -> None:
        self.end_lr = end_lr
        self.num_iter = num_iter
        super().__init__(optimizer, last_epoch)

    def _at(self, base_lr: float, r: float) -> float:
        raise NotImplementedError

    def get_lr(self) -> List[float]:
        r = (self.last_epoch + 1) / self.num_iter
        val = [self._at(base, r) for base in self.base_lrs] if self.last_epoch > 0 else list(self.base_lrs)
        self._lr = val
        return val

    @property
    def lr(self) -> Union[float, List[float]]:
        return self._lr


class _LinearLR(_RangeLR):
    """lr rises linearly from the optimizer's lr to ``end_lr`` over ``num_iter`` steps."""

    def _at(self, base_lr: float, r: float) -> float:
        return base_lr + r * (self.end_lr - base_lr)


class _ExponentialLR(_RangeLR):
    """lr rises geometrically from the optimizer's lr to ``end_lr`` over ``num_iter`` steps."""

    def _at(self, base_lr: float, r: float) -> float:
        return base_lr * (self.end_lr / base_lr) ** r
