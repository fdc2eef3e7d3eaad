"""``Trainer.init_module(empty_init=True)``: parameters are allocated but ``torch.nn.init`` does not fill them
(their values will come from a checkpoint); Lightning's ``_EmptyInit``."""
from __future__ import annotations

from typing import Any, Callable, Optional

from torch.overrides import TorchFunctionMode


class EmptyInit(TorchFunctionMode):
    """While entered (and ``enabled``), every ``torch.nn.init`` function returns its tensor untouched."""

    def __init__(self, enabled: bool = True) -> None:
        super().__init__()
        self.enabled = enabled

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        kwargs = kwargs or {}
        if self.enabled and getattr(func, "__module__", None) == "torch.nn.init":
            return kwargs["tensor"] if "tensor" in kwargs else args[0]
        return func(*args, **kwargs)
