"""Precision plugins: how the step is cast, how the loss is scaled, and how the optimizer steps.

The order inside an optimizer step is Lightning's: closure (training_step, zero_grad, backward)
-> unscale (16-mixed) -> ``on_before_optimizer_step`` -> clip -> ``optimizer.step``. Unlike
Lightning (its issue #21435) gradients are always unscaled explicitly before clipping, so fused
optimizers (``AdamW(fused=True)``) work with clipping under AMP: ``GradScaler.step`` then passes
``grad_scale=None`` and the ``found_inf`` tensor to the fused kernel, which skips on inf/NaN.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Dict, Generator, Optional

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from trainer.exceptions import MisconfigurationException
from trainer.utilities import apply_to_collection

if TYPE_CHECKING:  # pragma: no cover
    from trainer.trainer import Trainer

_CLOSURE_FIRST = frozenset(
    cls for cls in (
        torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adamax, torch.optim.NAdam,
        torch.optim.RAdam, torch.optim.RMSprop, torch.optim.Adagrad, torch.optim.Adadelta, torch.optim.ASGD,
        torch.optim.Rprop,
    )
)
# their own step functions: a step patched on the class (a mock, an instrumented step) gets Lightning's
# optimizer.step(closure=...) call instead of the shortcut
# (compared unwrapped: torch wraps each class's step in its profiling hook at the first instantiation)
_TORCH_STEP = {cls: inspect.unwrap(cls.step) for cls in _CLOSURE_FIRST}
_NULL_CONTEXT = nullcontext()  # reusable: entered once per step at fp32
PRECISION_CHOICES = ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
_ALIASES = {64: "64-true", "64": "64-true", 32: "32-true", "32": "32-true", 16: "16-mixed", "16": "16-mixed",
            "bf16": "bf16-mixed"}


def normalize_precision(value: Any) -> str:
    """Maps Lightning's precision spellings to one of PRECISION_CHOICES, or raises naming the value."""
    if isinstance(value, (bool, float)):
        raise MisconfigurationException(
            f"`Trainer(precision={value!r})` is not supported. Allowed values: {list(PRECISION_CHOICES)}"
            " (and the aliases 64, 32, 16, '64', '32', '16', 'bf16')."
        )
    value = _ALIASES.get(value, value)
    if value not in PRECISION_CHOICES:
        raise MisconfigurationException(
            f"`Trainer(precision={value!r})` is not supported. Allowed values: {list(PRECISION_CHOICES)}"
            " (and the aliases 64, 32, 16, '64', '32', '16', 'bf16')."
        )
    return value


class Precision:
    """Full fp32 (``"32-true"``): no casts, no scaling."""

    precision: str = "32-true"

    def __init__(self) -> None:
        self.trainer: Optional["Trainer"] = None

    def convert_module(self, module: nn.Module) -> nn.Module:
        return module

    def convert_input(self, data: Any) -> Any:
        return data

    def forward_context(self) -> ContextManager:
        return _NULL_CONTEXT

    def tensor_init_context(self) -> ContextManager:
        """Where ``Trainer.init_module()`` creates parameters: in the default dtype (the "-true" precisions: theirs)."""
        return _NULL_CONTEXT

    # Lightning's names for the step contexts
    def train_step_context(self) -> ContextManager:
        return self.forward_context()

    val_step_context = test_step_context = predict_step_context = train_step_context

    # ---------------------------------------------------------------- backward
    def pre_backward(self, tensor: Tensor, module: Any) -> Tensor:
        trainer = self.trainer
        assert trainer is not None
        trainer._hooks.call_callbacks("on_before_backward", tensor)
        trainer._hooks.call_module("on_before_backward", tensor)
        return tensor

    def backward(self, tensor: Tensor, model: Any, optimizer: Optional[Optimizer], *args: Any, **kwargs: Any) -> None:
        assert self.trainer is not None
        self.trainer._hooks.call_module("backward", tensor, *args, **kwargs)

    def post_backward(self, tensor: Tensor, module: Any) -> Tensor:
        trainer = self.trainer
        assert trainer is not None
        trainer._hooks.call_callbacks("on_after_backward")
        trainer._hooks.call_module("on_after_backward")
        return tensor

    # ---------------------------------------------------------------- optimizer step
    def _scaled_step(self, optimizer: Optimizer, model: Any, closure: Callable[[], Any], **kwargs: Any) -> Any:
        """``optimizer.step`` through ``self.scaler`` (a GradScaler; fp16): the closure, unscaling before the
        hooks and clipping (fused optimizers included, so they see real gradients), then the scaler's step and
        update unless the closure skipped backward under automatic optimization."""
        scaler = self.scaler  # type: ignore[attr-defined]
        closure_result = closure()
        scaler.unscale_(optimizer)
        self._after_closure(model, optimizer)
        if not getattr(model, "automatic_optimization", True) or closure_result is not None:
            step_output = scaler.step(optimizer, **kwargs)
            scaler.update()
            return step_output
        return closure_result

    def _after_closure(self, model: Any, optimizer: Optimizer) -> None:
        trainer = self.trainer
        assert trainer is not None
        trainer._hooks.call_callbacks("on_before_optimizer_step", optimizer)
        trainer._hooks.call_module("on_before_optimizer_step", optimizer)
        self._clip_gradients(model, optimizer, trainer.gradient_clip_val, trainer.gradient_clip_algorithm)

    def _clip_gradients(
        self, model: Any, optimizer: Optimizer, clip_val: Optional[float], algorithm: Optional[str]
    ) -> None:
        if not getattr(model, "automatic_optimization", False):
            return  # manual optimization clips with self.clip_gradients()
        trainer = self.trainer
        assert trainer is not None
        if not clip_val and not trainer._clipping_overridden and not trainer.profiler.enabled:
            return  # the default hook would clip by 0, i.e. do nothing (a profiler records the call, as Lightning)
        trainer._hooks.call_module(
            "configure_gradient_clipping", optimizer, gradient_clip_val=clip_val, gradient_clip_algorithm=algorithm
        )

    def _wrap_closure(self, model: Any, optimizer: Optimizer, closure: Callable[[], Any]) -> Any:
        result = closure()
        self._after_closure(model, optimizer)
        return result

    def optimizer_step(self, optimizer: Optimizer, model: Any, closure: Callable[[], Any], **kwargs: Any) -> Any:
        cls = type(optimizer)
        if not kwargs and cls in _CLOSURE_FIRST and inspect.unwrap(cls.step) is _TORCH_STEP[cls] and torch.is_grad_enabled():
            # These optimizers' step(closure) is "run the closure once with grad enabled, then update":
            # doing exactly that here skips the closure plumbing inside step() (a measured ~3% of a
            # small model's step) and keeps every hook in the same order.
            result = self._wrap_closure(model, optimizer, closure)
            optimizer.step()
            return result

        def wrapped() -> Any:
            return self._wrap_closure(model, optimizer, closure)

        return optimizer.step(closure=wrapped, **kwargs)

    @staticmethod
    def main_params(optimizer: Optimizer) -> Generator[Tensor, None, None]:
        for group in optimizer.param_groups:
            yield from group["params"]

    def clip_gradients(self, optimizer: Optimizer, clip_val: float = 0.0, algorithm: str = "norm") -> None:
        if clip_val <= 0:
            return
        if algorithm == "value":
            torch.nn.utils.clip_grad_value_(list(self.main_params(optimizer)), clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(list(self.main_params(optimizer)), clip_val)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        pass


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Generator[None, None, None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class _CastingPrecision(Precision):
    """Parameters and floating inputs in one dtype (``64-true``, ``16-true``, ``bf16-true``)."""

    dtype: torch.dtype = torch.float32

    def convert_module(self, module: nn.Module) -> nn.Module:
        return module.to(dtype=self.dtype)

    def convert_input(self, data: Any) -> Any:
        dtype = self.dtype
        return apply_to_collection(
            data, Tensor, lambda t: t.to(dtype) if torch.is_floating_point(t) and t.dtype != dtype else t
        )

    def forward_context(self) -> ContextManager:
        return _default_dtype(self.dtype)

    def tensor_init_context(self) -> ContextManager:
        return _default_dtype(self.dtype)


class DoublePrecision(_CastingPrecision):
    precision = "64-true"
    dtype = torch.float64


class HalfPrecision(_CastingPrecision):
    def __init__(self, precision: str = "16-true") -> None:
        super().__init__()
        if precision not in ("16-true", "bf16-true"):
            raise ValueError(f"`HalfPrecision(precision={precision!r})`: precision must be '16-true' or 'bf16-true'.")
        self.precision = precision
        self.dtype = torch.float16 if precision == "16-true" else torch.bfloat16


class MixedPrecision(Precision):
    """Autocast to fp16/bf16; fp16 uses a GradScaler (dynamic loss scaling, skipped steps on inf)."""

    def __init__(self, precision: str, device: str, scaler: Optional[Any] = None) -> None:
        super().__init__()
        if precision not in ("16-mixed", "bf16-mixed"):
            raise ValueError(f"`MixedPrecision(precision={precision!r})`: precision must be '16-mixed' or 'bf16-mixed'.")
        self.precision = precision
        self.device = device
        if scaler is None and precision == "16-mixed":
            scaler = torch.amp.GradScaler(device=device)
        if scaler is not None and precision == "bf16-mixed":
            raise MisconfigurationException(f"`precision='bf16-mixed'` does not use a scaler, found {scaler}.")
        self.scaler = scaler

    @property
    def _autocast_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16-mixed" else torch.half

    def forward_context(self) -> ContextManager:
        return torch.autocast(self.device, dtype=self._autocast_dtype)

    def convert_input(self, data: Any) -> Any:
        return data

    def pre_backward(self, tensor: Tensor, module: Any) -> Tensor:
        if self.scaler is not None:
            tensor = self.scaler.scale(tensor)
        return super().pre_backward(tensor, module)

    def optimizer_step(self, optimizer: Optimizer, model: Any, closure: Callable[[], Any], **kwargs: Any) -> Any:
        if self.scaler is None:
            return super().optimizer_step(optimizer, model=model, closure=closure, **kwargs)
        if isinstance(optimizer, torch.optim.LBFGS):
            raise MisconfigurationException("AMP and the LBFGS optimizer are not compatible.")
        return self._scaled_step(optimizer, model, closure, **kwargs)

    def state_dict(self) -> Dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if self.scaler is not None and state_dict:
            self.scaler.load_state_dict(state_dict)


def build_precision(precision: str, device_type: str) -> Precision:
    if precision == "32-true":
        return Precision()
    if precision == "64-true":
        return DoublePrecision()
    if precision in ("16-true", "bf16-true"):
        return HalfPrecision(precision)
    return MixedPrecision(precision, device=device_type)
