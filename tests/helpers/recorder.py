"""Records every Callback hook and every LightningModule hook call, in order, into one list.

Entries are plain strings: module hooks by name (``"training_step"``), callback hooks prefixed
with ``"Callback."`` (``"Callback.on_fit_start"``). ``setup``/``teardown`` carry their stage
(``"setup(fit)"``, ``"Callback.teardown(validate)"``) because the stage is part of the contract.
Each recording method records its name on entry and then delegates to the base class, so the
framework's default behaviour (e.g. ``optimizer_step`` running the closure, ``transfer_batch_to_device``
moving the batch) is unchanged.
"""
from __future__ import annotations

from types import ModuleType
from typing import List, Optional

CALLBACK_HOOKS = (
    "setup",
    "teardown",
    "on_fit_start",
    "on_fit_end",
    "on_sanity_check_start",
    "on_sanity_check_end",
    "on_train_start",
    "on_train_end",
    "on_train_epoch_start",
    "on_train_epoch_end",
    "on_train_batch_start",
    "on_train_batch_end",
    "on_validation_start",
    "on_validation_end",
    "on_validation_epoch_start",
    "on_validation_epoch_end",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_start",
    "on_test_end",
    "on_test_epoch_start",
    "on_test_epoch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_start",
    "on_predict_end",
    "on_predict_epoch_start",
    "on_predict_epoch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_exception",
    "state_dict",
    "load_state_dict",
    "on_save_checkpoint",
    "on_load_checkpoint",
)

MODULE_HOOKS = (
    # data hooks
    "prepare_data",
    "setup",
    "teardown",
    "train_dataloader",
    "val_dataloader",
    "test_dataloader",
    "predict_dataloader",
    "on_before_batch_transfer",
    "transfer_batch_to_device",
    "on_after_batch_transfer",
    # configuration
    "configure_model",
    "configure_callbacks",
    "configure_optimizers",
    # steps and the optimisation machinery
    "training_step",
    "validation_step",
    "test_step",
    "predict_step",
    "optimizer_step",
    "optimizer_zero_grad",
    "backward",
    "lr_scheduler_step",
    "configure_gradient_clipping",
    "clip_gradients",
    # model hooks
    "on_fit_start",
    "on_fit_end",
    "on_train_start",
    "on_train_end",
    "on_validation_start",
    "on_validation_end",
    "on_test_start",
    "on_test_end",
    "on_predict_start",
    "on_predict_end",
    "on_train_epoch_start",
    "on_train_epoch_end",
    "on_validation_epoch_start",
    "on_validation_epoch_end",
    "on_test_epoch_start",
    "on_test_epoch_end",
    "on_predict_epoch_start",
    "on_predict_epoch_end",
    "on_train_batch_start",
    "on_train_batch_end",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
    "on_validation_model_zero_grad",
    "on_validation_model_eval",
    "on_validation_model_train",
    "on_test_model_eval",
    "on_test_model_train",
    "on_predict_model_eval",
    "on_before_zero_grad",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    # checkpoint hooks
    "on_save_checkpoint",
    "on_load_checkpoint",
)

_STAGED = ("setup", "teardown")


def _label(prefix: str, name: str, args, kwargs) -> str:
    if name == "lr_scheduler_step":
        # Which scheduler stepped is part of the contract (step/epoch/plateau order).
        scheduler = kwargs.get("scheduler", args[0] if args else None)
        return f"{prefix}{name}({type(scheduler).__name__})"
    if name in _STAGED:
        # Module: setup(stage); Callback: setup(trainer, pl_module, stage).
        stage = kwargs.get("stage", args[-1] if args else None)
        stage = getattr(stage, "value", stage)  # Lightning passes a str-Enum (TrainerFn.FITTING)
        return f"{prefix}{name}({stage})"
    return f"{prefix}{name}"


def _recording_method(prefix: str, name: str, owner_holder: list):
    def method(self, *args, **kwargs):
        self.calls.append(_label(prefix, name, args, kwargs))
        parent = getattr(super(owner_holder[0], self), name)
        return parent(*args, **kwargs)

    method.__name__ = name
    method.__qualname__ = f"Recording.{name}"
    return method


def _recording_subclass(base: type, hooks, prefix: str, cls_name: str) -> type:
    holder: list = []
    namespace = {name: _recording_method(prefix, name, holder) for name in hooks}
    cls = type(cls_name, (base,), namespace)
    holder.append(cls)
    return cls


def recording_module_class(L: ModuleType, base: Optional[type] = None, hooks=MODULE_HOOKS) -> type:
    """Subclass ``base`` (default: the framework's BoringModel) so every hook in ``hooks`` is recorded.

    Instances need a ``calls`` list attribute (``make_recording_module`` sets it).
    """
    if base is None:
        from .models import boring_model_class

        base = boring_model_class(L)
    return _recording_subclass(base, hooks, "", f"Recording{base.__name__}")


def make_recording_module(L: ModuleType, calls: Optional[List[str]] = None, base: Optional[type] = None, **init_kwargs):
    """An instance of ``recording_module_class(L, base)`` recording into ``calls``."""
    model = recording_module_class(L, base)(**init_kwargs)
    model.calls = calls if calls is not None else []
    return model


DATAMODULE_HOOKS = (
    "prepare_data",
    "setup",
    "teardown",
    "train_dataloader",
    "val_dataloader",
    "test_dataloader",
    "predict_dataloader",
    "on_before_batch_transfer",
    "transfer_batch_to_device",
    "on_after_batch_transfer",
    "state_dict",
    "load_state_dict",
)


def make_recording_datamodule(L: ModuleType, calls: List[str], base: Optional[type] = None, **init_kwargs):
    """A datamodule (default: the helpers' TinyDataModule) recording its hooks as ``DataModule.<name>``."""
    if base is None:
        from .models import datamodule_class

        base = datamodule_class(L)
    dm = _recording_subclass(base, DATAMODULE_HOOKS, "DataModule.", f"Recording{base.__name__}")(**init_kwargs)
    dm.calls = calls
    return dm


def make_hook_recorder(L: ModuleType, calls: List[str], hooks=CALLBACK_HOOKS):
    """A ``L.Callback`` that records every hook in ``hooks`` into ``calls`` (prefixed ``Callback.``)."""
    cls = _recording_subclass(L.Callback, hooks, "Callback.", "HookRecorder")
    cb = cls()
    cb.calls = calls
    return cb


def module_and_recorder(L: ModuleType, base: Optional[type] = None, **init_kwargs):
    """(calls, model, callback) sharing one list, the usual set-up of a hook-order test."""
    calls: List[str] = []
    return calls, make_recording_module(L, calls, base, **init_kwargs), make_hook_recorder(L, calls)
