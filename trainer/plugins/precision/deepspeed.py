"""Lightning's ``DeepSpeedPrecision``: the precision plugin of the DeepSpeed strategies.

The engine casts the module (the ``fp16``/``bf16`` sections of its config, written from ``precision``) and scales
the loss; this plugin casts floating-point inputs, runs ``engine.backward`` and ``engine.step`` and leaves clipping
to the engine (``gradient_clipping``). Constructing one needs no ``deepspeed``; the strategy that runs it does
(its error names the package).
"""
from __future__ import annotations

import warnings
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Optional

import torch
from torch import Tensor, nn
from torch.optim import LBFGS, Optimizer

from trainer.exceptions import MisconfigurationException
from trainer.precision import Precision, _default_dtype
from trainer.utilities import apply_to_collection

_PRECISION_INPUT = ("32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed")
_DTYPE = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16, "bf16-true": torch.bfloat16,
          "16-true": torch.float16, "32-true": torch.float32}


class DeepSpeedPrecision(Precision):
    """``precision``: one of ``"32-true"``, ``"16-true"``, ``"bf16-true"``, ``"16-mixed"``, ``"bf16-mixed"``."""

    def __init__(self, precision: str) -> None:
        super().__init__()
        if precision not in _PRECISION_INPUT:
            raise ValueError(
                f"`Trainer(strategy='deepspeed', precision={precision!r})` is not supported."
                f" `precision` must be one of: {_PRECISION_INPUT}."
            )
        self.precision = precision
        self._desired_dtype = _DTYPE[precision]
        self._warned_backward = False

    @property
    def dtype(self) -> torch.dtype:
        return self._desired_dtype

    def convert_module(self, module: nn.Module) -> nn.Module:
        if "true" in self.precision:
            return module.to(dtype=self._desired_dtype)
        return module

    def convert_input(self, data: Any) -> Any:
        dtype = self._desired_dtype
        return apply_to_collection(data, Tensor, lambda t: t.to(dtype) if torch.is_floating_point(t) else t)

    def tensor_init_context(self) -> ContextManager:
        if "true" not in self.precision:
            return nullcontext()
        return _default_dtype(self._desired_dtype)

    def module_init_context(self) -> ContextManager:
        return self.tensor_init_context()

    def _engine_strategy(self) -> Any:
        trainer = self.trainer
        if trainer is None or not hasattr(trainer.strategy, "deepspeed_engine"):
            raise MisconfigurationException(
                "`DeepSpeedPrecision` runs the DeepSpeed engine's backward and step: use it with"
                " `Trainer(strategy='deepspeed')` (or a `DeepSpeedStrategy`)."
            )
        return trainer.strategy

    def backward(self, tensor: Tensor, model: Any, optimizer: Optional[Optimizer], *args: Any, **kwargs: Any) -> None:
        from trainer.hooks import is_overridden

        if not self._warned_backward and model is not None and is_overridden("backward", model):
            self._warned_backward = True
            warnings.warn(
                "You have overridden the `LightningModule.backward` hook but it will be ignored since DeepSpeed handles"
                " the backward logic internally."
            )
        self._engine_strategy().engine_backward(tensor, *args, **kwargs)

    def optimizer_step(self, optimizer: Optimizer, model: Any, closure: Callable[[], Any], **kwargs: Any) -> Any:
        if isinstance(optimizer, LBFGS):
            raise MisconfigurationException("DeepSpeed and the LBFGS optimizer are not compatible.")
        result = closure()
        self._after_closure(model, optimizer)
        if getattr(model, "automatic_optimization", False) and result is None:
            raise MisconfigurationException(
                "Skipping backward by returning `None` from your `training_step` is not supported by `DeepSpeed`"
            )
        return self._engine_strategy().deepspeed_engine.step(**kwargs)

    def clip_gradients(self, optimizer: Optimizer, clip_val: float = 0.0, algorithm: str = "norm") -> None:
        """DeepSpeed clips inside ``engine.step()`` (``gradient_clipping`` in its config)."""


__all__ = ["DeepSpeedPrecision"]
