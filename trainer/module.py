"""LightningModule: an ``nn.Module`` with the training hooks and logging API of Lightning 2.x."""
from __future__ import annotations

import copy
import dataclasses
import inspect
import numbers
import os
import warnings
from argparse import Namespace
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Callable, Dict, Generator, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from trainer.exceptions import MisconfigurationException
from trainer.hooks import DataHooks, ModelHooks, lightning_is_overridden
from trainer.logger_connector import check_logging_levels
from trainer.utilities import AttributeDict, is_picklable

if TYPE_CHECKING:  # pragma: no cover
    from trainer.core.optimizer import LightningOptimizer
    from trainer.trainer import Trainer

_GRAD_CLIP_ALGORITHMS = ("value", "norm")  # Lightning's GradClipAlgorithmType order (its error lists them)


#: the hyper-parameters LightningCLI gives the class it instantiates (its config with ``_instantiator``)
_given_hyperparameters: ContextVar[Optional[Dict[str, Any]]] = ContextVar("_given_hyperparameters", default=None)


@contextmanager
def _given_hyperparameters_context(hparams: Dict[str, Any], instantiator: str) -> Generator[None, None, None]:
    """Inside, ``save_hyperparameters`` saves ``hparams`` plus the ``_instantiator`` that rebuilds the object
    from them in ``load_from_checkpoint``."""
    token = _given_hyperparameters.set({**hparams, "_instantiator": instantiator})
    try:
        yield
    finally:
        _given_hyperparameters.reset(token)


class HyperparametersMixin:
    """``save_hyperparameters`` / ``hparams``, shared by LightningModule and LightningDataModule."""

    __jit_unused_properties__: List[str] = ["hparams", "hparams_initial"]

    def __init__(self) -> None:
        super().__init__()
        self._log_hyperparams = False  # save_hyperparameters(logger=True) turns it on (Lightning's)

    def save_hyperparameters(
        self,
        *args: Any,
        ignore: Optional[Union[Sequence[str], str]] = None,
        frame: Optional[Any] = None,
        logger: bool = True,
    ) -> None:
        """Saves the arguments of the caller's ``__init__`` into ``self.hparams`` (Lightning's rules).

        With no ``args`` every init argument is saved; with names, only those (an unknown name is a
        KeyError); one dict or ``Namespace`` is saved as the hyper-parameters themselves. ``ignore`` drops names.
        """
        self._log_hyperparams = logger
        if len(args) == 1 and not args[0]:  # an empty container: nothing to save (Lightning's)
            return
        if frame is None:
            current = inspect.currentframe()
            frame = current.f_back if current is not None else None
        ignore = [ignore] if isinstance(ignore, str) else [name for name in (ignore or []) if isinstance(name, str)]
        given = _given_hyperparameters.get()
        if given is not None:  # built by LightningCLI (load_from_checkpoint_support): its config, not the objects
            found = given
        elif dataclasses.is_dataclass(self):  # a dataclass module: its init fields are the arguments
            found = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        else:
            found = _collect_init_args(frame, self)
        init_args = {k: v for k, v in found.items() if k not in ignore}
        objects = [arg for arg in args if not isinstance(arg, str)]
        if not args:
            hp: Any = init_args
            self._hparams_name = "kwargs" if hp else None
        elif len(objects) == 1:
            hp = objects[0]
            # the init argument that received this object: load_from_checkpoint passes it back whole
            self._hparams_name = next((k for k, v in init_args.items() if v is hp or _equal(v, hp)), None)
        else:
            hp = {name: init_args[name] for name in args if isinstance(name, str)}
            self._hparams_name = "kwargs"
        self._set_hparams(hp)
        for name in ignore:
            self._hparams.pop(name, None)
        _warn_about_module_hparams(self._hparams)
        self._hparams_initial = copy.deepcopy(self._hparams)

    def _set_hparams(self, hp: Any) -> None:
        if isinstance(hp, Namespace):
            hp = vars(hp)
        if isinstance(hp, (bool, int, float, str)):
            raise ValueError(f"Primitives {(bool, int, float, str)} are not allowed.")
        if not isinstance(hp, Mapping):
            raise ValueError(f"Unsupported config type of {type(hp)}.")
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
    """Named arguments (and ``**kwargs`` entries) of every ``__init__`` frame of ``obj`` on the stack, the
    innermost frame winning (Lightning's). ``self`` may have another name; ``*args`` are not saved."""
    collected: Dict[str, Any] = {}
    while frame is not None:
        code = frame.f_code
        local_vars = frame.f_locals
        info = inspect.getargvalues(frame)
        if code.co_name != "__init__" or not info.args or local_vars.get(info.args[0]) is not obj:
            break
        found: Dict[str, Any] = {name: local_vars[name] for name in info.args[1:]}
        if info.keywords:
            found.update(local_vars.get(info.keywords, {}))
        # inner classes' args are added first; outer (subclass) frames override
        found.update(collected)
        collected = found
        frame = frame.f_back
    return collected


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - tensors, arrays: not the object we look for
        return False


def _drop_unpicklable(hparams: Dict[str, Any]) -> None:
    for name in [k for k, v in hparams.items() if not is_picklable(v)]:
        warnings.warn(
            f"Attribute '{name}' removed from hparams because it cannot be pickled. You can suppress this warning by"
            f" setting `self.save_hyperparameters(ignore=['{name}'])`."
        )
        del hparams[name]


def _warn_about_module_hparams(hparams: Mapping[str, Any]) -> None:
    for name, value in hparams.items():
        if isinstance(value, nn.Module):
            warnings.warn(
                f"Attribute {name!r} is an instance of `nn.Module` and is already saved during checkpointing."
                f" It is recommended to ignore them using `self.save_hyperparameters(ignore=[{name!r}])`."
            )


class LightningModule(HyperparametersMixin, ModelHooks, DataHooks, nn.Module):
    """Organises a PyTorch model for the Trainer: steps, optimizers, hooks and logging."""

    CHECKPOINT_HYPER_PARAMS_KEY = "hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "hparams_type"

    # torch.jit.script compiles every property it finds; these need a Trainer or are meaningless in a
    # scripted module, so the compiler skips them (Lightning's list, plus our device/dtype)
    __jit_unused_properties__: List[str] = [
        "example_input_array", "on_gpu", "current_epoch", "global_step", "global_rank", "local_rank", "logger",
        "loggers", "automatic_optimization", "trainer", "strict_loading", "device", "dtype",
    ] + HyperparametersMixin.__jit_unused_properties__
    # True while to_torchscript runs: scripting reads `self.trainer` of a module never attached to one
    _jit_is_scripting: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trainer: Optional["Trainer"] = None
        self._automatic_optimization: bool = True
        self._strict_loading: Optional[bool] = None
        self._current_fx_name: Optional[str] = None
        self._example_input_array: Any = None
        # id(metric) -> attribute name of the torchmetrics.Metric children, found on the first log of a metric
        self._metric_attributes: Optional[Dict[int, str]] = None
        # requires_grad of every optimizer's parameters saved by toggle_optimizer, restored by untoggle_optimizer
        self._param_requires_grad_state: Dict[Tensor, bool] = {}
        self._device: torch.device = torch.device("cpu")
        self._dtype: torch.dtype = torch.get_default_dtype()
        self.prepare_data_per_node: bool = True
        self.allow_zero_length_dataloader_with_multiple_devices: bool = False

    def __getstate__(self) -> Dict[str, Any]:
        """Copies and pickles leave the Trainer behind, as Lightning's do (``deepcopy(pl_module)`` in the
        weight-averaging callbacks must copy the weights, not the Trainer and its loaders)."""
        state = dict(self.__dict__)
        state["_trainer"] = None
        return state

    # ------------------------------------------------------------------ properties
    @property
    def trainer(self) -> "Trainer":
        if self._trainer is None and not LightningModule._jit_is_scripting:
            raise RuntimeError(f"{self.__class__.__qualname__} is not attached to a `Trainer`.")
        return self._trainer  # type: ignore[return-value]

    @trainer.setter
    def trainer(self, trainer: Optional["Trainer"]) -> None:
        if trainer is not None:
            # attaching is where a run starts: as Lightning's Trainer does then, hyper-parameters that could
            # not go into a checkpoint are dropped (with a warning) instead of failing the first save
            _drop_unpicklable(self.hparams)
        self._set_trainer_reference(trainer)

    def _set_trainer_reference(self, trainer: Optional["Trainer"]) -> None:
        # a LightningModule nested in another one (a backbone, a GAN's generator) is driven by the
        # same Trainer: its `self.trainer`, `self.log` and `self.current_epoch` must work too
        for child in self.children():
            if isinstance(child, LightningModule):
                child._set_trainer_reference(trainer)
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
        state = self._param_requires_grad_state
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
        # checked after the conflicts with the Trainer's settings, as Lightning (its tests expect that error)
        if gradient_clip_algorithm not in _GRAD_CLIP_ALGORITHMS:
            raise MisconfigurationException(
                f"`gradient_clip_algorithm` {gradient_clip_algorithm} is invalid."
                f" Allowed algorithms: {list(_GRAD_CLIP_ALGORITHMS)}."
            )
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
            warnings.warn(
                "You are trying to `self.log()` but the `self.trainer` reference is not registered on the model yet."
                " This is most likely because the model hasn't been passed to the `Trainer`"
            )
            return
        if trainer.barebones:
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
        elif _is_metric(value):
            if metric_attribute is None:
                metric_attribute = self._metric_attribute_of(name, value)
        else:
            raise ValueError(
                f"`self.log({name}, {value})` was called, but `{type(value).__name__}` values cannot be logged"
            )
        if logger and trainer.logger is None:
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

    def _metric_attribute_of(self, name: str, metric: Any) -> str:
        """The attribute under which ``metric`` lives in this module (Lightning requires one, with its errors)."""
        if self._metric_attributes is None:  # found once: the metrics a module holds are set in __init__
            self._metric_attributes = {id(m): n for n, m in self.named_modules() if _is_metric(m)}
            if not self._metric_attributes:
                raise MisconfigurationException(
                    "Could not find the `LightningModule` attribute for the `torchmetrics.Metric` logged."
                    " You can fix this by setting an attribute for the metric in your `LightningModule`."
                )
        attribute = self._metric_attributes.get(id(metric))
        if attribute is None:
            raise MisconfigurationException(
                "Could not find the `LightningModule` attribute for the `torchmetrics.Metric` logged."
                f" You can fix this by calling `self.log({name}, ..., metric_attribute=name)` where `name` is one"
                f" of {list(self._metric_attributes.values())}"
            )
        return attribute

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

    # ------------------------------------------------------------------ export
    @torch.no_grad()
    def to_torchscript(
        self,
        file_path: Optional[Union[str, "os.PathLike[str]"]] = None,
        method: Optional[str] = "script",
        example_inputs: Optional[Any] = None,
        **kwargs: Any,
    ) -> Any:
        """The module as a ``torch.jit.ScriptModule`` (``method="script"`` or ``"trace"``), in eval mode;
        the module's own training mode is left as it was. ``file_path`` (local or an fsspec URL) also saves it.

        Tracing uses ``example_inputs``, else ``example_input_array``, moved to the module's device by the
        batch-transfer hooks, as Lightning does.
        """
        warnings.warn(
            "`LightningModule.to_torchscript` has been deprecated in v2.7 and will be removed in v2.8. "
            "TorchScript is deprecated in PyTorch. Use `torch.export.export()` for model exporting instead. "
            "See https://pytorch.org/docs/stable/export.html for more information.",
            DeprecationWarning,
            stacklevel=2,
        )
        if method not in ("script", "trace"):
            raise ValueError(f"The 'method' parameter only supports 'script' or 'trace', but value given was: {method}")
        mode = self.training
        if method == "script":
            with _jit_scripting():
                scripted = torch.jit.script(self.eval(), **kwargs)
        else:
            if example_inputs is None:
                if self.example_input_array is None:
                    raise ValueError(
                        "Choosing method=`trace` requires either `example_inputs`"
                        " or `model.example_input_array` to be defined."
                    )
                example_inputs = self.example_input_array
            if kwargs.get("check_inputs") is not None:
                kwargs["check_inputs"] = self._transfer_for_export(kwargs["check_inputs"])
            example_inputs = self._transfer_for_export(example_inputs)
            with _jit_scripting():
                scripted = torch.jit.trace(func=self.eval(), example_inputs=example_inputs, **kwargs)
        self.train(mode)
        if file_path is not None:
            _save_torchscript(scripted, file_path)
        return scripted

    def _transfer_for_export(self, batch: Any) -> Any:
        """The user's batch-transfer hooks applied to an export input, onto the module's device."""
        batch = self.on_before_batch_transfer(batch, 0)
        batch = self.transfer_batch_to_device(batch, self.device, 0)
        return self.on_after_batch_transfer(batch, 0)

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
        """Builds the module from a checkpoint's hyper-parameters and loads its weights (Lightning's semantics).

        ``hparams_file`` (.yaml/.yml/.csv) replaces the checkpoint's hyper-parameters, ``kwargs`` override them.
        ``strict=False`` loads what fits and warns about missing and unexpected keys; ``strict=None`` follows
        ``strict_loading``, and a ``strict`` that contradicts a module's explicit ``strict_loading`` is a ValueError.
        """
        from trainer.core.saving import instantiate_from_checkpoint, load_weights, read_checkpoint_for

        checkpoint = read_checkpoint_for(cls, checkpoint_path, map_location, hparams_file, kwargs)
        model = instantiate_from_checkpoint(cls, checkpoint, kwargs)
        if model._strict_loading is not None and strict is not None and strict != model.strict_loading:
            raise ValueError(
                f"You set `.load_from_checkpoint(..., strict={strict!r})` which is in conflict with"
                f" `{cls.__name__}.strict_loading={model.strict_loading!r}. Please set the same value for both of them."
            )
        strict = model.strict_loading if strict is None else strict
        if lightning_is_overridden("configure_model", model, LightningModule):
            model.configure_model()
        model.on_load_checkpoint(checkpoint)
        state_dict = checkpoint.get("state_dict")
        if state_dict is None:
            raise KeyError(f"Checkpoint {checkpoint_path!r} has no 'state_dict' key")
        load_weights(model, state_dict, strict, checkpoint_path)
        if not state_dict:
            warnings.warn(f"The state dict in {checkpoint_path!r} contains no parameters.")
            return model
        # the module ends up where the loaded tensors are (map_location decides), as in Lightning
        device = next((t.device for t in state_dict.values() if isinstance(t, Tensor)), torch.device("cpu"))
        return model.to(device)

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


@contextmanager
def _jit_scripting() -> Generator:
    """Lets ``self.trainer`` return None while TorchScript compiles a module that has no Trainer."""
    LightningModule._jit_is_scripting = True
    try:
        yield
    finally:
        LightningModule._jit_is_scripting = False


def _save_torchscript(scripted: Any, file_path: Union[str, "os.PathLike[str]"]) -> None:
    """``torch.jit.save`` to a local path or any fsspec URL (``memory://``, ``s3://`` ...)."""
    path = os.fspath(file_path)
    if "://" not in path:
        torch.jit.save(scripted, path)
        return
    import fsspec

    with fsspec.open(path, "wb") as f:
        torch.jit.save(scripted, f)


def _is_metric(value: Any) -> bool:
    """A torchmetrics.Metric (duck-typed: torchmetrics is optional)."""
    return isinstance(value, nn.Module) and hasattr(value, "compute") and hasattr(value, "update")


def _default_float_dtype() -> torch.dtype:
    dtype = torch.get_default_dtype()
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


__all__ = ["LightningModule", "HyperparametersMixin"]
