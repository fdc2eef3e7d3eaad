"""``StochasticWeightAveraging``: Lightning 2.6's epoch-wise SWA (Izmailov et al., 2018).

From epoch ``swa_epoch_start`` on, the LR scheduler is replaced by ``SWALR`` and the weights are averaged at the
start of every epoch; after the last epoch the average is copied into the model. A model with BatchNorm gets one
extra epoch that only runs forward passes (no backward) to recompute the running statistics for the averaged
weights, as ``torch.optim.swa_utils.update_bn`` would. The averaged model, its count and the SWALR state are the
callback's checkpoint state, so a resumed fit goes on averaging where it stopped.
"""
from __future__ import annotations

import logging
import warnings
from copy import deepcopy
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Literal, Optional, Union

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import SWALR

from trainer.callbacks._utils import rank_zero_info
from trainer.callbacks.callback import Callback
from trainer.core.optimizer import LRSchedulerConfig
from trainer.exceptions import MisconfigurationException

if TYPE_CHECKING:  # pragma: no cover
    from trainer.module import LightningModule
    from trainer.trainer import Trainer

log = logging.getLogger(__name__)

_AVG_FN = Callable[[Tensor, Tensor, Tensor], Tensor]


def _check_arguments(swa_lrs: Any, swa_epoch_start: Any, avg_fn: Any, device: Any) -> None:
    """Lightning's constructor checks, in its order and words."""
    start_msg = "swa_epoch_start should be a >0 integer or a float between 0 and 1."
    if isinstance(swa_epoch_start, int) and swa_epoch_start < 1:
        raise MisconfigurationException(start_msg)
    if isinstance(swa_epoch_start, float) and not 0 <= swa_epoch_start <= 1:
        raise MisconfigurationException(start_msg)
    bad_type = not isinstance(swa_lrs, (float, list))
    bad_float = isinstance(swa_lrs, float) and swa_lrs <= 0
    bad_list = isinstance(swa_lrs, list) and not all(isinstance(lr, float) and lr > 0 for lr in swa_lrs)
    if bad_type or bad_float or bad_list:
        raise MisconfigurationException("The `swa_lrs` should a positive float, or a list of positive floats")
    if avg_fn is not None and not callable(avg_fn):
        raise MisconfigurationException("The `avg_fn` should be callable.")
    if device is not None and not isinstance(device, (torch.device, str)):
        raise MisconfigurationException(f"device is expected to be a torch.device or a str. Found {device}")


class StochasticWeightAveraging(Callback):
    """Averages the weights of the last epochs (SWA), with Lightning's arguments.

    Args:
        swa_lrs: the SWA learning rate: one float for every param group, or a list with one per group.
        swa_epoch_start: the epoch (1-based int) SWA starts at, or a fraction of ``max_epochs``.
        annealing_epochs: epochs of the SWALR annealing phase.
        annealing_strategy: ``"cos"`` or ``"linear"``.
        avg_fn: ``(averaged, current, n_averaged) -> averaged``; default: the equal-weight running mean.
        device: where the averaged model lives (default ``"cpu"``; None: the model's device).
    """

    def __init__(
        self,
        swa_lrs: Union[float, List[float]],
        swa_epoch_start: Union[int, float] = 0.8,
        annealing_epochs: int = 10,
        annealing_strategy: Literal["cos", "linear"] = "cos",
        avg_fn: Optional[_AVG_FN] = None,
        device: Optional[Union[torch.device, str]] = torch.device("cpu"),
    ) -> None:
        _check_arguments(swa_lrs, swa_epoch_start, avg_fn, device)
        self.n_averaged: Optional[Tensor] = None
        self._swa_epoch_start = swa_epoch_start
        self._swa_lrs = swa_lrs
        self._annealing_epochs = annealing_epochs
        self._annealing_strategy = annealing_strategy
        self._avg_fn = avg_fn or self.avg_fn
        self._device = device
        self._model_contains_batch_norm: Optional[bool] = None
        self._average_model: Optional["LightningModule"] = None
        self._initialized = False
        self._swa_scheduler: Any = None
        self._scheduler_state: Optional[dict] = None
        self._init_n_averaged = 0
        self._latest_update_epoch = -1
        self.momenta: Dict[nn.modules.batchnorm._BatchNorm, Optional[float]] = {}
        self._max_epochs: int
        self._accumulate_grad_batches: int = 1

    @property
    def swa_start(self) -> int:
        assert isinstance(self._swa_epoch_start, int)
        return max(self._swa_epoch_start - 1, 0)  # 0-based

    @property
    def swa_end(self) -> int:
        if self._max_epochs == -1:
            return float("inf")  # type: ignore[return-value]
        return self._max_epochs - 1  # 0-based

    @staticmethod
    def pl_module_contains_batch_norm(pl_module: "LightningModule") -> bool:
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in pl_module.modules())

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: "Trainer", pl_module: "LightningModule", stage: str) -> None:
        from trainer.strategies.deepspeed import DeepSpeedStrategy
        from trainer.strategies.fsdp import FSDPStrategy

        if isinstance(trainer.strategy, (FSDPStrategy, DeepSpeedStrategy)):
            raise MisconfigurationException("SWA does not currently support sharded models.")
        self._average_model = deepcopy(pl_module)  # before the model moves to its device

    def on_fit_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if len(trainer.optimizers) != 1:
            raise MisconfigurationException("SWA currently works with 1 `optimizer`.")
        if len(trainer.lr_scheduler_configs) > 1:
            raise MisconfigurationException("SWA currently not supported for more than 1 `lr_scheduler`.")
        max_epochs = trainer.max_epochs
        assert max_epochs is not None
        if isinstance(self._swa_epoch_start, float):
            if max_epochs == -1:
                raise MisconfigurationException(
                    "SWA with `swa_epoch_start` as a float is not supported when `max_epochs=-1`. "
                    "Please provide `swa_epoch_start` as an integer."
                )
            self._swa_epoch_start = int(max_epochs * self._swa_epoch_start)
        self._model_contains_batch_norm = self.pl_module_contains_batch_norm(pl_module)
        self._max_epochs = max_epochs
        if self._model_contains_batch_norm and max_epochs != -1:
            trainer.fit_loop.max_epochs += 1  # one more epoch: the BatchNorm statistics of the averaged weights
        if self._scheduler_state is not None:
            self._clear_schedulers(trainer)

    def on_train_epoch_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        epoch = trainer.current_epoch
        if not self._initialized and self.swa_start <= epoch <= self.swa_end:
            self._initialized = True
            self._start_swa(trainer, pl_module)
        if self.swa_start <= epoch <= self.swa_end and epoch > self._latest_update_epoch:
            assert self.n_averaged is not None and self._average_model is not None
            self.update_parameters(self._average_model, pl_module, self.n_averaged, self._avg_fn)
            self._latest_update_epoch = epoch
        # `==`, not `>`: a fit resumed from a checkpoint saved after this epoch must not run it again
        if self._max_epochs != -1 and epoch == self.swa_end + 1:
            self._start_batch_norm_epoch(trainer, pl_module)

    def on_train_epoch_end(self, trainer: "Trainer", *args: Any) -> None:
        trainer.fit_loop._skip_backward = False

    def on_train_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        # current_epoch was already advanced past the last epoch
        last = trainer.current_epoch - 1
        if self._model_contains_batch_norm and self._max_epochs != -1 and last == self.swa_end + 1:
            trainer.accumulate_grad_batches = self._accumulate_grad_batches
            trainer.fit_loop.max_batches -= 1
            trainer.fit_loop.max_epochs -= 1
            self.reset_momenta()
        elif last == self.swa_end or self._max_epochs == -1:
            if self._average_model is not None:
                self.transfer_weights(self._average_model, pl_module)

    # ------------------------------------------------------------------ phases
    def _start_swa(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        """First SWA epoch: the averaged model moves to its device and SWALR replaces the scheduler."""
        assert self._average_model is not None
        self._average_model = self._average_model.to(self._device or pl_module.device)
        optimizer = trainer.optimizers[0]
        if isinstance(self._swa_lrs, float):
            self._swa_lrs = [self._swa_lrs] * len(optimizer.param_groups)
        for lr, group in zip(self._swa_lrs, optimizer.param_groups):
            group["initial_lr"] = lr
        self._swa_scheduler = SWALR(
            optimizer,
            swa_lr=self._swa_lrs,  # type: ignore[arg-type]
            anneal_epochs=self._annealing_epochs,
            anneal_strategy=self._annealing_strategy,
            last_epoch=trainer.max_epochs if self._annealing_strategy == "cos" else -1,
        )
        if self._scheduler_state is not None:
            self._swa_scheduler.load_state_dict(self._scheduler_state)
        elif trainer.current_epoch != self.swa_start:
            warnings.warn(
                "SWA is initializing after swa_start without any checkpoint data. "
                "This may be caused by loading a checkpoint from an older version of PyTorch Lightning."
            )
        swa_config = LRSchedulerConfig(self._swa_scheduler)
        configs = trainer.lr_scheduler_configs
        if configs:
            old = configs[0]
            if old.interval != "epoch" or old.frequency != 1:
                warnings.warn(f"SWA is currently only supported every epoch. Found {old}")
            rank_zero_info(trainer, log, f"Swapping scheduler `{old.scheduler.__class__.__name__}`"
                                         f" for `{self._swa_scheduler.__class__.__name__}`")
            configs[0] = swa_config
        else:
            configs.append(swa_config)
        if self.n_averaged is None:
            self.n_averaged = torch.tensor(self._init_n_averaged, dtype=torch.long, device=pl_module.device)

    def _start_batch_norm_epoch(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        """The extra epoch: averaged weights in, BatchNorm statistics reset, forward passes only. The epoch is one
        accumulation window (one batch longer than the data), so no optimizer step lands inside it."""
        assert self._average_model is not None
        self.transfer_weights(self._average_model, pl_module)
        self.reset_batch_norm_and_save_state(pl_module)
        fit_loop = trainer.fit_loop
        fit_loop.max_batches += 1
        fit_loop._skip_backward = True
        self._accumulate_grad_batches = trainer.accumulate_grad_batches
        if not isinstance(fit_loop.max_batches, int):
            raise MisconfigurationException("Iterable-style datasets are not supported")
        trainer.accumulate_grad_batches = fit_loop.max_batches

    # ------------------------------------------------------------------ weights
    @staticmethod
    def transfer_weights(src_pl_module: "LightningModule", dst_pl_module: "LightningModule") -> None:
        for src, dst in zip(src_pl_module.parameters(), dst_pl_module.parameters()):
            dst.detach().copy_(src.to(dst.device))

    def reset_batch_norm_and_save_state(self, pl_module: "LightningModule") -> None:
        """Fresh running statistics and a cumulative mean (momentum None), as ``swa_utils.update_bn`` sets them."""
        self.momenta = {}
        for module in pl_module.modules():
            if not isinstance(module, nn.modules.batchnorm._BatchNorm):
                continue
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean = torch.zeros_like(module.running_mean, device=pl_module.device,
                                                   dtype=module.running_mean.dtype)
            module.running_var = torch.ones_like(module.running_var, device=pl_module.device,
                                                 dtype=module.running_var.dtype)
            self.momenta[module] = module.momentum
            module.momentum = None
            assert module.num_batches_tracked is not None
            module.num_batches_tracked *= 0

    def reset_momenta(self) -> None:
        for bn_module, momentum in self.momenta.items():
            bn_module.momentum = momentum

    @staticmethod
    def update_parameters(
        average_model: "LightningModule", model: "LightningModule", n_averaged: Tensor, avg_fn: _AVG_FN
    ) -> None:
        """One averaging step over the parameters (the first one copies), then ``n_averaged += 1``."""
        first = bool(n_averaged == 0)  # once per epoch
        for p_swa, p_model in zip(average_model.parameters(), model.parameters()):
            device = p_swa.device
            swa = p_swa.detach()
            current = p_model.detach().to(device)
            swa.copy_(current if first else avg_fn(swa, current, n_averaged.to(device)))
        n_averaged += 1

    @staticmethod
    def avg_fn(averaged_model_parameter: Tensor, model_parameter: Tensor, num_averaged: Tensor) -> Tensor:
        """The equal-weight running mean."""
        return averaged_model_parameter + (model_parameter - averaged_model_parameter) / (num_averaged + 1)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> Dict[str, Any]:
        return {
            "n_averaged": 0 if self.n_averaged is None else self.n_averaged.item(),
            "latest_update_epoch": self._latest_update_epoch,
            "scheduler_state": None if self._swa_scheduler is None else self._swa_scheduler.state_dict(),
            "average_model_state": None if self._average_model is None else self._average_model.state_dict(),
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._init_n_averaged = state_dict["n_averaged"]
        self._latest_update_epoch = state_dict["latest_update_epoch"]
        self._scheduler_state = state_dict["scheduler_state"]
        if self._average_model is not None:
            self._average_model.load_state_dict(state_dict["average_model_state"])

    @staticmethod
    def _clear_schedulers(trainer: "Trainer") -> None:
        """A resumed SWA fit: the saved scheduler state is SWALR's, which on_train_epoch_start sets up again; the
        configured scheduler must not receive it (relies on callback state being restored before schedulers')."""
        if trainer.lr_scheduler_configs:
            assert len(trainer.lr_scheduler_configs) == 1
            trainer.lr_scheduler_configs.clear()
