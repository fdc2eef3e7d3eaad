"""``BaseFinetuning`` and ``BackboneFinetuning``: freeze modules before training, unfreeze them mid-fit into new
optimizer param groups (Lightning 2.6's callbacks).

The param groups added mid-fit are recorded by parameter name (``internal_optimizer_metadata``) so that a resumed
fit rebuilds the same groups before the optimizer's state is loaded into them. Both engines see the change: the
eager engine steps whatever the optimizer holds, and the compiled engine captures again when a parameter's
``requires_grad`` or the optimizer's param groups change (``trainer/compile/engine.py``).
"""
from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, Generator, Iterable, List, Optional, Union

import torch
from torch.nn import Module, ModuleDict
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.optimizer import Optimizer

from trainer.callbacks.callback import Callback
from trainer.exceptions import MisconfigurationException

if TYPE_CHECKING:  # pragma: no cover
    from trainer.module import LightningModule
    from trainer.trainer import Trainer

log = logging.getLogger(__name__)

_Modules = Union[Module, Iterable[Union[Module, Iterable]]]


def multiplicative(epoch: int) -> float:
    """``BackboneFinetuning``'s default ``lambda_func``: the backbone LR doubles every epoch."""
    return 2.0


class BaseFinetuning(Callback):
    """Base class of finetuning callbacks: override ``freeze_before_training`` (called in ``setup``, before
    ``configure_optimizers``) and ``finetune_function`` (called at every training epoch start, per optimizer)."""

    def __init__(self) -> None:
        self._internal_optimizer_metadata: Dict[int, List[Dict[str, Any]]] = {}
        self._restarting = False

    def state_dict(self) -> Dict[str, Any]:
        return {"internal_optimizer_metadata": self._internal_optimizer_metadata}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._restarting = True
        if "internal_optimizer_metadata" in state_dict:
            self._internal_optimizer_metadata = state_dict["internal_optimizer_metadata"]
        else:  # checkpoints of older Lightning versions saved the metadata itself
            self._internal_optimizer_metadata = state_dict  # type: ignore[assignment]

    def on_fit_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        """A resumed fit: the optimizers get the param groups they had when the checkpoint was saved."""
        if not self._restarting:
            return
        if self._internal_optimizer_metadata:
            named_parameters = dict(pl_module.named_parameters())
            for opt_idx, optimizer in enumerate(trainer.optimizers):
                if opt_idx in self._internal_optimizer_metadata:
                    optimizer.param_groups = self._apply_mapping_to_param_groups(
                        self._internal_optimizer_metadata[opt_idx], named_parameters
                    )
        self._restarting = False

    # ------------------------------------------------------------------ module helpers
    @staticmethod
    def flatten_modules(modules: _Modules) -> List[Module]:
        """The leaf modules of ``modules`` (and the parents that hold parameters themselves)."""
        if isinstance(modules, ModuleDict):
            modules = modules.values()
        if isinstance(modules, Iterable):
            flat: List[Module] = []
            for m in modules:
                flat.extend(BaseFinetuning.flatten_modules(m))
            candidates: Iterable[Module] = flat
        else:
            candidates = modules.modules()
        return [m for m in candidates if not list(m.children()) or m._parameters]

    @staticmethod
    def filter_params(modules: _Modules, train_bn: bool = True, requires_grad: bool = True) -> Generator:
        """The parameters of ``modules`` whose ``requires_grad`` is ``requires_grad`` (BatchNorm's skipped unless
        ``train_bn``)."""
        for mod in BaseFinetuning.flatten_modules(modules):
            if isinstance(mod, _BatchNorm) and not train_bn:
                continue
            for param in mod.parameters(recurse=False):
                if param.requires_grad == requires_grad:
                    yield param

    @staticmethod
    def make_trainable(modules: _Modules) -> None:
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm):
                module.track_running_stats = True
            for param in module.parameters(recurse=False):
                param.requires_grad = True

    @staticmethod
    def freeze_module(module: Module) -> None:
        if isinstance(module, _BatchNorm):
            module.track_running_stats = False
        for param in module.parameters(recurse=False):
            param.requires_grad = False

    @staticmethod
    def freeze(modules: _Modules, train_bn: bool = True) -> None:
        """Freezes ``modules``; with ``train_bn`` their BatchNorm layers stay trainable."""
        for mod in BaseFinetuning.flatten_modules(modules):
            if isinstance(mod, _BatchNorm) and train_bn:
                BaseFinetuning.make_trainable(mod)
            else:
                BaseFinetuning.freeze_module(mod)

    @staticmethod
    def filter_on_optimizer(optimizer: Optimizer, params: Iterable) -> List:
        """``params`` without those already in one of ``optimizer``'s param groups (Lightning compares by value)."""
        kept, skipped = [], []
        for param in params:
            in_optimizer = any(torch.equal(p, param) for group in optimizer.param_groups for p in group["params"])
            (skipped if in_optimizer else kept).append(param)
        if skipped:
            warnings.warn(
                "The provided params to be frozen already exist within another group of this optimizer."
                " Those parameters will be skipped.\n"
                "HINT: Did you init your optimizer in `configure_optimizer` as such:\n"
                f" {type(optimizer)}(filter(lambda p: p.requires_grad, self.parameters()), ...) ",
            )
        return kept

    @staticmethod
    def unfreeze_and_add_param_group(
        modules: _Modules,
        optimizer: Optimizer,
        lr: Optional[float] = None,
        initial_denom_lr: float = 10.0,
        train_bn: bool = True,
    ) -> None:
        """Unfreezes ``modules`` and adds their parameters to ``optimizer`` as a new group, at ``lr`` or at the
        first group's lr divided by ``initial_denom_lr``."""
        BaseFinetuning.make_trainable(modules)
        params_lr = optimizer.param_groups[0]["lr"] if lr is None else float(lr)
        denom_lr = initial_denom_lr if lr is None else 1.0
        params = BaseFinetuning.filter_params(modules, train_bn=train_bn, requires_grad=True)
        params = BaseFinetuning.filter_on_optimizer(optimizer, params)
        if params:
            optimizer.add_param_group({"params": params, "lr": params_lr / denom_lr})

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: "Trainer", pl_module: "LightningModule", stage: str) -> None:
        self.freeze_before_training(pl_module)
        from trainer.strategies.deepspeed import DeepSpeedStrategy

        if isinstance(trainer.strategy, DeepSpeedStrategy):
            raise NotImplementedError(
                "The Finetuning callback does not support running with the DeepSpeed strategy."
                " Choose a different strategy or disable the callback."
            )

    def on_train_epoch_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        for opt_idx, optimizer in enumerate(trainer.optimizers):
            num_param_groups = len(optimizer.param_groups)
            self.finetune_function(pl_module, trainer.current_epoch, optimizer)
            self._store(pl_module, opt_idx, num_param_groups, optimizer.param_groups)

    def finetune_function(self, pl_module: "LightningModule", epoch: int, optimizer: Optimizer) -> None:
        """Override to add your unfreeze logic."""
        raise NotImplementedError

    def freeze_before_training(self, pl_module: "LightningModule") -> None:
        """Override to add your freeze logic."""
        raise NotImplementedError

    # ------------------------------------------------------------------ metadata
    @staticmethod
    def _apply_mapping_to_param_groups(param_groups: List[Dict[str, Any]], mapping: dict) -> List[Dict[str, Any]]:
        out = []
        for group in param_groups:
            state = {k: v for k, v in group.items() if k != "params"}
            state["params"] = [mapping[p] for p in group["params"]]
            out.append(state)
        return out

    def _store(self, pl_module: "LightningModule", opt_idx: int, num_param_groups: int,
               current_param_groups: List[Dict[str, Any]]) -> None:
        """Records the groups by parameter name: all of them the first time, then the ones added since."""
        names = {p: n for n, p in pl_module.named_parameters()}
        if opt_idx not in self._internal_optimizer_metadata:
            self._internal_optimizer_metadata[opt_idx] = self._apply_mapping_to_param_groups(current_param_groups,
                                                                                             names)
        elif num_param_groups != len(current_param_groups):
            self._internal_optimizer_metadata[opt_idx].extend(
                self._apply_mapping_to_param_groups(current_param_groups[num_param_groups:], names)
            )


class BackboneFinetuning(BaseFinetuning):
    """Freezes ``pl_module.backbone`` and unfreezes it at ``unfreeze_backbone_at_epoch`` into a new param group
    whose lr then follows ``lambda_func`` (multiplied each epoch), aligned with the model's lr once it reaches it.

    Args:
        unfreeze_backbone_at_epoch: epoch at which the backbone is unfrozen.
        lambda_func: epoch -> factor applied to the backbone lr at every following epoch.
        backbone_initial_ratio_lr: initial backbone lr as a fraction of the model's current lr.
        backbone_initial_lr: initial backbone lr (overrides the ratio).
        should_align: cap the backbone lr at the model's lr once it reaches it.
        initial_denom_lr: passed to ``unfreeze_and_add_param_group``.
        train_bn: make the backbone's BatchNorm layers trainable.
        verbose: log both learning rates at each change.
        rounding: digits of the logged learning rates.
    """

    def __init__(
        self,
        unfreeze_backbone_at_epoch: int = 10,
        lambda_func: Callable = multiplicative,
        backbone_initial_ratio_lr: float = 10e-2,
        backbone_initial_lr: Optional[float] = None,
        should_align: bool = True,
        initial_denom_lr: float = 10.0,
        train_bn: bool = True,
        verbose: bool = False,
        rounding: int = 12,
    ) -> None:
        super().__init__()
        self.unfreeze_backbone_at_epoch = unfreeze_backbone_at_epoch
        self.lambda_func = lambda_func
        self.backbone_initial_ratio_lr = backbone_initial_ratio_lr
        self.backbone_initial_lr = backbone_initial_lr
        self.should_align = should_align
        self.initial_denom_lr = initial_denom_lr
        self.train_bn = train_bn
        self.verbose = verbose
        self.rounding = rounding
        self.previous_backbone_lr: Optional[float] = None

    def state_dict(self) -> Dict[str, Any]:
        return {
            "internal_optimizer_metadata": self._internal_optimizer_metadata,
            "previous_backbone_lr": self.previous_backbone_lr,
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.previous_backbone_lr = state_dict["previous_backbone_lr"]
        super().load_state_dict(state_dict)

    def on_fit_start(self, trainer: "Trainer", pl_module: "LightningModule") -> None:
        if hasattr(pl_module, "backbone") and isinstance(pl_module.backbone, Module):
            return super().on_fit_start(trainer, pl_module)
        raise MisconfigurationException("The LightningModule should have a nn.Module `backbone` attribute")

    def freeze_before_training(self, pl_module: "LightningModule") -> None:
        self.freeze(pl_module.backbone)

    def finetune_function(self, pl_module: "LightningModule", epoch: int, optimizer: Optimizer) -> None:
        if epoch == self.unfreeze_backbone_at_epoch:
            current_lr = optimizer.param_groups[0]["lr"]
            initial_backbone_lr = (self.backbone_initial_lr if self.backbone_initial_lr is not None
                                   else current_lr * self.backbone_initial_ratio_lr)
            self.previous_backbone_lr = initial_backbone_lr
            self.unfreeze_and_add_param_group(pl_module.backbone, optimizer, initial_backbone_lr,
                                              train_bn=self.train_bn, initial_denom_lr=self.initial_denom_lr)
            self._log_lrs(current_lr, initial_backbone_lr)
        elif epoch > self.unfreeze_backbone_at_epoch:
            current_lr = optimizer.param_groups[0]["lr"]
            next_lr = self.lambda_func(epoch + 1) * self.previous_backbone_lr
            if self.should_align and next_lr > current_lr:
                next_lr = current_lr
            optimizer.param_groups[-1]["lr"] = next_lr
            self.previous_backbone_lr = next_lr
            self._log_lrs(current_lr, next_lr)

    def _log_lrs(self, current_lr: float, backbone_lr: float) -> None:
        if self.verbose:
            log.info(f"Current lr: {round(current_lr, self.rounding)}, "
                     f"Backbone lr: {round(backbone_lr, self.rounding)}")
