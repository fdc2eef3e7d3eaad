"""``WeightAveraging`` and ``EMAWeightAveraging``: an ``AveragedModel`` kept beside the trained one (Lightning 2.6).

The averaged copy is updated after optimizer steps (and/or epochs, see ``should_update``), swapped in for
validation, copied into the model when training ends, and saved in the checkpoint's ``state_dict`` (the
trained weights go to ``current_model_state``), so a resumed fit continues both.

``EMAWeightAveraging`` updates with multi-tensor (``torch._foreach_*``) operations on the device and never
reads a device value on the host: ``AveragedModel.update_parameters`` asks ``n_averaged == 0`` on every call,
which on a GPU waits for the step that just ran (the compiled engine's step is asynchronous). The arithmetic
is the one of ``get_ema_avg_fn`` (``decay * ema + (1 - decay) * current``), so the averages are Lightning's.
"""
from __future__ import annotations

import itertools
import logging
import warnings
from copy import deepcopy
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union

import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

from trainer.callbacks._utils import rank_zero_info
from trainer.callbacks.callback import Callback
from trainer.hooks import is_overridden

if TYPE_CHECKING:  # pragma: no cover
    from trainer.module import LightningModule
    from trainer.trainer import Trainer

log = logging.getLogger(__name__)


class WeightAveraging(Callback):
    """Keeps an :class:`torch.optim.swa_utils.AveragedModel` of the LightningModule (SWA by default).

    Args:
        device: where the averaged model lives; by default the model's device.
        use_buffers: average the buffers too (default ``True``, unlike ``AveragedModel``).
        kwargs: passed to ``AveragedModel`` (``avg_fn``, ``multi_avg_fn``).

    Override ``should_update(step_idx=None, epoch_idx=None)`` to choose when the average is updated.
    """

    def __init__(
        self,
        device: Optional[Union[torch.device, str, int]] = None,
        use_buffers: bool = True,
        **kwargs: Any,
    ) -> None:
        self._device: Optional[Union[torch.device, int]] = torch.device(device) if isinstance(device, str) else device
        self._use_buffers = use_buffers
        self._kwargs = kwargs
        self._average_model: Optional[AveragedModel] = None
        # optimizer steps (trainer.global_step) at the last update: 0 makes the first check follow the first step
        self._latest_update_step = 0
        # epoch of the last update: -1 lets should_update(epoch_idx=0) update after the first epoch
        self._latest_update_epoch = -1

    def should_update(self, step_idx: Optional[int] = None, epoch_idx: Optional[int] = None) -> bool:
        """Whether to update after optimizer step ``step_idx`` or epoch ``epoch_idx`` (0-based); default: every step."""
        return step_idx is not None

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: "Trainer", pl_module: "LightningModule", stage: str) -> None:
        if stage != "fit":
            return
        if is_overridden("configure_model", pl_module):
            warnings.warn(
                "You're using the WeightAveraging callback with a model that overrides the configure_model "
                "callback. WeightAveraging doesn't support sharding model layers, so you may run out of memory."
            )
            pl_module.configure_model()
        self._average_model = AveragedModel(
            model=pl_module, device=self._device or pl_module.device, use_buffers=self._use_buffers, **self._kwargs
        )

    def on_fit_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        # setup() runs before the strategy moves the model, and our LightningModule.device reads the parameters
        # (Lightning's reports the root device already in setup): the model's device is where it trains
        if self._device is None and self._average_model is not None:
            self._average_model.to(pl_module.device)

    def on_train_batch_end(
        self, trainer: "Trainer", pl_module: "LightningModule", outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step_idx = trainer.global_step - 1  # 0-based, like epoch_idx
        if trainer.global_step > self._latest_update_step and self.should_update(step_idx=step_idx):
            self._update_average(pl_module)
            self._latest_update_step = trainer.global_step

    def on_train_epoch_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if trainer.current_epoch > self._latest_update_epoch and self.should_update(epoch_idx=trainer.current_epoch):
            self._update_average(pl_module)
            self._latest_update_epoch = trainer.current_epoch

    def on_train_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        self._copy_average_to_current(pl_module)

    def on_validation_epoch_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> Dict[str, Any]:
        return {"latest_update_step": self._latest_update_step}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._latest_update_step = state_dict["latest_update_step"]

    def on_save_checkpoint(self, trainer: "Trainer", pl_module: "LightningModule", checkpoint: Dict[str, Any]) -> None:
        """The averaged weights become the checkpoint's ``state_dict``; the trained ones ``current_model_state``."""
        if self._average_model is None:
            rank_zero_info(
                trainer, log,
                "You're using the WeightAveraging callback, but saving a checkpoint outside the 'fit' stage. The state "
                "of the WeightAveraging callback won't be saved in the checkpoint. If training has finished, the "
                "average model parameters will be saved to the state_dict in the checkpoint.",
            )
            return
        average_state = self._average_model.state_dict()
        checkpoint["current_model_state"] = checkpoint["state_dict"]
        prefix = "module."
        checkpoint["state_dict"] = {k[len(prefix):]: v for k, v in average_state.items() if k.startswith(prefix)}
        checkpoint["averaging_state"] = {k: v for k, v in average_state.items() if not k.startswith(prefix)}

    def on_load_checkpoint(self, trainer: "Trainer", pl_module: "LightningModule", checkpoint: Dict[str, Any]) -> None:
        if self._average_model is None:
            warnings.warn(
                "You're using the WeightAveraging callback, but loading a checkpoint outside the 'fit' stage. The "
                "WeightAveraging state cannot be restored. If you're using the checkpoint for prediction or testing, "
                "you can ignore this warning. To disable the warning, remove the WeightAveraging callback."
            )
        elif "current_model_state" in checkpoint and "averaging_state" in checkpoint:
            rank_zero_info(trainer, log,
                           "Found current_model_state in the checkpoint. This will be used to initialize the model.")
            average_state = {"module." + k: v for k, v in checkpoint["state_dict"].items()}
            average_state.update(checkpoint["averaging_state"])
            self._average_model.load_state_dict(average_state)
            self._on_average_loaded()
            # the model was loaded from "state_dict" (the averaged weights): load the trained ones over it
            pl_module.load_state_dict(checkpoint["current_model_state"])
        else:
            warnings.warn(
                "The checkpoint was not created with WeightAveraging. Both the current and the average model will be "
                "initialized with state_dict."
            )
            self._average_model.module.load_state_dict(deepcopy(checkpoint["state_dict"]), strict=False)

    # ------------------------------------------------------------------ the averaged model
    def _update_average(self, pl_module: "LightningModule") -> None:
        assert self._average_model is not None
        self._average_model.update_parameters(pl_module)

    def _on_average_loaded(self) -> None:
        """Called after the averaged model's state (``n_averaged`` included) was loaded from a checkpoint."""

    def _paired_tensors(self, pl_module: "LightningModule") -> List[tuple]:
        assert self._average_model is not None
        average = itertools.chain(self._average_model.module.parameters(), self._average_model.module.buffers())
        current = itertools.chain(pl_module.parameters(), pl_module.buffers())
        return list(zip(average, current))

    def _swap_models(self, pl_module: "LightningModule") -> None:
        """Exchanges the values of the averaged and the current parameters and buffers (in place)."""
        for average, current in self._paired_tensors(pl_module):
            tmp = average.data.clone()
            average.data.copy_(current.data)
            current.data.copy_(tmp)

    def _copy_average_to_current(self, pl_module: "LightningModule") -> None:
        for average, current in self._paired_tensors(pl_module):
            current.data.copy_(average.data)


class EMAWeightAveraging(WeightAveraging):
    """Exponential moving average of the weights: ``ema = decay * ema + (1 - decay) * current``.

    Args:
        decay: the EMA decay in [0, 1].
        update_every_n_steps: update after every n-th optimizer step.
        update_starting_at_step: first optimizer step (0-based) that updates; None: from the start.
        update_starting_at_epoch: also update at the end of every epoch from this one on; None: never at epochs.
    """

    def __init__(
        self,
        device: Optional[Union[torch.device, str, int]] = None,
        use_buffers: bool = True,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: Optional[int] = None,
        update_starting_at_epoch: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(device=device, use_buffers=use_buffers, **kwargs, avg_fn=get_ema_avg_fn(decay=decay))
        self._decay = float(decay)
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.update_starting_at_epoch = update_starting_at_epoch
        self._averaged_once: Optional[bool] = None  # host mirror of `n_averaged > 0` (None: not known yet)

    def should_update(self, step_idx: Optional[int] = None, epoch_idx: Optional[int] = None) -> bool:
        if step_idx is not None:
            started = self.update_starting_at_step is None or step_idx >= self.update_starting_at_step
            on_frequency = self.update_every_n_steps > 0 and step_idx % self.update_every_n_steps == 0
            if started and on_frequency:
                return True
        if epoch_idx is not None:
            return self.update_starting_at_epoch is not None and epoch_idx >= self.update_starting_at_epoch
        return False

    def setup(self, trainer: "Trainer", pl_module: "LightningModule", stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            self._averaged_once = False

    def _on_average_loaded(self) -> None:
        assert self._average_model is not None
        self._averaged_once = bool(self._average_model.n_averaged > 0)  # once per resume, not per step

    @torch.no_grad()
    def _update_average(self, pl_module: "LightningModule") -> None:
        average_model = self._average_model
        assert average_model is not None
        if self._averaged_once is None:
            self._on_average_loaded()
        if average_model.use_buffers:
            pairs = self._paired_tensors(pl_module)
        else:
            pairs = list(zip(average_model.module.parameters(), pl_module.parameters()))
        averaged = [a.detach() for a, _ in pairs]
        current = [c.detach().to(a.device) for a, c in pairs]
        if not self._averaged_once:
            torch._foreach_copy_(averaged, current)
        else:
            self._ema_step(averaged, current)
        if not average_model.use_buffers:  # buffers follow the model, as AveragedModel keeps them
            for b_avg, b_model in zip(average_model.module.buffers(), pl_module.buffers()):
                b_avg.detach().copy_(b_model.detach().to(b_avg.device))
        average_model.n_averaged.add_(1)
        self._averaged_once = True

    def _ema_step(self, averaged: List[Tensor], current: List[Tensor]) -> None:
        """``decay * ema + (1 - decay) * current`` as get_ema_avg_fn computes it (the same roundings), with one
        multi-tensor call per operation for the floating tensors. Integer buffers (``num_batches_tracked``) go
        through the same float expression and are truncated back, as ``AveragedModel`` copies them."""
        decay = self._decay
        avg_f, cur_f = [], []
        for avg, cur in zip(averaged, current):
            if avg.is_floating_point() and avg.dtype == cur.dtype:
                avg_f.append(avg)
                cur_f.append(cur)
            else:
                avg.copy_(decay * avg + (1 - decay) * cur)
        if avg_f:
            scaled = torch._foreach_mul(cur_f, 1 - decay)
            torch._foreach_mul_(avg_f, decay)
            torch._foreach_add_(avg_f, scaled)
