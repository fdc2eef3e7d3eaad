"""Default hooks of LightningModule/LightningDataModule and the Trainer's hook dispatch.

Dispatch is decided once per run: a callback hook list holds only the callbacks that override
the hook, so an un-overridden hook costs one empty-list check per call site.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import torch
from torch.optim import Optimizer

from trainer.utilities import move_data_to_device

if TYPE_CHECKING:  # pragma: no cover
    from trainer.trainer import Trainer


class ModelHooks:
    """Hooks a LightningModule may override; each is a no-op by default."""

    def on_fit_start(self) -> None: ...

    def on_fit_end(self) -> None: ...

    def on_train_start(self) -> None: ...

    def on_train_end(self) -> None: ...

    def on_validation_start(self) -> None: ...

    def on_validation_end(self) -> None: ...

    def on_test_start(self) -> None: ...

    def on_test_end(self) -> None: ...

    def on_predict_start(self) -> None: ...

    def on_predict_end(self) -> None: ...

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Optional[int]: ...

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None: ...

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...

    def on_validation_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...

    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...

    def on_test_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...

    def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...

    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...

    def on_validation_model_zero_grad(self) -> None:
        self.zero_grad()  # type: ignore[attr-defined]  # set_to_none is the default, as in Lightning

    def on_validation_model_eval(self) -> None:
        self.trainer.model.eval()  # type: ignore[attr-defined]

    def on_validation_model_train(self) -> None:
        self.trainer.model.train()  # type: ignore[attr-defined]

    def on_test_model_eval(self) -> None:
        self.trainer.model.eval()  # type: ignore[attr-defined]

    def on_test_model_train(self) -> None:
        self.trainer.model.train()  # type: ignore[attr-defined]

    def on_predict_model_eval(self) -> None:
        self.trainer.model.eval()  # type: ignore[attr-defined]

    def on_train_epoch_start(self) -> None: ...

    def on_train_epoch_end(self) -> None: ...

    def on_validation_epoch_start(self) -> None: ...

    def on_validation_epoch_end(self) -> None: ...

    def on_test_epoch_start(self) -> None: ...

    def on_test_epoch_end(self) -> None: ...

    def on_predict_epoch_start(self) -> None: ...

    def on_predict_epoch_end(self) -> None: ...

    def on_before_zero_grad(self, optimizer: Optimizer) -> None: ...

    def on_before_backward(self, loss: torch.Tensor) -> None: ...

    def on_after_backward(self) -> None: ...

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None: ...

    def configure_sharded_model(self) -> None: ...

    def configure_model(self) -> None: ...


class DataHooks:
    """Data hooks shared by LightningModule and LightningDataModule."""

    def prepare_data(self) -> None: ...

    def setup(self, stage: str) -> None: ...

    def teardown(self, stage: str) -> None: ...

    def train_dataloader(self) -> Any:
        raise _not_implemented("train_dataloader")

    def test_dataloader(self) -> Any:
        raise _not_implemented("test_dataloader")

    def val_dataloader(self) -> Any:
        raise _not_implemented("val_dataloader")

    def predict_dataloader(self) -> Any:
        raise _not_implemented("predict_dataloader")

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return move_data_to_device(batch, device)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch


def _not_implemented(name: str) -> Exception:
    """Lightning's error for a ``*_dataloader`` hook the module or datamodule does not implement."""
    from trainer.exceptions import MisconfigurationException

    return MisconfigurationException(f"`{name}` must be implemented to be used with the Lightning Trainer")


# --------------------------------------------------------------------------- overrides
_BASES: Dict[str, Any] = {}


def is_overridden(method_name: str, instance: Any, parent: Optional[type] = None) -> bool:
    """Whether ``instance``'s class (or the instance itself) redefines ``method_name`` of ``parent``."""
    if instance is None:
        return False
    if parent is None:
        for base in _base_classes():
            if isinstance(instance, base):
                parent = base
                break
        else:
            raise ValueError(f"Expected a LightningModule, LightningDataModule or Callback, got {type(instance)}")
    patched = getattr(instance, "__dict__", {})
    if method_name in patched:  # patched on the instance (e.g. mocks, LambdaCallback); None unsets it (Lightning)
        return patched[method_name] is not None
    instance_attr = getattr(type(instance), method_name, None)
    parent_attr = getattr(parent, method_name, None)
    if instance_attr is None:
        return False
    if parent_attr is None:
        return True
    instance_fn = getattr(instance_attr, "__code__", None) or getattr(instance_attr, "fget", None)
    parent_fn = getattr(parent_attr, "__code__", None) or getattr(parent_attr, "fget", None)
    return instance_fn is not parent_fn


def lightning_is_overridden(method_name: str, instance: Any, parent: Optional[type] = None) -> bool:
    """Lightning's ``is_overridden`` exactly (``lightning.pytorch.utilities.model_helpers.is_overridden``): a hook
    set on the instance counts only if what it wraps (``functools.wraps``/``partial``/``Mock(wraps=...)``) is not
    the parent's own code; a bare ``Mock()`` or a wrapper of ``None`` is not an override.

    Lightning gates only a few calls on it (``configure_model``, ``configure_sharded_model``, the step checks); it
    calls every other hook. This Trainer skips the hooks nobody overrode with :func:`is_overridden`, which counts
    any callable set on the instance, so that what Lightning would call still runs."""
    if instance is None:
        return False
    if parent is None:
        parent = next((base for base in _base_classes() if isinstance(instance, base)), None)
        if parent is None:
            raise ValueError(f"Expected a LightningModule, LightningDataModule or Callback, got {type(instance)}")
    attr = getattr(instance, method_name, None)
    if attr is None:
        return False
    if hasattr(attr, "__wrapped__"):
        attr = attr.__wrapped__
    from unittest.mock import Mock

    if isinstance(attr, Mock):
        attr = attr._mock_wraps
    elif isinstance(attr, functools.partial):
        attr = attr.func
    if attr is None:
        return False
    parent_attr = getattr(parent, method_name, None)
    if parent_attr is None:
        raise ValueError(f"{parent.__name__} does not define `{method_name}`")
    parent_attr = getattr(parent_attr, "__wrapped__", parent_attr)
    return getattr(attr, "__code__", None) != getattr(parent_attr, "__code__", None)


_BASE_CLASSES: tuple = ()


def _base_classes() -> tuple:
    global _BASE_CLASSES
    if not _BASE_CLASSES:
        from trainer.callbacks.callback import Callback
        from trainer.datamodule import LightningDataModule
        from trainer.module import LightningModule

        _BASE_CLASSES = (LightningModule, LightningDataModule, Callback)
    return _BASE_CLASSES


class HookDispatcher:
    """Calls callback and module hooks in Lightning's order, skipping callbacks that do not override.

    ``callbacks_for(name)`` is cached per hook name; the cache is rebuilt when the callback list
    changes (``reset``).
    """

    def __init__(self, trainer: "Trainer") -> None:
        self.trainer = trainer
        self._cache: Dict[str, List[Any]] = {}
        self._module_noops: frozenset = frozenset()
        self._module: Any = None

    def reset(self) -> None:
        """Re-reads which callbacks and module hooks are overridden (call when either changes)."""
        self._cache = {}
        module = self.trainer.lightning_module
        self._module = module
        if module is None:
            self._module_noops = frozenset()
        else:
            from trainer.module import LightningModule

            noops = frozenset(name for name in _NOOP_MODULE_HOOKS if not is_overridden(name, module, LightningModule))
            if self.trainer.profiler.enabled:  # a profiler records every hook Lightning calls, no-ops included
                noops = noops & _CALLED_ONLY_WHEN_OVERRIDDEN
            self._module_noops = noops

    def callbacks_for(self, hook_name: str) -> List[Any]:
        cbs = self._cache.get(hook_name)
        if cbs is None:
            from trainer.callbacks.callback import Callback

            cbs = [cb for cb in self.trainer.callbacks if _runs_hook(cb, hook_name, Callback)]
            self._cache[hook_name] = cbs
        return cbs

    def call_callbacks(self, hook_name: str, *args: Any, monitoring: Optional[bool] = None, **kwargs: Any) -> None:
        cbs = self._cache.get(hook_name)
        if cbs is None:
            cbs = self.callbacks_for(hook_name)
        if not cbs:
            return
        trainer = self.trainer
        pl_module = trainer.lightning_module
        prev_fx = pl_module._current_fx_name if pl_module is not None else None
        if pl_module is not None:
            _setattr(pl_module, "_current_fx_name", hook_name)
        profiler = trainer.profiler
        try:
            for cb in cbs:
                if monitoring is not None and _is_monitoring(cb) != monitoring:
                    continue
                if profiler.enabled:
                    with profiler.profile(f"[Callback]{cb.state_key}.{hook_name}"):
                        getattr(cb, hook_name)(trainer, pl_module, *args, **kwargs)
                else:
                    getattr(cb, hook_name)(trainer, pl_module, *args, **kwargs)
        finally:
            if pl_module is not None:
                _setattr(pl_module, "_current_fx_name", prev_fx)

    def call_module(self, hook_name: str, *args: Any, pl_module: Any = None, **kwargs: Any) -> Any:
        trainer = self.trainer
        if pl_module is None:
            if hook_name in self._module_noops:  # a default no-op nobody overrode: nothing to run
                return None
            pl_module = self._module if self._module is not None else trainer.lightning_module
        fn = getattr(pl_module, hook_name, None)
        if fn is None:
            return None
        prev_fx = pl_module._current_fx_name
        _setattr(pl_module, "_current_fx_name", hook_name)
        try:
            profiler = trainer.profiler
            if profiler.enabled and hook_name not in _NOT_PROFILED:  # Lightning calls these directly
                with profiler.profile(f"[LightningModule]{type(pl_module).__name__}.{hook_name}"):
                    return fn(*args, **kwargs)
            return fn(*args, **kwargs)
        finally:
            _setattr(pl_module, "_current_fx_name", prev_fx)

    def call_strategy(self, hook_name: str, *args: Any, **kwargs: Any) -> Any:
        """The strategy's ``hook_name`` (a strategy without it: nothing to run), recorded by an enabled profiler as
        Lightning's ``[Strategy]<class>.<hook>`` action."""
        strategy = self.trainer.strategy
        fn = getattr(strategy, hook_name, None)
        profiler = self.trainer.profiler
        if not profiler.enabled:
            return fn(*args, **kwargs) if fn is not None else None
        with profiler.profile(f"[Strategy]{type(strategy).__name__}.{hook_name}"):
            return fn(*args, **kwargs) if fn is not None else None

    def call_datamodule(self, hook_name: str, *args: Any, **kwargs: Any) -> Any:
        dm = self.trainer.datamodule
        if dm is None:
            return None
        fn = getattr(dm, hook_name, None)
        if not callable(fn):
            return None
        with self.trainer.profiler.profile(f"[LightningDataModule]{type(dm).__name__}.{hook_name}"):
            return fn(*args, **kwargs)


# ModelHooks/DataHooks defaults whose body does nothing: skipped unless the module overrides them
_NOOP_MODULE_HOOKS = tuple(
    name
    for name, fn in list(vars(ModelHooks).items()) + list(vars(DataHooks).items())
    if callable(fn) and not name.startswith("_") and getattr(fn, "__code__", None) is not None
    and fn.__code__.co_code == (lambda self: None).__code__.co_code
) + ("on_save_checkpoint", "on_load_checkpoint")

# module methods Lightning calls directly, not as profiled hooks: the steps (recorded as the strategy's
# ``[Strategy]<class>.<step>`` actions) and ``backward`` (inside ``[Strategy]<class>.backward``)
_NOT_PROFILED = frozenset(("training_step", "validation_step", "test_step", "predict_step", "backward"))
# hooks Lightning calls only when the module overrides them, profiler or not
_CALLED_ONLY_WHEN_OVERRIDDEN = frozenset(("configure_model", "configure_sharded_model"))

# nn.Module.__setattr__ runs several isinstance checks; this plain attribute is set ~20 times a step
_setattr = object.__setattr__


def _set_fx(module: Any, name: Optional[str]) -> None:
    """Sets ``module._current_fx_name`` without nn.Module.__setattr__ (used by the compiled engine too)."""
    _setattr(module, "_current_fx_name", name)


def _is_monitoring(cb: Any) -> bool:
    from trainer.callbacks.callback import Checkpoint

    if isinstance(cb, Checkpoint):
        return True
    try:
        from trainer.callbacks.early_stopping import EarlyStopping
    except ImportError:  # pragma: no cover - the callbacks package is always shipped
        return False
    return isinstance(cb, EarlyStopping)


def _runs_hook(cb: Any, hook_name: str, base: type) -> bool:
    """Lightning calls every callback's hook; leaving out the ones that are ``Callback``'s own no-op is this
    Trainer's shortcut, so anything that is not plainly that inherited no-op runs: an override, a hook set on the
    instance, or an object whose class does not carry the hook at all (``Mock(spec=Callback)``)."""
    if is_overridden(hook_name, cb, base):
        return True
    if hook_name in getattr(cb, "__dict__", {}):
        return callable(cb.__dict__[hook_name])
    return getattr(type(cb), hook_name, None) is None and callable(getattr(cb, hook_name, None))
