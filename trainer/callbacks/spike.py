"""``SpikeDetection``: stop training with ``TrainingSpikeException`` when the loss spikes (Lightning 2.6).

The reference is a running mean of the last ``window`` losses (torchmetrics' ``Running(MeanMetric)``, as
Lightning keeps it, so the checkpoint state is the same); a loss is a spike when it is not an improvement
over the previous one and is at least ``atol`` away and ``rtol`` times the mean away from the running mean
(or, with ``finite_only``, when it is not finite). The current and the previous batch indices are written
to a JSON file (``<default_root_dir>/skip_batches.json`` by default) so that a rerun can skip them.

Reading the loss decides whether to stop, so this callback synchronises with the device once per batch.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Mapping, Optional, Union

import torch

from trainer.callbacks._utils import barrier, is_global_zero, reduce_boolean_decision
from trainer.callbacks.callback import Callback

if TYPE_CHECKING:  # pragma: no cover
    from trainer.module import LightningModule
    from trainer.trainer import Trainer


class TrainingSpikeException(RuntimeError):
    """Raised when a training loss spike was detected."""

    def __init__(self, batch_idx: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(f"Training spike detected in batch {batch_idx}", *args, **kwargs)


def _running_mean(window: int) -> Any:
    try:
        from torchmetrics.aggregation import MeanMetric
        from torchmetrics.wrappers import Running
    except ImportError as err:
        raise RuntimeError("SpikeDetection requires `torchmetrics>=1.0.0` Please upgrade your version.") from err
    # each rank detects spikes on its own losses: no syncing inside the metric
    running = Running(MeanMetric(dist_sync_on_step=False, sync_on_compute=False), window=window)
    running.dist_sync_on_step = False  # torchmetrics#1899: the wrapper does not pass these on
    running.sync_on_compute = False
    return running


class SpikeDetection(Callback):
    """Terminates training with :class:`TrainingSpikeException` on a loss spike.

    Args:
        mode: ``"min"`` or ``"max"``: the direction in which the loss improves.
        window: size of the running mean the loss is compared with.
        warmup: batches (by ``batch_idx``) before spikes are looked for.
        atol: a spike is at least this far from the running mean (None: no absolute condition).
        rtol: a spike is at least ``rtol * running_mean`` from it (None: no relative condition).
        exclude_batches_path: the JSON file (or its folder) for the batches to skip; default the run's root dir.
        finite_only: treat non-finite losses as spikes (if False they are only kept out of the mean).
    """

    def __init__(
        self,
        mode: Literal["min", "max"] = "min",
        window: int = 10,
        warmup: int = 1,
        atol: Optional[float] = None,
        rtol: Optional[float] = 2.0,
        exclude_batches_path: Optional[Union[str, os.PathLike]] = None,
        finite_only: bool = True,
    ) -> None:
        super().__init__()
        self.last_val: Union[torch.Tensor, float] = 0.0
        self.running_mean = _running_mean(window)
        self.mode = mode
        self.warmup = warmup
        self.atol = atol
        self.rtol = rtol
        self.bad_batches: List[int] = []
        self.exclude_batches_path = exclude_batches_path
        self.finite_only = finite_only

    @torch.no_grad()
    def on_train_batch_end(self, trainer: "Trainer", pl_module: "LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if isinstance(outputs, torch.Tensor):
            loss = outputs.detach()
        elif isinstance(outputs, Mapping):
            loss = outputs["loss"].detach()
        else:
            raise TypeError(f"outputs have to be of type torch.Tensor or Mapping, got {type(outputs).__qualname__}")
        if self.exclude_batches_path is None:
            self.exclude_batches_path = os.path.join(trainer.default_root_dir, "skip_batches.json")
        self._check(trainer, loss, batch_idx)

    def _check(self, trainer: "Trainer", loss: torch.Tensor, batch_idx: int) -> None:
        if batch_idx == 0:
            self.running_mean.to(trainer.strategy.root_device)
        if not str(self.exclude_batches_path).endswith(".json"):
            self.exclude_batches_path = os.path.join(str(self.exclude_batches_path), "skip_batches.json")
        is_spike = bool(batch_idx >= self.warmup and self._is_spike(loss))
        barrier(trainer)
        # each rank decides for itself, but all ranks stop when any one saw a spike
        if reduce_boolean_decision(trainer, is_spike, all=False):
            self._handle_spike(trainer, batch_idx)
        elif self.finite_only or reduce_boolean_decision(trainer, bool(torch.isfinite(loss).all()), all=True):
            self._update_stats(loss)

    def _is_spike(self, loss: torch.Tensor) -> bool:
        with warnings.catch_warnings():  # compute() before any update warns; the mean is then 0
            warnings.simplefilter("ignore")
            running_val = self.running_mean.compute()
        if self.finite_only and not torch.isfinite(loss):
            return True
        if self._is_better(loss - self.last_val):
            return False
        return self._check_atol(loss, running_val) and self._check_rtol(loss, running_val)

    def _handle_spike(self, trainer: "Trainer", batch_idx: int) -> None:
        # the batch itself may be corrupt, or the previous one may have corrupted the weights: skip both
        self.bad_batches.extend([batch_idx - 1, batch_idx])
        if is_global_zero(trainer):
            path = str(self.exclude_batches_path)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                json.dump(self.bad_batches, f, indent=4)
        raise TrainingSpikeException(batch_idx=batch_idx)

    def _check_atol(self, val_a: Union[float, torch.Tensor], val_b: Union[float, torch.Tensor]) -> bool:
        return self.atol is None or bool(abs(val_a - val_b) >= abs(self.atol))

    def _check_rtol(self, val_a: Union[float, torch.Tensor], val_b: Union[float, torch.Tensor]) -> bool:
        return self.rtol is None or bool(abs(val_a - val_b) >= abs(self.rtol * val_b))

    def _is_better(self, diff_val: torch.Tensor) -> bool:
        if self.mode == "min":
            return bool((diff_val <= 0.0).all())
        if self.mode == "max":
            return bool((diff_val >= 0).all())
        raise ValueError(f"Invalid mode. Has to be min or max, found {self.mode}")

    def _update_stats(self, val: torch.Tensor) -> None:
        self.running_mean.update(val)
        self.last_val = val

    def state_dict(self) -> Dict[str, Any]:
        return {
            "last_val": self.last_val.item() if isinstance(self.last_val, torch.Tensor) else self.last_val,
            "mode": self.mode,
            "warmup": self.warmup,
            "atol": self.atol,
            "rtol": self.rtol,
            "bad_batches": self.bad_batches,
            "bad_batches_path": self.exclude_batches_path,
            "running": self.running_mean.state_dict(),
            "mean": self.running_mean.base_metric.state_dict(),
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        state = dict(state_dict)
        self.last_val = state.pop("last_val")
        self.mode = state.pop("mode")
        self.warmup = state.pop("warmup")
        self.atol = state.pop("atol")
        self.rtol = state.pop("rtol")
        self.bad_batches = state.pop("bad_batches")
        self.exclude_batches_path = state.pop("bad_batches_path")
        # Lightning 2.6 loads into a `self.running` it never defines (an AttributeError): the running mean is meant
        self.running_mean.load_state_dict(state.pop("running"))
        self.running_mean.base_metric.load_state_dict(state.pop("mean"))
