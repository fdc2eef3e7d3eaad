"""``self.log`` machinery: per-hook defaults, result collection, and the Trainer's metric dicts.

Values stay device tensors. Step values are kept as they were logged; epoch values are reduced
on the device (batch-size-weighted mean, sum, min or max). Nothing here calls ``.item()``: the
host reads values only when a logger, the progress bar or a user asks (``trainer.*_metrics``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from trainer.exceptions import MisconfigurationException
from trainer.utilities import extract_batch_size, to_float_dict

if TYPE_CHECKING:  # pragma: no cover
    from trainer.trainer import Trainer

# hook name -> (allowed on_step, allowed on_epoch, default on_step, default on_epoch); None: logging not allowed
_STEP_HOOK = ((False, True), (False, True), True, False)
_EVAL_STEP_HOOK = ((False, True), (False, True), False, True)
_EPOCH_HOOK = ((False,), (True,), False, True)
_LOG_OPTIONS: Dict[str, Optional[Tuple[Tuple[bool, ...], Tuple[bool, ...], bool, bool]]] = {
    **{
        name: _STEP_HOOK
        for name in (
            "on_before_backward", "backward", "on_after_backward", "on_before_optimizer_step", "optimizer_step",
            "configure_gradient_clipping", "clip_gradients", "on_before_zero_grad", "optimizer_zero_grad",
            "on_train_batch_start", "on_train_batch_end", "training_step",
        )
    },
    **{
        name: _EVAL_STEP_HOOK
        for name in (
            "on_validation_batch_start", "on_validation_batch_end", "on_test_batch_start", "on_test_batch_end",
            "validation_step", "test_step",
        )
    },
    **{
        name: _EPOCH_HOOK
        for name in (
            "on_train_start", "on_validation_start", "on_test_start", "on_train_epoch_start", "on_train_epoch_end",
            "on_validation_epoch_start", "on_validation_epoch_end", "on_test_epoch_start", "on_test_epoch_end",
        )
    },
}


def check_logging_levels(fx: str, on_step: Optional[bool], on_epoch: Optional[bool]) -> Tuple[bool, bool]:
    """Lightning's per-hook defaults and allowed values for ``on_step``/``on_epoch``."""
    if fx not in _LOG_OPTIONS:
        raise RuntimeError(
            f"Logging inside `{fx}` is not implemented."
            " Please, open an issue in `https://github.com/Lightning-AI/pytorch-lightning/issues`."
        )
    options = _LOG_OPTIONS[fx]
    if options is None:
        raise MisconfigurationException(
            f"You can't `self.log()` inside `{fx}`. HINT: You can still log directly to the logger by using"
            " `self.logger.experiment`."
        )
    allowed_step, allowed_epoch, default_step, default_epoch = options
    on_step = default_step if on_step is None else on_step
    on_epoch = default_epoch if on_epoch is None else on_epoch
    if on_step not in allowed_step:
        raise MisconfigurationException(
            f"You can't `self.log(on_step={on_step})` inside `{fx}`, must be one of {allowed_step}."
        )
    if on_epoch not in allowed_epoch:
        raise MisconfigurationException(
            f"You can't `self.log(on_epoch={on_epoch})` inside `{fx}`, must be one of {allowed_epoch}."
        )
    return on_step, on_epoch


for _name in (
    "on_fit_start", "on_fit_end", "on_sanity_check_start", "on_sanity_check_end", "on_train_end", "on_validation_end",
    "on_test_end", "on_predict_start", "on_predict_end", "on_predict_epoch_start", "on_predict_epoch_end",
    "on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer", "on_predict_batch_start",
    "on_predict_batch_end", "on_exception", "state_dict", "on_save_checkpoint", "on_load_checkpoint",
    "load_state_dict", "setup", "teardown", "configure_model", "configure_sharded_model", "predict_step",
    "configure_optimizers", "train_dataloader", "val_dataloader", "test_dataloader", "prepare_data",
    "configure_callbacks", "on_validation_model_zero_grad", "on_validation_model_eval", "on_test_model_eval",
    "on_validation_model_train", "on_test_model_train", "lr_scheduler_step",
):
    _LOG_OPTIONS[_name] = None

_REDUCTIONS = {"mean": torch.mean, "avg": torch.mean, "sum": torch.sum, "max": torch.max, "min": torch.min}


def _parse_reduce_fx(reduce_fx: Union[str, Callable]) -> str:
    error = (
        "Only `self.log(..., reduce_fx={min,max,mean,sum})` are supported."
        " If you need a custom reduction, please log a `torchmetrics.Metric` instance instead."
        f" Found: {reduce_fx}"
    )
    if isinstance(reduce_fx, str):
        key = reduce_fx.lower()
        if key not in _REDUCTIONS:
            raise MisconfigurationException(error)
        return "mean" if key == "avg" else key
    for key, fn in _REDUCTIONS.items():
        if reduce_fx is fn:
            return "mean" if key == "avg" else key
    builtins = {sum: "sum", max: "max", min: "min"}
    if reduce_fx in builtins:
        return builtins[reduce_fx]  # type: ignore[index]
    raise MisconfigurationException(error)


@dataclass
class _Meta:
    fx: str
    name: str
    prog_bar: bool
    logger: bool
    on_step: bool
    on_epoch: bool
    reduce: str
    enable_graph: bool
    add_dataloader_idx: bool
    dataloader_idx: Optional[int]
    sync_dist: bool = False

    @property
    def forked(self) -> bool:
        return self.on_step and self.on_epoch

    def forked_name(self, on_step: bool) -> str:
        if self.forked:
            return f"{self.name}_{'step' if on_step else 'epoch'}"
        return self.name


@dataclass
class _Metric:
    """One logged key: its last step value and its running epoch reduction (device tensors)."""

    meta: _Meta
    is_tensor: bool
    value: Any = None
    cumulated_batch_size: Any = None
    step_value: Optional[Tensor] = None
    computed: Optional[Tensor] = None
    has_reset: bool = False
    sync_fn: Optional[Callable] = field(default=None, repr=False)
    sig: Optional[tuple] = field(default=None, repr=False)

    def reset(self) -> None:
        if not self.is_tensor:
            # a logged torchmetrics.Metric is reset in place, as Lightning does (its state is the epoch's)
            if self.value is not None:
                self.value.reset()
            self.step_value = None
            self.computed = None
            self.has_reset = True
            return
        self.value = None
        self.cumulated_batch_size = None
        self.step_value = None
        self.computed = None
        self.has_reset = True

    def update(self, value: Any, batch_size: int) -> None:
        self.computed = None
        self.has_reset = False
        meta = self.meta
        if not self.is_tensor:  # torchmetrics.Metric: it keeps its own state
            self.value = value
            self.step_value = getattr(value, "_forward_cache", None)
            return
        if not meta.enable_graph:
            value = value.detach()
        if not torch.is_floating_point(value):
            import warnings

            warnings.warn(
                f"You called `self.log({meta.name!r}, ...)` in your `{meta.fx}` but the value needs to"
                " be floating to be reduced. Converting it to float32."
                " You can silence this warning by converting the value to floating point yourself."
            )
            value = value.to(torch.get_default_dtype())
        if value.dtype not in (torch.float32, torch.float64):
            value = value.to(torch.float32 if torch.get_default_dtype() != torch.float64 else torch.float64)
        if meta.on_step:
            self.step_value = self._sync(value.clone())
            if not meta.on_epoch:
                self.value = self.step_value
                return
        reduce = meta.reduce
        if reduce == "mean":
            if self.value is None:
                self.value = value * batch_size
                self.cumulated_batch_size = batch_size
            else:
                self.value = self.value + value * batch_size
                self.cumulated_batch_size = self.cumulated_batch_size + batch_size
        elif reduce == "sum":
            self.value = value.clone() if self.value is None else self.value + value
        elif reduce == "max":
            self.value = value.clone() if self.value is None else torch.maximum(self.value, value)
        else:
            self.value = value.clone() if self.value is None else torch.minimum(self.value, value)

    def _sync(self, value: Tensor) -> Tensor:
        if self.meta.sync_dist and self.sync_fn is not None:
            return self.sync_fn(value, reduce_op=self.meta.reduce if self.meta.reduce != "mean" else "mean")
        return value

    def compute(self) -> Optional[Tensor]:
        if self.computed is not None:
            return self.computed
        if not self.is_tensor:
            self.computed = self.value.compute() if self.value is not None else None
            return self.computed
        if self.value is None:
            return None
        if self.meta.reduce == "mean" and self.meta.on_epoch:
            if self.meta.sync_dist and self.sync_fn is not None:
                total = self.sync_fn(self.value.clone(), reduce_op="sum")
                count = self.sync_fn(
                    torch.as_tensor(self.cumulated_batch_size, device=self.value.device, dtype=self.value.dtype),
                    reduce_op="sum",
                )
                self.computed = total / count
            else:
                self.computed = self.value / self.cumulated_batch_size
        elif self.meta.on_epoch:
            self.computed = self._sync(self.value.clone())
        else:
            self.computed = self.value
        return self.computed


class ResultCollection(dict):
    """All keys logged in one loop (training, or one evaluation run), keyed ``"fx.name[.dl_idx]"``."""

    DATALOADER_SUFFIX = "/dataloader_idx_{}"

    def __init__(self, training: bool) -> None:
        super().__init__()
        self.training = training
        self.batch: Any = None
        self.batch_size: Optional[int] = None
        self.dataloader_idx: Optional[int] = None

    def log(
        self,
        fx: str,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: bool = True,
        on_step: bool = False,
        on_epoch: bool = True,
        reduce_fx: Union[str, Callable] = "mean",
        enable_graph: bool = False,
        add_dataloader_idx: bool = True,
        batch_size: Optional[int] = None,
        sync_dist: bool = False,
        sync_dist_fn: Optional[Callable] = None,
        sync_dist_group: Any = None,
    ) -> None:
        key = f"{fx}.{name}"
        if add_dataloader_idx and self.dataloader_idx is not None:
            key += f".{self.dataloader_idx}"
            fx += f".{self.dataloader_idx}"
        # the per-step fast path: same key logged with the same arguments as before
        sig = (fx, prog_bar, logger, on_step, on_epoch, reduce_fx, enable_graph, add_dataloader_idx,
               self.dataloader_idx, sync_dist)
        metric = self.get(key)
        if metric is None or metric.sig != sig:
            if not on_step and not on_epoch:
                raise MisconfigurationException("`self.log(on_step=False, on_epoch=False)` is not useful.")
            meta = _Meta(
                fx=fx, name=name, prog_bar=prog_bar, logger=logger, on_step=on_step, on_epoch=on_epoch,
                reduce=_parse_reduce_fx(reduce_fx), enable_graph=enable_graph, add_dataloader_idx=add_dataloader_idx,
                dataloader_idx=self.dataloader_idx, sync_dist=sync_dist,
            )
            if metric is None:
                metric = _Metric(meta, isinstance(value, Tensor), sync_fn=sync_dist_fn)
                self[key] = metric
            elif meta != metric.meta:
                raise MisconfigurationException(
                    f"You called `self.log({name}, ...)` twice in `{fx}` with different arguments. This is not allowed"
                )
            metric.sig = sig
        reduce = metric.meta.reduce
        if batch_size is None:
            batch_size = self.batch_size
        if batch_size is None:
            batch_size = 1
            if self.batch is not None and metric.is_tensor and on_epoch and reduce == "mean":
                batch_size = extract_batch_size(self.batch)
                self.batch_size = batch_size
        metric.update(value, batch_size)

    def valid_items(self) -> Any:
        return ((k, v) for k, v in self.items() if not v.has_reset and self.dataloader_idx == v.meta.dataloader_idx)

    def metrics(self, on_step: bool) -> Dict[str, Dict[str, Any]]:
        """``{"callback": ..., "log": ..., "pbar": ...}`` of device tensors for the step or the epoch view."""
        out: Dict[str, Dict[str, Any]] = {"callback": {}, "log": {}, "pbar": {}}
        for _, metric in self.valid_items():
            meta = metric.meta
            if on_step:
                value = metric.step_value if meta.on_step else None
            else:
                value = metric.compute() if meta.on_epoch else None
            if not isinstance(value, Tensor):
                continue
            value = value.detach() if not meta.enable_graph else value
            name = meta.name
            forked = meta.forked_name(on_step)
            if meta.add_dataloader_idx and meta.dataloader_idx is not None:
                suffix = self.DATALOADER_SUFFIX.format(meta.dataloader_idx)
                name += suffix
                forked += suffix
            if meta.logger:
                out["log"][forked] = value
            if self.training or (meta.on_epoch and not on_step):
                out["callback"][name] = value
                out["callback"][forked] = value
            if meta.prog_bar:
                out["pbar"][forked] = value
        return out

    def reset(self, metrics: Optional[bool] = None, fx: Optional[str] = None) -> None:
        for metric in self.values():
            requested = metrics is None or metrics ^ metric.is_tensor
            if requested and (fx is None or fx == metric.meta.fx):
                metric.reset()


class LoggerConnector:
    """The Trainer's ``callback_metrics``/``logged_metrics``/``progress_bar_metrics`` and logger calls."""

    def __init__(self, trainer: "Trainer") -> None:
        self.trainer = trainer
        self._progress_bar_metrics: Dict[str, Any] = {}
        self._logged_metrics: Dict[str, Any] = {}
        self._callback_metrics: Dict[str, Any] = {}
        self._current_fx: Optional[str] = None
        self._first_loop_iter: Optional[bool] = None

    # -------------------------------------------------------------- reset rules (Lightning's)
    def reset_if_new_fx(self, fx: str) -> None:
        if self._current_fx != fx and self._first_loop_iter in (None, True):
            results = self.trainer._results
            if results is not None:
                results.reset(metrics=False, fx=fx)

    def reset_metrics(self) -> None:
        self._progress_bar_metrics = {}
        self._logged_metrics = {}
        self._callback_metrics = {}

    def reset_results(self) -> None:
        results = self.trainer._results
        if results is not None:
            results.reset()
        self._first_loop_iter = None
        self._current_fx = None

    # -------------------------------------------------------------- views
    @property
    def metrics(self) -> Dict[str, Dict[str, Any]]:
        on_step = self._first_loop_iter is not None
        results = self.trainer._results
        assert results is not None
        return results.metrics(on_step)

    def _update_all(self, metrics: Dict[str, Dict[str, Any]]) -> None:
        self._progress_bar_metrics.update(metrics["pbar"])
        self._callback_metrics.update(metrics["callback"])
        self._logged_metrics.update(metrics["log"])

    @property
    def callback_metrics(self) -> Dict[str, Any]:
        if self.trainer._results:
            self._callback_metrics.update(self.metrics["callback"])
        return self._callback_metrics

    @property
    def logged_metrics(self) -> Dict[str, Any]:
        if self.trainer._results:
            self._logged_metrics.update(self.metrics["log"])
        return self._logged_metrics

    @property
    def progress_bar_metrics(self) -> Dict[str, float]:
        if self.trainer._results:
            self._progress_bar_metrics.update(self.metrics["pbar"])
        return to_float_dict(self._progress_bar_metrics)

    # -------------------------------------------------------------- loop events
    def on_batch_start(self, batch: Any, dataloader_idx: Optional[int] = None) -> None:
        if self._first_loop_iter is None:
            self._first_loop_iter = True
        elif self._first_loop_iter is True:
            self._first_loop_iter = False
        results = self.trainer._results
        assert results is not None
        results.batch = batch
        results.batch_size = None
        results.dataloader_idx = dataloader_idx

    def on_batch_end(self) -> None:
        results = self.trainer._results
        assert results is not None
        if results:
            self._update_all(self.metrics)
        results.batch = None
        results.batch_size = None

    def epoch_end_reached(self) -> None:
        self._first_loop_iter = None

    def on_epoch_end(self) -> None:
        if self.trainer._results:
            self._update_all(self.metrics)
        self._current_fx = None

    def evaluation_epoch_end(self) -> None:
        results = self.trainer._results
        if results is not None:
            results.dataloader_idx = None

    @property
    def should_update_logs(self) -> bool:
        """Lightning's rule: every ``log_every_n_steps`` steps of the active loop (or when stopping)."""
        trainer = self.trainer
        n = trainer.log_every_n_steps
        if n == 0:
            return False
        loop = trainer._active_loop
        if loop is None:
            return True
        if loop is trainer.fit_loop:
            step = loop.epoch_loop._batches_that_stepped + 1
        else:
            step = loop.batch_progress.current.ready
        return step % n == 0 or trainer.should_stop

    def log_metrics(self, metrics: Dict[str, Any], step: Optional[int] = None) -> None:
        trainer = self.trainer
        if not trainer.loggers or not metrics:
            return
        self._logged_metrics.update(metrics)
        scalars = to_float_dict(metrics)
        if step is None:
            step_metric = scalars.pop("step", None)
            if step_metric is not None:
                step = int(step_metric)
            else:
                scalars.setdefault("epoch", trainer.current_epoch)
                step = trainer.fit_loop.epoch_loop._batches_that_stepped
        for logger in trainer.loggers:
            logger.log_metrics(metrics=scalars, step=step)
            logger.save()

    def update_train_step_metrics(self, accumulating: bool) -> None:
        trainer = self.trainer
        if accumulating and trainer.lightning_module.automatic_optimization:
            return
        if not trainer.loggers:
            return
        if self.should_update_logs or trainer.fast_dev_run:
            self.log_metrics(self.metrics["log"])

    def update_train_epoch_metrics(self) -> None:
        if self.trainer.loggers and self.trainer._results:
            self.log_metrics(self.metrics["log"])
        self.reset_results()

    def update_eval_step_metrics(self, step: int) -> None:
        if self.trainer.loggers and self.trainer._results:
            self.log_metrics(self.metrics["log"], step=step)

    def update_eval_epoch_metrics(self) -> Dict[str, Any]:
        if self.trainer.sanity_checking:
            return {}
        metrics = self.metrics
        self._update_all(metrics)
        return metrics["log"]

    def log_eval_end_metrics(self, metrics: Dict[str, Any]) -> None:
        if self.trainer.sanity_checking:
            return
        self.log_metrics(metrics)
