"""LightningModule: an ``nn.Module`` with the training hooks and logging API of Lightning 2.x."""
from __future__ import annotations

import copy
import inspect
import numbers
import os
from argparse import Namespace
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Dict, Generator, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from trainer.exceptions import MisconfigurationException
from trainer.hooks import DataHooks, ModelHooks
from trainer.logging import check_logging_levels
from trainer.utilities import AttributeDict

if TYPE_CHECKING:  # pragma: no cover
    from trainer.optimizers import LightningOptimizer
    from trainer.trainer import Trainer

_GRAD_CLIP_ALGORITHMS = ("norm", "value")


class HyperparametersMixin:
    """``save_hyperparameters`` / ``hparams``, shared by LightningModule and LightningDataModule."""

    __jit_unused_properties__: List[str] = ["hparams", "hparams_initial"]

    def __init__(self) -> None:
        super().__init__()
        self._log_hyperparams = False  # Lightning's: only save_hyperparameters() sends hparams to the loggers

    def save_hyperparameters(
        self,
        *args: Any,
        ignore: Optional[Union[Sequence[str], str]] = None,
        frame: Optional[Any] = None,
        logger: bool = True,
    ) -> None:
        """Saves the arguments of the caller's ``__init__`` into ``self.hparams``.

        With no ``args`` every init argument is saved; with names, only those; a single dict or
        ``Namespace`` is saved as is. ``ignore`` drops names.
        """
        self._log_hyperparams = logger
        if frame is None:
            current = inspect.currentframe()
            frame = current.f_back if current is not None else None
        if isinstance(ignore, str):
            ignore = [ignore]
        ignore = list(ignore or [])
        if len(args) == 1 and isinstance(args[0], (dict, Namespace)) and not isinstance(args[0], str):
            hp = vars(args[0]) if isinstance(args[0], Namespace) else dict(args[0])
            self._set_hparams({k: v for k, v in hp.items() if k not in ignore})
        else:
            init_args = _collect_init_args(frame, self)
            if args:
                names = [a for a in args if isinstance(a, str)]
                unknown = [n for n in names if n not in init_args]
                if unknown:
                    raise ValueError(f"save_hyperparameters: {unknown} are not arguments of `__init__`.")
                init_args = {n: init_args[n] for n in names}
            self._set_hparams({k: v for k, v in init_args.items() if k not in ignore})
            self._hparams_name = "kwargs"
        self._hparams_initial = copy.deepcopy(self._hparams)

    def _set_hparams(self, hp: Dict[str, Any]) -> None:
        self._hparams = AttributeDict(hp)

    @property
    def hparams(self) -> AttributeDict:
        if not hasattr(self, "_hparams"):
            self._hparams = AttributeDict()
        return self._hparams

    @property
    def hparams_initial(self) -> AttributeDict:
        if not hasattr(self, "_hparams_initial"):
            return AttributeDict()
        return copy.deepcopy(self._hparams_initial)


def _collect_init_args(frame: Any, obj: Any) -> Dict[str, Any]:
    """Arguments of every ``__init__`` frame of ``obj`` on the stack, outermost class last (Lightning's)."""
    collected: Dict[str, Any] = {}
    while frame is not None:
        code = frame.f_code
        local_vars = frame.f_locals
        if code.co_name != "__init__" or local_vars.get("self") is not obj:
            break
        info = inspect.getargvalues(frame)
        found: Dict[str, Any] = {}
        for name in info.args:
            if name != "self":
                found[name] = local_vars[name]
        if info.varargs and local_vars.get(info.varargs):
            found[info.varargs] = local_vars[info.varargs]
        if info.keywords:
            found.update(local_vars.get(info.keywords, {}))
        # inner classes' args are added first; outer (subclass) frames override
        found.update(collected)
        collected = found
        frame = frame.f_back
    return collected


class LightningModule(HyperparametersMixin, ModelHooks, DataHooks, nn.Module):
    """Organises a PyTorch model for the Trainer: steps, optimizers, hooks and logging."""

    CHECKPOINT_HYPER_PARAMS_KEY = "hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "hparams_type"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trainer: Optional["Trainer"] = None
        self._automatic_optimization: bool = True
        self._strict_loading: Optional[bool] = None
        self._current_fx_name: Optional[str] = None
        self._example_input_array: Any = None
        self._device: torch.device = torch.device("cpu")
        self._dtype: torch.dtype = torch.get_default_dtype()
        self.prepare_data_per_node: bool = True
        self.allow_zero_length_dataloader_with_multiple_devices: bool = False

    # ------------------------------------------------------------------ properties
    @property
    def trainer(self) -> "Trainer":
        if self._trainer is None:
            raise RuntimeError(f"{self.__class__.__qualname__} is not attached to a `Trainer`.")
        return self._trainer

    @trainer.setter
    def trainer(self, trainer: Optional["Trainer"]) -> None:
        object.__setattr__(self, "_trainer", trainer)

    @property
    def automatic_optimization(self) -> bool:
        return self._automatic_optimization

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        self._automatic_optimization = value

    @property
    def strict_loading(self) -> bool:
        return True if self._strict_loading is None else self._strict_loading

    @strict_loading.setter
    def strict_loading(self, value: bool) -> None:
        self._strict_loading = value

    @property
    def example_input_array(self) -> Any:
        return self._example_input_array

    @example_input_array.setter
    def example_input_array(self, value: Any) -> None:
        self._example_input_array = value

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return self._dtype

    @property
    def current_epoch(self) -> int:
        return self._trainer.current_epoch if self._trainer is not None else 0

    @property
    def global_step(self) -> int:
        return self._trainer.global_step if self._trainer is not None else 0

    @property
    def global_rank(self) -> int:
        return self._trainer.global_rank if self._trainer is not None else 0

    @property
    def local_rank(self) -> int:
        return self._trainer.local_rank if self._trainer is not None else 0

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def logger(self) -> Any:
        return self._trainer.logger if self._trainer is not None else None

    @property
    def loggers(self) -> List[Any]:
        return self._trainer.loggers if self._trainer is not None else []

    # ------------------------------------------------------------------ user API
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return super().forward(*args, **kwargs)

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        raise MisconfigurationException(
            "`training_step` must be implemented to be used with the Trainer: your LightningModule "
            f"{type(self).__name__} does not define it."
        )

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        """Override to run validation."""

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        """Override to run testing."""

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        batch = kwargs.get("batch", args[0])
        return self(batch)

    def configure_optimizers(self) -> Any:
        raise MisconfigurationException(
            "`configure_optimizers` must be implemented to be used with the Trainer: your LightningModule "
            f"{type(self).__name__} does not define it."
        )

    def configure_callbacks(self) -> Union[Sequence[Any], Any]:
        return []

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._trainer is None or self._trainer.is_global_zero:
            print(*args, **kwargs)

    # ------------------------------------------------------------------ optimizers
    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        trainer = self.trainer
        opts: List[Any] = list(trainer.strategy._lightning_optimizers) if use_pl_optimizer else trainer.optimizers
        if len(opts) == 1:
            return opts[0]
        return opts

    def lr_schedulers(self) -> Any:
        trainer = self.trainer
        if not trainer.lr_scheduler_configs:
            return None
        schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
        if len(schedulers) == 1:
            return schedulers[0]
        return schedulers

    def manual_backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """Backward for manual optimization: runs the precision plugin's scaling and the backward hooks."""
        if self._automatic_optimization:
            raise MisconfigurationException("`manual_backward` can only be used with `automatic_optimization=False`.")
        trainer = self.trainer
        trainer.strategy.backward(loss, None, *args, **kwargs)

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        loss.backward(*args, **kwargs)

    def toggle_optimizer(self, optimizer: Union[Optimizer, "LightningOptimizer"]) -> None:
        """Sets ``requires_grad=False`` on parameters that only other optimizers own (Lightning's)."""
        param_requires_grad_state: Dict[Tensor, bool] = {}
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                for param in group["params"]:
                    if param in param_requires_grad_state:
                        continue
                    param_requires_grad_state[param] = param.requires_grad
                    param.requires_grad = False
        inner = getattr(optimizer, "optimizer", optimizer)
        for group in inner.param_groups:
            for param in group["params"]:
                param.requires_grad = param_requires_grad_state[param]
        self._param_requires_grad_state = param_requires_grad_state

    def untoggle_optimizer(self, optimizer: Union[Optimizer, "LightningOptimizer"]) -> None:
        state = getattr(self, "_param_requires_grad_state", {})
        inner = getattr(optimizer, "optimizer", optimizer)
        for opt in self.trainer.optimizers:
            if opt is inner:
                continue
            for group in opt.param_groups:
                for param in group["params"]:
                    if param in state:
                        param.requires_grad = state[param]
        self._param_requires_grad_state = {}

    @contextmanager
    def toggled_optimizer(self, optimizer: Union[Optimizer, "LightningOptimizer"]) -> Generator:
        self.toggle_optimizer(optimizer)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def clip_gradients(
        self,
        optimizer: Union[Optimizer, "LightningOptimizer"],
        gradient_clip_val: Optional[Union[int, float]] = None,
        gradient_clip_algorithm: Optional[str] = None,
    ) -> None:
        """Clips the gradients of ``optimizer``'s parameters by norm or value (Lightning's checks)."""
        trainer = self.trainer
        if gradient_clip_algorithm is not None and gradient_clip_algorithm.lower() not in _GRAD_CLIP_ALGORITHMS:
            raise MisconfigurationException(
                f"`gradient_clip_algorithm` {gradient_clip_algorithm!r} is invalid."
                f" Allowed algorithms: {list(_GRAD_CLIP_ALGORITHMS)}."
            )
        if gradient_clip_val is None:
            gradient_clip_val = trainer.gradient_clip_val or 0.0
        elif trainer.gradient_clip_val is not None and trainer.gradient_clip_val != gradient_clip_val:
            raise MisconfigurationException(
                f"You have set `Trainer(gradient_clip_val={trainer.gradient_clip_val!r})`"
                f" and have passed `clip_gradients(gradient_clip_val={gradient_clip_val!r})`."
                " Please use only one of them."
            )
        if gradient_clip_algorithm is None:
            gradient_clip_algorithm = trainer.gradient_clip_algorithm or "norm"
        else:
            gradient_clip_algorithm = gradient_clip_algorithm.lower()
            if (
                trainer.gradient_clip_algorithm is not None
                and trainer.gradient_clip_algorithm != gradient_clip_algorithm
            ):
                raise MisconfigurationException(
                    f"You have set `Trainer(gradient_clip_algorithm={trainer.gradient_clip_algorithm!r})`"
                    f" and have passed `clip_gradients(gradient_clip_algorithm={gradient_clip_algorithm!r})"
                    " Please use only one of them."
                )
        if not isinstance(gradient_clip_val, (int, float)):
            raise TypeError(f"`gradient_clip_val` should be an int or a float. Got {gradient_clip_val}.")
        inner = getattr(optimizer, "optimizer", optimizer)
        trainer.precision_plugin.clip_gradients(inner, gradient_clip_val, gradient_clip_algorithm)

    def configure_gradient_clipping(
        self,
        optimizer: Optimizer,
        gradient_clip_val: Optional[Union[int, float]] = None,
        gradient_clip_algorithm: Optional[str] = None,
    ) -> None:
        self.clip_gradients(
            optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm
        )

    def lr_scheduler_step(self, scheduler: Any, metric: Optional[Any]) -> None:
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Union[Optimizer, "LightningOptimizer"],
        optimizer_closure: Optional[Callable[[], Any]] = None,
    ) -> None:
        optimizer.step(closure=optimizer_closure)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Optimizer) -> None:
        optimizer.zero_grad()

    # ------------------------------------------------------------------ logging
    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: Optional[bool] = None,
        on_step: Optional[bool] = None,
        on_epoch: Optional[bool] = None,
        reduce_fx: Union[str, Callable] = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Optional[Any] = None,
        add_dataloader_idx: bool = True,
        batch_size: Optional[int] = None,
        metric_attribute: Optional[str] = None,
        rank_zero_only: bool = False,
    ) -> None:
        """Logs a scalar; Lightning's per-hook ``on_step``/``on_epoch`` defaults apply.

        The value stays a device tensor: the host reads it only when a logger, the progress bar
        or ``trainer.callback_metrics`` needs it.
        """
        if isinstance(value, Mapping):
            raise ValueError(f"`self.log({name}, {value})` was called, but nested dictionaries cannot be logged")
        trainer = self._trainer
        if trainer is None:
            import warnings

            warnings.warn(
                "You are trying to `self.log()` but the `self.trainer` reference is not registered on the model yet."
                " This is most likely because the model hasn't been passed to the `Trainer`"
            )
            return
        if trainer.barebones:
            import warnings

            warnings.warn(
                "You are trying to `self.log()` but `Trainer(barebones=True)` is configured."
                " Logging can impact raw speed so it is disabled under this setting."
            )
            return
        results = trainer._results
        if results is None:
            raise MisconfigurationException(
                "You are trying to `self.log()` but the loop's result collection is not registered"
                " yet. This is most likely because you are trying to log in a `predict` hook,"
                " but it doesn't support logging"
            )
        fx = self._current_fx_name
        if fx is None:
            raise MisconfigurationException(
                "You are trying to `self.log()` but it is not managed by the `Trainer` control flow"
            )
        on_step, on_epoch = check_logging_levels(fx, on_step, on_epoch)
        if add_dataloader_idx and "/dataloader_idx_" in name:
            raise MisconfigurationException(
                f"You called `self.log` with the key `{name}`"
                " but it should not contain information about `dataloader_idx` when `add_dataloader_idx=True`"
            )
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"`self.log({name}, {value})` was called, but the tensor must have a single element."
                    f" You can try doing `self.log({name}, {value}.mean())`"
                )
            value = value.squeeze()
        elif isinstance(value, numbers.Number):
            value = torch.tensor(value, device=self.device, dtype=_default_float_dtype())
        elif hasattr(value, "compute") and hasattr(value, "update"):  # torchmetrics.Metric
            pass
        else:
            raise ValueError(
                f"`self.log({name}, {value})` was called, but `{type(value).__name__}` values cannot be logged"
            )
        if logger and trainer.logger is None:
            import warnings

            warnings.warn(
                f"You called `self.log({name!r}, ..., logger=True)` but have no logger configured. You can enable one"
                " by doing `Trainer(logger=ALogger(...))`"
            )
        if logger is None:
            logger = True
        trainer._logger_connector.reset_if_new_fx(fx)
        results.log(
            fx,
            name,
            value,
            prog_bar=prog_bar,
            logger=logger,
            on_step=on_step,
            on_epoch=on_epoch,
            reduce_fx=reduce_fx,
            enable_graph=enable_graph,
            add_dataloader_idx=add_dataloader_idx,
            batch_size=batch_size,
            sync_dist=sync_dist and trainer.world_size > 1,
            sync_dist_fn=trainer.strategy.reduce,
            sync_dist_group=sync_dist_group,
        )
        trainer._logger_connector._current_fx = fx

    def log_dict(
        self,
        dictionary: Mapping[str, Any],
        prog_bar: bool = False,
        logger: Optional[bool] = None,
        on_step: Optional[bool] = None,
        on_epoch: Optional[bool] = None,
        reduce_fx: Union[str, Callable] = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Optional[Any] = None,
        add_dataloader_idx: bool = True,
        batch_size: Optional[int] = None,
        rank_zero_only: bool = False,
    ) -> None:
        for k, v in dictionary.items():
            self.log(
                name=k,
                value=v,
                prog_bar=prog_bar,
                logger=logger,
                on_step=on_step,
                on_epoch=on_epoch,
                reduce_fx=reduce_fx,
                enable_graph=enable_graph,
                sync_dist=sync_dist,
                sync_dist_group=sync_dist_group,
                add_dataloader_idx=add_dataloader_idx,
                batch_size=batch_size,
                rank_zero_only=rank_zero_only,
            )

    def all_gather(self, data: Any, group: Optional[Any] = None, sync_grads: bool = False) -> Any:
        return self.trainer.strategy.all_gather(data, group=group, sync_grads=sync_grads)

    # ------------------------------------------------------------------ device / dtype moves
    def to(self, *args: Any, **kwargs: Any) -> "LightningModule":  # type: ignore[override]
        out = super().to(*args, **kwargs)
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None:
            self._device = device
        if dtype is not None:
            self._dtype = dtype
        return out

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: Any,
        map_location: Any = None,
        hparams_file: Optional[str] = None,
        strict: Optional[bool] = None,
        **kwargs: Any,
    ) -> "LightningModule":
        """Builds the module from a checkpoint's hyper-parameters (``kwargs`` override) and loads its weights."""
        from trainer.checkpoint import load_checkpoint_file

        checkpoint = load_checkpoint_file(checkpoint_path, map_location=map_location or "cpu")
        hparams = dict(checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_KEY, {}) or {})
        if hparams_file is not None:
            import yaml

            with open(hparams_file) as f:
                hparams.update(yaml.safe_load(f) or {})
        hparams.update(kwargs)
        try:
            params = inspect.signature(cls.__init__).parameters
            accepts_kwargs = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
            init_kwargs = hparams if accepts_kwargs else {k: v for k, v in hparams.items() if k in params}
            model = cls(**init_kwargs)
        except TypeError as err:
            raise TypeError(f"Could not build {cls.__name__} from checkpoint {checkpoint_path!s}: {err}") from err
        model.on_load_checkpoint(checkpoint)
        state_dict = checkpoint.get("state_dict")
        if state_dict is None:
            raise KeyError(f"Checkpoint {checkpoint_path!s} has no 'state_dict' key")
        strict = model.strict_loading if strict is None else strict
        try:
            keys = model.load_state_dict(state_dict, strict=strict)
        except RuntimeError as err:
            from trainer.checkpoint import CheckpointError

            raise CheckpointError(
                f"Checkpoint {os.fspath(checkpoint_path)!r} does not fit {cls.__name__}: {err}"
            ) from err
        if not strict and (keys.missing_keys or keys.unexpected_keys):
            import warnings

            warnings.warn(f"Found keys that are not in the model state dict but in the checkpoint: {keys}")
        if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
            model.to(map_location)
        return model

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Add to or change the checkpoint before it is saved."""

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Read from the checkpoint before the state is restored."""

    def _on_before_batch_transfer(self, batch: Any, dataloader_idx: int = 0) -> Any:
        return self.on_before_batch_transfer(batch, dataloader_idx)

    def freeze(self) -> "LightningModule":
        """Turns off ``requires_grad`` on every parameter and switches to eval mode; returns the module
        (``self.eval()``'s result, as Lightning), so ``model = Model(...).freeze()`` works."""
        for param in self.parameters():
            param.requires_grad = False
        return self.eval()

    def unfreeze(self) -> "LightningModule":
        """Turns ``requires_grad`` back on for every parameter and switches to train mode; returns the module."""
        for param in self.parameters():
            param.requires_grad = True
        return self.train()


def _default_float_dtype() -> torch.dtype:
    dtype = torch.get_default_dtype()
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


__all__ = ["LightningModule", "HyperparametersMixin"]
