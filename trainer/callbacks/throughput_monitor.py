"""``ThroughputMonitor``: log samples/s, batches/s, items/s and FLOP/s (Lightning 2.x's callback and keys).

``Throughput`` keeps the running totals (time, batches, samples, lengths) in windows of the ``window_size`` latest
updates; once a window is full, the rates are the differences across it divided by the elapsed time. The callback
updates one ``Throughput`` per running stage and logs ``{stage}{separator}{key}`` (``train|device/samples_per_sec``,
``validate|batches``, ...) through ``trainer._logger_connector.log_metrics`` on Lightning's steps: training after each
optimizer step when the logger connector would log (``log_every_n_steps``), evaluation/predict after every batch with
the batch counter as the step.

FLOPs: ``flops_per_batch`` (constructor) or, like Lightning, a ``flops_per_batch`` attribute of the LightningModule
(compute it with ``measure_flops``). MFU needs the device's peak FLOP/s: pass ``available_flops``; by default it is
looked up for known CUDA devices (and unknown elsewhere, as in Lightning).
"""
from __future__ import annotations

import time
import warnings
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, TypeVar, Union

import torch

from trainer.callbacks.callback import Callback

if TYPE_CHECKING:  # pragma: no cover
    from trainer.module import LightningModule
    from trainer.trainer import Trainer

T = TypeVar("T", int, float)
_METRICS = Dict[str, Union[int, float]]


class _MonotonicWindow(List[T]):
    """A list of at most ``maxlen`` values that must strictly increase (the oldest drops out)."""

    def __init__(self, maxlen: int) -> None:
        super().__init__()
        self.maxlen = maxlen

    @property
    def last(self) -> Optional[T]:
        return self[-1] if self else None

    def append(self, x: T) -> None:
        last = self.last
        if last is not None and last >= x:
            raise ValueError(f"Expected the value to increase, last: {last}, current: {x}")
        list.append(self, x)
        if len(self) > self.maxlen:
            del self[0]

    def __setitem__(self, key: Any, value: Any) -> None:
        raise NotImplementedError("__setitem__ is not supported")


class Throughput:
    """Throughput from running totals (Lightning Fabric's ``Throughput``: same arguments, keys and checks).

    Keys of ``compute()``: ``time``, ``batches``, ``samples`` (and ``lengths``) -- the latest totals -- always;
    ``device/batches_per_sec``, ``device/samples_per_sec`` (and ``device/items_per_sec``) once ``window_size``
    updates were seen; ``device/flops_per_sec`` (and ``device/mfu`` with ``available_flops``) once ``window_size``
    FLOP counts were seen; the global ``batches_per_sec``, ``samples_per_sec``, ``items_per_sec``, ``flops_per_sec``
    only when ``world_size > 1``.

    Args:
        available_flops: peak FLOP/s of one device (for MFU).
        world_size: number of devices.
        window_size: number of updates of the rolling average (> 1).
        separator: key separator.
    """

    def __init__(
        self, available_flops: Optional[float] = None, world_size: int = 1, window_size: int = 100, separator: str = "/"
    ) -> None:
        if world_size <= 0:
            raise ValueError(f"`world_size` must be > 0, got {world_size}")
        if window_size <= 1:
            raise ValueError(f"`window_size` must be > 1, got {window_size}")
        self.available_flops = available_flops
        self.separator = separator
        self.world_size = world_size
        self._time: _MonotonicWindow[float] = _MonotonicWindow(maxlen=window_size)
        self._batches: _MonotonicWindow[int] = _MonotonicWindow(maxlen=window_size)
        self._samples: _MonotonicWindow[int] = _MonotonicWindow(maxlen=window_size)
        self._lengths: _MonotonicWindow[int] = _MonotonicWindow(maxlen=window_size)
        self._flops: Deque[float] = deque(maxlen=window_size)

    def update(
        self, *, time: float, batches: int, samples: int, lengths: Optional[int] = None, flops: Optional[float] = None
    ) -> None:
        """Record totals since the start: ``time`` (s), ``batches``, ``samples``, ``lengths`` (items), and the
        ``flops`` of this device since the previous update."""
        self._time.append(time)
        if samples < batches:
            raise ValueError(f"Expected samples ({samples}) to be greater or equal than batches ({batches})")
        self._batches.append(batches)
        self._samples.append(samples)
        if lengths is not None:
            if lengths < samples:
                raise ValueError(f"Expected lengths ({lengths}) to be greater or equal than samples ({samples})")
            self._lengths.append(lengths)
            if len(self._samples) != len(self._lengths):
                raise RuntimeError(
                    f"If lengths are passed ({len(self._lengths)}), there needs to be the same number of samples"
                    f" ({len(self._samples)})"
                )
        if flops is not None:
            self._flops.append(flops * self.world_size)

    def compute(self) -> _METRICS:
        sep = self.separator
        metrics: _METRICS = {"time": self._time[-1], "batches": self._batches[-1], "samples": self._samples[-1]}
        if self._lengths:
            metrics["lengths"] = self._lengths[-1]
        add_global = self.world_size > 1
        if len(self._time) == self._time.maxlen:
            elapsed = self._time[-1] - self._time[0]
            dev_batches = (self._batches[-1] - self._batches[0]) / elapsed
            dev_samples = (self._samples[-1] - self._samples[0]) / elapsed
            metrics[f"device{sep}batches_per_sec"] = dev_batches
            metrics[f"device{sep}samples_per_sec"] = dev_samples
            if add_global:
                metrics["batches_per_sec"] = dev_batches * self.world_size
                metrics["samples_per_sec"] = dev_samples * self.world_size
            if len(self._lengths) == self._lengths.maxlen:
                dev_items = (self._lengths[-1] - self._lengths[0]) / elapsed
                metrics[f"device{sep}items_per_sec"] = dev_items
                if add_global:
                    metrics["items_per_sec"] = dev_items * self.world_size
        if len(self._flops) == self._flops.maxlen:
            # the first window entry's FLOPs were spent before the window's first time stamp
            elapsed_flops = sum(self._flops) - self._flops[0]
            elapsed = self._time[-1] - self._time[0]
            flops_per_sec = elapsed_flops / elapsed
            dev_flops = flops_per_sec / self.world_size
            if add_global:
                metrics["flops_per_sec"] = flops_per_sec
            metrics[f"device{sep}flops_per_sec"] = dev_flops
            if self.available_flops:
                metrics[f"device{sep}mfu"] = dev_flops / self.available_flops
        return metrics

    def reset(self) -> None:
        self._time.clear()
        self._batches.clear()
        self._samples.clear()
        self._lengths.clear()
        self._flops.clear()


def measure_flops(
    model: torch.nn.Module,
    forward_fn: Callable[[], torch.Tensor],
    loss_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> int:
    """FLOPs of one ``forward_fn()`` call (plus the loss and backward when ``loss_fn`` is given), counted by
    ``torch.utils.flop_counter``. A model on the ``meta`` device costs no compute."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        if loss_fn is None:
            forward_fn()
        else:
            loss_fn(forward_fn()).backward()
    return counter.get_total_flops()


# Peak dense FLOP/s of common CUDA devices (vendor data sheets; the same figures Lightning uses).
_CUDA_FLOPS: Dict[str, Dict[Union[str, torch.dtype], float]] = {
    "h200": {torch.float64: 3.4e13, torch.float32: 6.7e13, "tfloat32": 9.9e14, torch.bfloat16: 2.0e15,
             torch.float16: 2.0e15, torch.int8: 4.0e15},
    "h100 sxm": {torch.float64: 33.5e12, torch.float32: 66.9e12, "tfloat32": 494.7e12, torch.bfloat16: 989.4e12,
                 torch.float16: 989.4e12, torch.int8: 1978.9e12},
    "h100 nvl": {torch.float64: 67e12, torch.float32: 133.8e12, "tfloat32": 989.4e12, torch.bfloat16: 1978.8e12,
                 torch.float16: 1978.8e12, torch.int8: 3957.8e12},
    "h100 pcie": {torch.float64: 25.6e12, torch.float32: 51.2e12, "tfloat32": 378e12, torch.bfloat16: 756e12,
                  torch.float16: 756e12, torch.int8: 1513e12},
    "a100": {torch.float64: 9.7e12, torch.float32: 19.5e12, "tfloat32": 156e12, torch.bfloat16: 312e12,
             torch.float16: 312e12, torch.int8: 624e12},
    "a10g": {torch.float32: 31.2e12, "tfloat32": 62.5e12, torch.bfloat16: 125e12, torch.float16: 125e12,
             torch.int8: 250e12},
    "l4": {torch.float32: 30.3e12, "tfloat32": 60e12, torch.bfloat16: 121e12, torch.float16: 121e12,
           torch.int8: 242e12},
    "t4": {torch.float32: 8.1e12, torch.float16: 65e12, torch.int8: 130e12},
    "v100": {torch.float64: 7.8e12, torch.float32: 15.7e12, torch.float16: 125e12},
}


def get_available_flops(device: torch.device, dtype: Union[torch.dtype, str]) -> Optional[int]:
    """Peak FLOP/s of ``device`` for ``dtype``, or ``None`` (with a warning) when it is not known. CPUs are not
    known (as in Lightning)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    chip = name.lower()
    if "h200" in chip:
        key = "h200"
    elif "h100" in chip:
        key = "h100 nvl" if "nvl" in chip else "h100 pcie" if ("pcie" in chip or "hbm2e" in chip) else "h100 sxm"
    elif "a100" in chip:
        key = "a100"
    elif "a10g" in chip:
        key = "a10g"
    elif "l4" in chip and "l40" not in chip:
        key = "l4"
    elif "t4" in chip:
        key = "t4"
    elif "v100" in chip:
        key = "v100"
    else:
        warnings.warn(f"FLOPs not found for {name!r}")
        return None
    table = _CUDA_FLOPS[key]
    if dtype is torch.float32 and torch.get_float32_matmul_precision() != "highest":
        dtype = "tfloat32"
    if dtype not in table:
        warnings.warn(f"{name!r} does not support {dtype}")
        return None
    return int(table[dtype])


def _compute_dtype(precision_plugin: Any) -> torch.dtype:
    """The dtype the model computes in under the Trainer's precision (what the peak FLOP/s depend on)."""
    flag = str(getattr(precision_plugin, "precision", "32-true"))
    if flag == "bf16-mixed":
        return torch.bfloat16
    if flag == "16-mixed":
        return torch.half
    if flag in ("bf16-true", "bf16"):
        return torch.bfloat16
    if flag in ("16-true", "16"):
        return torch.half
    if flag in ("64-true", "64"):
        return torch.double
    return torch.float32


def _evaluation_loop(trainer: "Trainer") -> Any:
    """The running evaluation loop (Lightning's ``trainer._evaluation_loop``): fit's validation loop while fitting."""
    if _stage_name(trainer.state.fn) == "fit":
        return trainer.fit_loop.epoch_loop.val_loop
    return trainer._evaluation_loop


def _should_update_logs(trainer: "Trainer") -> bool:
    """Lightning 2.6's ``_LoggerConnector.should_update_logs``: every ``log_every_n_steps`` of the active loop's
    counter -- the optimizer steps (+1) while training, the current batches while evaluating or predicting."""
    n = trainer.log_every_n_steps
    if n == 0:
        return False
    stage = _stage_name(trainer.state.stage)
    if stage == "train":
        step = trainer.fit_loop.epoch_loop._batches_that_stepped + 1
    elif stage in ("validate", "test", "sanity_check"):
        step = _evaluation_loop(trainer).batch_progress.current.ready
    elif stage == "predict":
        step = trainer.predict_loop.batch_progress.current.ready
    else:
        return True
    return step % n == 0 or bool(trainer.should_stop)


def _stage_name(stage: Any) -> str:
    return str(getattr(stage, "value", stage))


class ThroughputMonitor(Callback):
    r"""Computes and logs throughput with :class:`Throughput` (Lightning's ``ThroughputMonitor``).

    Args:
        batch_size_fn: the number of samples of a batch.
        length_fn: the number of items (for example tokens) of a batch; adds ``lengths`` and ``items_per_sec``.
        flops_per_batch: the FLOPs of one batch (for ``flops_per_sec``/``mfu``); when not given, the
            LightningModule's ``flops_per_batch`` attribute is read on every batch (Lightning's way).
        available_flops: peak FLOP/s of the device, for ``mfu``; by default looked up for known CUDA devices.
        \**kwargs: ``window_size`` and ``separator`` of :class:`Throughput`.

    Notes:
        It assumes the batch size is the same during all iterations. Only the global-zero rank logs.
    """

    def __init__(
        self,
        batch_size_fn: Callable[[Any], int],
        length_fn: Optional[Callable[[Any], int]] = None,
        flops_per_batch: Optional[float] = None,
        available_flops: Optional[float] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        unknown = set(kwargs) - {"window_size", "separator"}
        if unknown:
            raise TypeError(f"`ThroughputMonitor` got unexpected keyword argument(s): {sorted(unknown)}")
        self.kwargs = kwargs
        self.batch_size_fn = batch_size_fn
        self.length_fn = length_fn
        self.flops_per_batch = flops_per_batch
        self._available_flops_arg = available_flops
        self.available_flops: Optional[float] = available_flops
        self._throughputs: Dict[str, Throughput] = {}
        self._t0s: Dict[str, float] = {}
        self._lengths: Dict[str, int] = {}
        self._samples: Dict[str, int] = {}
        self._batches: Dict[str, int] = {}
        self._module_has_flops: Optional[bool] = None

    # ------------------------------------------------------------------ bookkeeping

    def setup(self, trainer: "Trainer", pl_module: "LightningModule", stage: str) -> None:
        if self._available_flops_arg is None:
            self.available_flops = get_available_flops(
                trainer.strategy.root_device, _compute_dtype(trainer.precision_plugin)
            )
        if _stage_name(stage) == "fit" and trainer.enable_validation:
            self._throughputs["validate"] = self._new_throughput(trainer)
        current = trainer.state.stage
        assert current is not None
        self._throughputs[_stage_name(current)] = self._new_throughput(trainer)

    def _new_throughput(self, trainer: "Trainer") -> Throughput:
        return Throughput(available_flops=self.available_flops, world_size=trainer.world_size, **self.kwargs)

    def _start(self, trainer: "Trainer") -> None:
        stage = _stage_name(trainer.state.stage)
        if _stage_name(trainer.state.fn) == "fit" or stage not in self._samples:
            self._throughputs[stage].reset()
            self._lengths[stage] = 0
            self._samples[stage] = 0
            self._batches[stage] = 0
        self._t0s[stage] = time.perf_counter()

    def _flops(self, pl_module: "LightningModule") -> Optional[float]:
        if self.flops_per_batch is not None:
            return self.flops_per_batch
        if self._module_has_flops is None:
            self._module_has_flops = hasattr(pl_module, "flops_per_batch")
            if not self._module_has_flops:
                warnings.warn(
                    "When using the `ThroughputMonitor`, you need to define a `flops_per_batch` attribute or property"
                    f" in {type(pl_module).__name__} to compute the FLOPs."
                )
        return getattr(pl_module, "flops_per_batch") if self._module_has_flops else None

    @torch.inference_mode()  # in case `length_fn` or `batch_size_fn` computes grads
    def _update(self, trainer: "Trainer", pl_module: "LightningModule", batch: Any) -> None:
        stage = _stage_name(trainer.state.stage)
        throughput = self._throughputs[stage]
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        elapsed = time.perf_counter() - self._t0s[stage]
        if self.length_fn is not None:
            self._lengths[stage] += self.length_fn(batch)
        flops = self._flops(pl_module)
        self._samples[stage] += self.batch_size_fn(batch)
        self._batches[stage] += 1
        throughput.update(
            time=elapsed,
            batches=self._batches[stage],
            samples=self._samples[stage],
            lengths=None if self.length_fn is None else self._lengths[stage],
            flops=flops,
        )

    def _compute(self, trainer: "Trainer", iter_num: Optional[int] = None) -> None:
        if not _should_update_logs(trainer):
            return
        stage = _stage_name(trainer.state.stage)
        throughput = self._throughputs[stage]
        metrics = {f"{stage}{throughput.separator}{k}": v for k, v in throughput.compute().items()}
        trainer._logger_connector.log_metrics(metrics, step=iter_num)

    # ------------------------------------------------------------------ hooks (global zero only)

    def on_train_start(self, trainer: "Trainer", *_: Any) -> None:
        if trainer.is_global_zero:
            self._start(trainer)

    def on_train_batch_end(
        self, trainer: "Trainer", pl_module: "LightningModule", outputs: Any, batch: Any, *_: Any
    ) -> None:
        if not trainer.is_global_zero:
            return
        self._update(trainer, pl_module, batch)
        if not trainer.fit_loop.epoch_loop._should_accumulate():
            self._compute(trainer)

    def on_validation_start(self, trainer: "Trainer", *_: Any) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self._start(trainer)

    def on_validation_batch_end(
        self, trainer: "Trainer", pl_module: "LightningModule", outputs: Any, batch: Any, *_: Any, **__: Any
    ) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        iter_num = _evaluation_loop(trainer).batch_progress.total.ready
        self._update(trainer, pl_module, batch)
        self._compute(trainer, iter_num)

    def on_validation_end(self, trainer: "Trainer", *_: Any) -> None:
        if trainer.sanity_checking or _stage_name(trainer.state.fn) != "fit" or not trainer.is_global_zero:
            return
        # shift the training clock by the validation time, so training rates do not count validation
        train_times = self._throughputs["train"]._time
        val_times = self._throughputs["validate"]._time
        train_elapsed = train_times[-1] if train_times else 0.0
        val_elapsed = val_times[-1] if val_times else 0.0
        training_finished = self._t0s["train"] + train_elapsed
        time_between_train_and_val = self._t0s["validate"] - training_finished
        self._t0s["train"] += time_between_train_and_val + val_elapsed

    def on_test_start(self, trainer: "Trainer", *_: Any) -> None:
        if trainer.is_global_zero:
            self._start(trainer)

    def on_test_batch_end(
        self, trainer: "Trainer", pl_module: "LightningModule", outputs: Any, batch: Any, *_: Any, **__: Any
    ) -> None:
        if not trainer.is_global_zero:
            return
        iter_num = _evaluation_loop(trainer).batch_progress.total.ready
        self._update(trainer, pl_module, batch)
        self._compute(trainer, iter_num)

    def on_predict_start(self, trainer: "Trainer", *_: Any) -> None:
        if trainer.is_global_zero:
            self._start(trainer)

    def on_predict_batch_end(
        self, trainer: "Trainer", pl_module: "LightningModule", outputs: Any, batch: Any, *_: Any, **__: Any
    ) -> None:
        if not trainer.is_global_zero:
            return
        iter_num = trainer.predict_loop.batch_progress.total.ready
        self._update(trainer, pl_module, batch)
        self._compute(trainer, iter_num)


__all__ = ["ThroughputMonitor", "Throughput", "measure_flops", "get_available_flops"]
