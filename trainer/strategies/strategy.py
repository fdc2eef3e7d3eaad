"""The strategy base (Lightning's ``lightning.pytorch.strategies.strategy.Strategy`` method set).

The single-device strategy and the distributed ones (DDP, FSDP, DeepSpeed) subclass ``Strategy`` and
override the collective methods; generic code never branches on the strategy's type.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Dict, List, Optional, Union

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from trainer.core.optimizer import LightningOptimizer, LRSchedulerConfig, parse_optimizers, validate_scheduler_api
from trainer.precision import Precision, build_precision

if TYPE_CHECKING:  # pragma: no cover
    from trainer.module import LightningModule
    from trainer.trainer import Trainer


class Strategy:
    """How the module is placed, how the step runs, and how processes talk to each other."""

    strategy_name = "single_device"
    handles_gradient_accumulation = False

    def __init__(self, device: Union[str, torch.device] = "cpu", precision_plugin: Optional[Precision] = None) -> None:
        self._root_device = torch.device(device)
        self.precision_plugin: Precision = precision_plugin or Precision()
        self._lightning_module: Optional["LightningModule"] = None
        self._model: Optional[nn.Module] = None
        self.optimizers: List[Optimizer] = []
        self._lightning_optimizers: List[LightningOptimizer] = []
        self.lr_scheduler_configs: List[LRSchedulerConfig] = []
        self.trainer: Optional["Trainer"] = None

    def default_precision_plugin(self, precision: str, device_type: str) -> Precision:
        """The plugin ``Trainer(precision=...)`` gives this strategy when ``plugins=`` holds none (Lightning's
        accelerator connector: FSDP and DeepSpeed strategies get their own kinds)."""
        return build_precision(precision, device_type)

    # ---------------------------------------------------------------- Lightning's strategy hooks (no-ops here)
    def on_train_start(self) -> None:
        """Called when training begins (after the module's ``on_train_start``)."""

    def on_train_end(self) -> None:
        """Called when training ends."""

    def on_validation_start(self) -> None:
        """Called when validation begins."""

    def on_validation_end(self) -> None:
        """Called when validation ends."""

    def on_test_start(self) -> None:
        """Called when testing begins."""

    def on_test_end(self) -> None:
        """Called when testing ends."""

    def on_predict_start(self) -> None:
        """Called when predicting begins."""

    def on_predict_end(self) -> None:
        """Called when predicting ends."""

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Called in the training loop before anything happens for that batch."""

    # ---------------------------------------------------------------- placement
    @property
    def root_device(self) -> torch.device:
        return self._root_device

    @property
    def lightning_module(self) -> Optional["LightningModule"]:
        return self._lightning_module

    @property
    def model(self) -> Optional[nn.Module]:
        return self._model if self._model is not None else self._lightning_module

    @model.setter
    def model(self, model: Optional[nn.Module]) -> None:
        self._model = model

    def connect(self, model: "LightningModule") -> None:
        self._lightning_module = model
        self._model = model

    def model_to_device(self) -> None:
        assert self.model is not None
        self.model.to(self.root_device)

    def setup_module(self, module: nn.Module) -> nn.Module:
        return module

    def setup(self, trainer: "Trainer") -> None:
        assert self._lightning_module is not None
        self.model_to_device()
        self.precision_plugin.convert_module(self._lightning_module)
        self._model = self.setup_module(self._lightning_module)
        if trainer.state.fn == "fit":
            self.setup_optimizers(trainer)

    def setup_optimizers(self, trainer: "Trainer") -> None:
        module = self._lightning_module
        assert module is not None
        output = trainer._hooks.call_module("configure_optimizers")
        self.optimizers, self.lr_scheduler_configs = parse_optimizers(output, not module.automatic_optimization)
        validate_scheduler_api(self.lr_scheduler_configs, module)
        _check_multiple_optimizers(self.optimizers, module)
        self._lightning_optimizers = [LightningOptimizer(opt, self) for opt in self.optimizers]

    def process_dataloader(self, dataloader: Any, stage: str) -> Any:
        """Hook for strategies that wrap loaders (a distributed sampler); one device keeps them as they are."""
        return dataloader

    def batch_to_device(self, batch: Any, device: Optional[torch.device] = None, dataloader_idx: int = 0) -> Any:
        trainer = self.trainer
        assert trainer is not None
        device = device or self.root_device
        return trainer._hooks.call_module("transfer_batch_to_device", batch, device, dataloader_idx)

    # ---------------------------------------------------------------- steps
    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        assert self.trainer is not None
        with self.precision_plugin.train_step_context():
            return self.trainer._hooks.call_module("training_step", *args, **kwargs)

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        assert self.trainer is not None
        with self.precision_plugin.val_step_context():
            return self.trainer._hooks.call_module("validation_step", *args, **kwargs)

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        assert self.trainer is not None
        with self.precision_plugin.test_step_context():
            return self.trainer._hooks.call_module("test_step", *args, **kwargs)

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        assert self.trainer is not None
        with self.precision_plugin.predict_step_context():
            return self.trainer._hooks.call_module("predict_step", *args, **kwargs)

    def backward(self, closure_loss: Tensor, optimizer: Optional[Optimizer], *args: Any, **kwargs: Any) -> Tensor:
        module = self._lightning_module
        closure_loss = self.precision_plugin.pre_backward(closure_loss, module)
        self.precision_plugin.backward(closure_loss, module, optimizer, *args, **kwargs)
        closure_loss = self.precision_plugin.post_backward(closure_loss, module)
        return closure_loss

    def optimizer_step(self, optimizer: Optimizer, closure: Callable[[], Any], model: Any = None, **kwargs: Any) -> Any:
        model = model or self._lightning_module
        return self.precision_plugin.optimizer_step(optimizer, model=model, closure=closure, **kwargs)

    def block_backward_sync(self) -> ContextManager:
        """Context in which backward does not all-reduce (non-final accumulation micro-steps)."""
        return nullcontext()

    # ---------------------------------------------------------------- collectives (identity on one device)
    @property
    def is_global_zero(self) -> bool:
        return True

    @property
    def world_size(self) -> int:
        return 1

    @property
    def global_rank(self) -> int:
        return 0

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def node_rank(self) -> int:
        return 0

    def reduce(self, tensor: Any, group: Optional[Any] = None, reduce_op: Optional[str] = "mean") -> Any:
        return tensor

    def all_gather(self, tensor: Any, group: Optional[Any] = None, sync_grads: bool = False) -> Any:
        return tensor

    def barrier(self, name: Optional[str] = None) -> None:
        pass

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision

    # ---------------------------------------------------------------- checkpoint
    def lightning_module_state_dict(self) -> Dict[str, Any]:
        assert self._lightning_module is not None
        return self._lightning_module.state_dict()

    def optimizer_state(self, optimizer: Optimizer) -> Dict[str, Any]:
        return optimizer.state_dict()

    def load_model_state_dict(self, state_dict: Dict[str, Any], strict: bool = True) -> None:
        assert self._lightning_module is not None
        self._lightning_module.load_state_dict(state_dict, strict=strict)

    @property
    def checkpoint_io(self) -> Any:
        """How checkpoint files are written and read: ``Trainer(plugins=[CheckpointIO])``, else torch files."""
        io = self.__dict__.get("_checkpoint_io")
        if io is None:
            from trainer.plugins.io import TorchCheckpointIO

            io = self._checkpoint_io = TorchCheckpointIO()
        return io

    @checkpoint_io.setter
    def checkpoint_io(self, io: Any) -> None:
        self._checkpoint_io = io

    def save_checkpoint(self, checkpoint: Dict[str, Any], filepath: Any) -> None:
        """Writes ``checkpoint`` (global rank 0 only; sharded strategies write from every rank)."""
        if self.is_global_zero:
            self.checkpoint_io.save_checkpoint(checkpoint, filepath)

    def load_checkpoint(self, checkpoint_path: Any) -> Dict[str, Any]:
        return self.checkpoint_io.load_checkpoint(checkpoint_path)

    def remove_checkpoint(self, filepath: Any) -> None:
        if self.is_global_zero:
            self.checkpoint_io.remove_checkpoint(filepath)

    def teardown(self) -> None:
        io = self.__dict__.get("_checkpoint_io")
        if io is not None:
            io.teardown()
        if self._lightning_module is not None and self.root_device.type != "cpu":
            self._lightning_module.cpu()


def _check_multiple_optimizers(optimizers: List[Optimizer], module: Any) -> None:
    if "optimizer_idx" in _explicit_params(module.training_step):
        raise RuntimeError(
            "Training with multiple optimizers is only supported with manual optimization. Remove the `optimizer_idx`"
            " argument from `training_step`, set `self.automatic_optimization = False` and access your optimizers"
            " in `training_step` with `opt1, opt2, ... = self.optimizers()`."
        )
    if module.automatic_optimization and len(optimizers) > 1:
        raise RuntimeError(
            "Training with multiple optimizers is only supported with manual optimization. Set"
            " `self.automatic_optimization = False`, then access your optimizers in `training_step` with"
            " `opt1, opt2, ... = self.optimizers()`."
        )


def _explicit_params(fn: Any) -> List[str]:
    import inspect

    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []
