"""Lightning's ``FSDPPrecision``: the precision plugin of ``strategy="fsdp"`` (which builds one from
``Trainer(precision=...)``, or takes ``plugins=[FSDPPrecision(...)]``).

Lightning's arguments, validation and behaviour: ``"16-mixed"`` keeps a ``ShardedGradScaler``; the "-true"
precisions cast the module and create parameters in their dtype (``convert_module``, ``tensor_init_context``);
``mixed_precision_config`` is the ``torch.distributed.fsdp.MixedPrecision`` Lightning hands FSDP, which this
package's FSDP2 strategy turns into a ``MixedPrecisionPolicy`` (param and reduce dtypes). Two differences:
gradient clipping by norm works (FSDP2 gradients are DTensors, whose norm ``clip_grad_norm_`` computes over all
shards; Lightning's FSDP1 refuses it), and the mixed precisions autocast on the Trainer's device type (Lightning
names ``"cuda"`` always, which is a no-op on CPU).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Dict, Optional

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from trainer.precision import Precision, _default_dtype
from trainer.utilities import apply_to_collection
from trainer.utilities.rank_zero import rank_zero_warn

_PRECISION_INPUT = ("32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed")
_INPUT_DTYPE = {"bf16-mixed": torch.float32, "16-mixed": torch.float32, "bf16-true": torch.bfloat16,
                "16-true": torch.float16, "32-true": torch.float32}
_SHARD_DTYPE = {"16-true": torch.float16, "16-mixed": torch.float16, "bf16-true": torch.bfloat16,
                "bf16-mixed": torch.bfloat16, "32-true": torch.float32}


def _convert_fp_tensor(tensor: Tensor, dtype: torch.dtype) -> Tensor:
    return tensor.to(dtype) if torch.is_floating_point(tensor) else tensor


class FSDPPrecision(Precision):
    """Precision under FSDP: ``precision`` is one of ``"32-true"``, ``"16-true"``, ``"bf16-true"``, ``"16-mixed"``,
    ``"bf16-mixed"``; ``scaler`` an optional ``ShardedGradScaler`` (``"16-mixed"`` only; one is made otherwise)."""

    def __init__(self, precision: str, scaler: Optional[Any] = None) -> None:
        super().__init__()
        if precision not in _PRECISION_INPUT:
            raise ValueError(
                f"`precision={precision!r})` is not supported in FSDP. `precision` must be one of: {_PRECISION_INPUT}."
            )
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        if scaler is not None and precision != "16-mixed":
            raise ValueError(f"`precision={precision!r}` does not use a scaler, found {scaler}.")
        if scaler is None and precision == "16-mixed":
            scaler = ShardedGradScaler()
        self.scaler = scaler
        self.precision = precision
        self._desired_input_dtype = _INPUT_DTYPE[precision]

    # ---------------------------------------------------------------- module and tensors
    def convert_module(self, module: nn.Module) -> nn.Module:
        if "true" in self.precision:
            return module.to(dtype=self._desired_input_dtype)
        return module

    @property
    def mixed_precision_config(self) -> Any:
        """Lightning's FSDP ``MixedPrecision``: parameters, gradient reduction and buffers in the precision's dtype."""
        from torch.distributed.fsdp import MixedPrecision as TorchMixedPrecision

        if self.precision in ("16-true", "bf16-true"):
            rank_zero_warn(
                f"FSDP with `{self.precision}` enables computation in lower precision. "
                "FSDP will always retain a full-precision copy of the model parameters for sharding."
            )
        dtype = _SHARD_DTYPE[self.precision]
        return TorchMixedPrecision(param_dtype=dtype, reduce_dtype=dtype, buffer_dtype=dtype)

    def tensor_init_context(self) -> ContextManager:
        return _default_dtype(self._desired_input_dtype)

    def module_init_context(self) -> ContextManager:
        return _default_dtype(self._desired_input_dtype)

    def forward_context(self) -> ContextManager:
        if "mixed" in self.precision:
            dtype = torch.bfloat16 if self.precision == "bf16-mixed" else torch.float16
            return torch.autocast(self._device_type(), dtype=dtype)
        if self._desired_input_dtype == torch.float32:
            return nullcontext()
        return _default_dtype(self._desired_input_dtype)

    def _device_type(self) -> str:
        trainer = self.trainer
        return trainer.strategy.root_device.type if trainer is not None else "cuda"

    def convert_input(self, data: Any) -> Any:
        dtype = self._desired_input_dtype
        return apply_to_collection(data, Tensor, _convert_fp_tensor, dtype)

    def convert_output(self, data: Any) -> Any:
        return apply_to_collection(data, Tensor, _convert_fp_tensor, torch.get_default_dtype())

    # ---------------------------------------------------------------- backward and step (16-mixed: scaled)
    def pre_backward(self, tensor: Tensor, module: Any) -> Tensor:
        if self.scaler is not None:
            tensor = self.scaler.scale(tensor)
        return super().pre_backward(tensor, module)

    def optimizer_step(self, optimizer: Optimizer, model: Any, closure: Callable[[], Any], **kwargs: Any) -> Any:
        if self.scaler is None:
            return super().optimizer_step(optimizer, model=model, closure=closure, **kwargs)
        return self._scaled_step(optimizer, model, closure, **kwargs)

    def state_dict(self) -> Dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if self.scaler is not None:
            self.scaler.load_state_dict(state_dict)


__all__ = ["FSDPPrecision"]
